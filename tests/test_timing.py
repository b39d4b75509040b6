"""spoofsdk.timing: the shared timing loops, on a fake clock (no wall-clock assertions)."""
from __future__ import annotations

import pytest

from spoofsdk import timing


@pytest.fixture
def clock(monkeypatch):
    """A clock that advances only when the timed functions say so (1 unit = 1 ms)."""
    now = {"t": 0.0}
    monkeypatch.setattr(timing.time, "perf_counter", lambda: now["t"])

    def costs(ms):
        def fn():
            now["t"] += ms / 1000.0
        return fn

    return costs


def test_time_calls_skips_warmup_and_summarises(clock):
    calls = []
    durations = iter([100, 100, 1, 2, 3, 4, 10])

    def fn():
        calls.append(1)
        clock(next(durations))()

    s = timing.time_calls(fn, runs=5, warmup=2)
    assert len(calls) == 7 and s["n"] == 5
    assert s["median_ms"] == pytest.approx(3) and s["min_ms"] == pytest.approx(1) and s["p90_ms"] == pytest.approx(7.6)


def test_interleaved_ratio_and_rotation(clock):
    order = []

    def runner(name, ms):
        step = clock(ms)
        return lambda: (order.append(name), step())

    out = timing.interleaved({"fp32": runner("a", 4), "int8": runner("b", 1)}, rounds=4, warmup=1)
    assert out["int8"]["ratio_to_fp32"] == pytest.approx(0.25) and out["fp32"]["ratio_to_fp32"] == pytest.approx(1)
    assert out["fp32"]["median_ms"] == pytest.approx(4) and out["int8"]["n"] == 4
    assert order[2:] == ["a", "b", "b", "a", "a", "b", "b", "a"]  # each round starts with another runner


def test_call_ms_averages_inner_calls(clock):
    assert timing.call_ms(clock(6), inner=3) == pytest.approx(6)


def test_machine_facts_name_the_machine():
    facts = timing.machine_facts()
    assert facts["cores"] >= 1 and facts["cpu"] and facts["machine"] and isinstance(facts["isa"], list)
