"""pytest configuration of the benchmark suites (not part of the default test run: testpaths = tests).

Run through ``python -m benchmarks.report`` (see benchmarks/README.md), or directly::

    nice -n 15 python -m pytest benchmarks --benchmark-json .benchmarks/work/bench.json [--quick]

Each suite records its figures in one results file (``$SPOOFSDK_BENCH_RESULTS``, default
``.benchmarks/work/results.json``) that ``benchmarks/report.py`` turns into RESULTS.md.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.common import Bench, quick_mode  # noqa: E402

_BENCH: Bench | None = None


def pytest_addoption(parser):
    parser.addoption("--quick", action="store_true", default=False,
                     help="smoke mode: one untrained model, few rounds, small data (also $SPOOFSDK_BENCH_QUICK=1)")


def _bench(config) -> Bench:
    global _BENCH
    if _BENCH is None:
        _BENCH = Bench(quick_mode(config))
    return _BENCH


def pytest_configure(config):
    if quick_mode(config):
        os.environ["SPOOFSDK_BENCH_QUICK"] = "1"


def pytest_generate_tests(metafunc):
    b = _bench(metafunc.config)
    names = metafunc.fixturenames
    if "model_key" in names:
        keys = list(b.entries)
        if metafunc.function.__name__ in ("test_latency", "test_torch_eager"):
            keys = [k for k in keys if b.entries[k].timed]
        if "torch_arch" in names:  # eager baseline: models whose architecture spoofsdk_train.models can build
            keys = [k for k in keys if b.entries[k].kind in ("untrained", "trained", "asset")]
        metafunc.parametrize("model_key", keys)
    if "precision" in names:
        metafunc.parametrize("precision", ["fp32", "fp16", "int8"])
    if "threads" in names:
        metafunc.parametrize("threads", [1] if b.quick else [1, 2])
    if "batch" in names:
        metafunc.parametrize("batch", [1, 8])


@pytest.fixture(scope="session")
def bench(request) -> Bench:
    return _bench(request.config)


@pytest.fixture
def torch_arch():
    """Marker fixture: the test needs torch (skipped without it)."""
    pytest.importorskip("torch")
    return True


def pytest_sessionfinish(session, exitstatus):
    if _BENCH is not None:
        path = _BENCH.save()
        print(f"\nbenchmark results: {path}")
