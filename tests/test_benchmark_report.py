"""benchmarks/report.py renders RESULTS.md from results data, templates and the targets file (no suites run)."""
from __future__ import annotations

import json

import pytest

from conftest import REPO

report = pytest.importorskip("benchmarks.report", reason="benchmarks need the repository checkout")

RESULTS = REPO / "benchmarks" / "results"


def _stored():
    files = [p for p in sorted(RESULTS.glob("*.json")) if "machine" in json.loads(p.read_text())]
    if not files:
        pytest.skip("no stored benchmark results in benchmarks/results/")
    return json.loads(files[0].read_text())


def test_every_template_is_used_and_filled():
    res = _stored()
    text = report.render(res, "plot.png")
    assert set(report.templates()) == set(report.SECTIONS)
    assert "$" not in text.replace("$\\", "")  # no unfilled placeholder
    for heading in ("## Machine", "## Targets", "## Model latency", "## Model size", "## How it was measured"):
        assert heading in text


def test_no_machine_specific_prose():
    res = dict(_stored(), load_start=[0.1, 0.1, 0.1], load_end=[0.2, 0.1, 0.1])
    text = report.render(res, None)
    assert "training job" not in text and "2-core" not in text
    assert "[0.1, 0.1, 0.1]" in text and "## Latency against accuracy" not in text  # no plot, no plot section


def test_targets_come_from_the_config():
    res = _stored()
    goals = report.targets()
    assert goals["latency"]["max_ms"] > 0
    strict = {**goals, "latency": {**goals["latency"], "max_ms": 1e-6}}
    loose = {**goals, "latency": {**goals["latency"], "max_ms": 1e6}}
    row = lambda text: next(line for line in text.splitlines() if line.startswith("| default model per-face latency"))  # noqa: E731
    assert "1e-06 ms" in row(report.render(res, None, strict)) and row(report.render(res, None, strict)).endswith("**not met** |")
    assert row(report.render(res, None, loose)).endswith("| met |")
    without = {k: v for k, v in goals.items() if k != "latency"}
    assert "per-face latency, b1" not in report.render(res, None, without)


def test_plot_is_written(tmp_path):
    pytest.importorskip("matplotlib")
    path = report.plot(_stored(), tmp_path / "p.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
