"""CI coverage of the benchmark suites: their quick mode runs end to end and writes a report.

The suites live in benchmarks/ (outside the default testpaths); this runs them as a user would,
``python -m benchmarks.report --quick``, in a subprocess with a private work folder. No timing
is asserted: only that every suite ran and the report and plot were written.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO, data_root


@pytest.mark.slow
def test_benchmarks_quick_mode(tmp_path):
    if not (data_root() / "nuaa").is_dir() and os.environ.get("CI", "").lower() != "true":
        pytest.skip(f"benchmark data not found at {data_root()}")
    env = dict(os.environ)
    env.update(SPOOFSDK_BENCH_DIR=str(tmp_path / "work"), SPOOFSDK_DATA=str(data_root()), PYTHONPATH=str(REPO))
    out, png, results = tmp_path / "RESULTS.md", tmp_path / "plot.png", tmp_path / "results.json"
    cmd = [sys.executable, "-m", "benchmarks.report", "--quick", "--out", str(out), "--plot", str(png), "--results", str(results)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    res = json.loads(results.read_text())
    assert res["mode"] == "quick"
    for section in ("latency", "pipeline", "accuracy"):
        assert res[section], f"no {section} results"
    assert {r["precision"] for r in res["latency"]} == {"fp32", "fp16", "int8"}
    assert all(r["ratio_to_fp32"] > 0 for r in res["latency"])
    assert res["memory"]["frames"] == 200 and res["import_time"] and res["matmul"]
    text = out.read_text()
    for heading in ("## Machine", "## Targets", "## Model latency", "## Whole pipeline", "## Accuracy", "## Memory", "## Model size"):
        assert heading in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The committed RESULTS.md is never touched by the smoke mode.
    assert not (tmp_path / "work" / "RESULTS.md").exists()
