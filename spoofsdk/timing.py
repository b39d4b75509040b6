"""Timing loops: the one place that times callables (``spoofsdk bench``, the quantizer's report, the benchmarks).

Figures are milliseconds per call. :func:`interleaved` times several callables side by side:
every round calls each once, in a rotated order, so a background load (another process on a
shared board) hits them alike and their ratio stays meaningful when the absolute times do not.
"""
from __future__ import annotations

import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

__all__ = ["call_ms", "timed", "summary", "time_calls", "interleaved", "machine_facts"]


def call_ms(fn: Callable[[], Any], inner: int = 1) -> float:
    """Milliseconds per call of ``fn``, over ``inner`` back-to-back calls."""
    start = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - start) * 1000.0 / inner


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """One call of ``fn``: its result and how long it took in milliseconds (a stage's duration, for reports)."""
    start = time.perf_counter()
    result = fn()
    return result, (time.perf_counter() - start) * 1000.0


def summary(times_ms: Sequence[float]) -> dict[str, float]:
    """Median, 90th percentile and minimum of per-call times, and how many there were."""
    if not len(times_ms):
        return {"median_ms": float("nan"), "p90_ms": float("nan"), "min_ms": float("nan"), "n": 0}
    return {"median_ms": float(statistics.median(times_ms)), "p90_ms": float(np.percentile(times_ms, 90)),
            "min_ms": float(min(times_ms)), "n": len(times_ms)}


def time_calls(fn: Callable[[], Any], runs: int, warmup: int = 3) -> dict[str, float]:
    """:func:`summary` of ``runs`` timed calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    return summary([call_ms(fn) for _ in range(int(runs))])


def interleaved(runners: Mapping[str, Callable[[], Any]], rounds: int = 30, warmup: int = 3, inner: int = 1) -> dict[str, dict[str, float]]:
    """Time several callables side by side (order rotated every round).

    Returns per name the :func:`summary` plus ``ratio_to_<first name>``: the median of the
    per-round ratios of its time to the first runner's.
    """
    names = list(runners)
    for _ in range(warmup):
        for n in names:
            runners[n]()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for n in names[r % len(names):] + names[: r % len(names)]:
            times[n].append(call_ms(runners[n], inner))
    ref = names[0]
    out = {}
    for n in names:
        ratios = [a / b for a, b in zip(times[n], times[ref]) if b > 0]
        out[n] = {**summary(times[n]), f"ratio_to_{ref}": float(statistics.median(ratios)) if ratios else float("nan")}
    return out


def machine_facts() -> dict[str, Any]:
    """What the figures were measured on: CPU model, cores, relevant ISA flags, memory, OS."""
    flags: set[str] = set()
    model = platform.processor() or platform.machine()
    try:
        text = Path("/proc/cpuinfo").read_text()
        for line in text.splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    isa = [f for f in ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8") if f in flags]
    try:
        mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        mem_gb = float("nan")
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "isa": isa,
        "vnni": bool({"avx512_vnni", "avx_vnni"} & flags),
        "memory_gb": round(mem_gb, 1),
        "machine": platform.machine(),
        "os": platform.platform(),
    }
