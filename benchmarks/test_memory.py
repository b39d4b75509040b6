"""Resident memory over a 2,000-frame stream, and `import spoofsdk` time against its dependencies alone.

Both run in fresh subprocesses (the pytest process has every model loaded), with the same
nice level as the suite.
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

import pytest

from benchmarks.models import REPO, data_root, default_entry

IMPORTS = {
    "deps (numpy, cv2, onnxruntime)": "import numpy, cv2, onnxruntime",
    "import spoofsdk": "import spoofsdk",
    "from spoofsdk import LivenessChecker": "from spoofsdk import LivenessChecker; import spoofsdk.checker",
    "deps + checker + model load": None,  # filled with the default model below
}


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_stream_memory(bench, tmp_path):
    nuaa = data_root() / "nuaa"
    if not nuaa.is_dir():
        pytest.skip(f"NUAA frames not found at {nuaa}")
    entry = default_entry(list(bench.entries.values()))
    paths = bench.variants(entry.key)
    precision = "int8" if "int8" in paths else "fp32"
    frames = 200 if bench.quick else 2000
    out = tmp_path / "mem.json"
    cmd = [sys.executable, "-m", "benchmarks.stream_memory", str(paths[precision]), "--frames", str(frames),
           "--data", str(nuaa), "--json", str(out)]
    subprocess.run(cmd, cwd=REPO, env=_env(), check=True, capture_output=True, timeout=900)
    res = json.loads(out.read_text())
    res.update(model=entry.key, precision=precision)
    bench.results["memory"] = res


def test_import_time(bench):
    """Median wall time of the import statement inside fresh interpreters, variants interleaved."""
    entry = default_entry(list(bench.entries.values()))
    paths = bench.variants(entry.key)
    path = paths.get("fp32") or paths["int8"]  # a default shipped quantized only may have no FP32 here
    stmts = dict(IMPORTS)
    stmts["deps + checker + model load"] = f"from spoofsdk import LivenessChecker; LivenessChecker({str(path)!r})"
    reps = 2 if bench.quick else 7
    times: dict[str, list[float]] = {k: [] for k in stmts}
    for _ in range(reps):
        for name, stmt in stmts.items():
            code = f"import time; t=time.perf_counter(); {stmt}; print((time.perf_counter()-t)*1000)"
            r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=_env(), capture_output=True, text=True, check=True, timeout=120)
            times[name].append(float(r.stdout.strip().splitlines()[-1]))
    bench.results["import_time"] = {name: {"median_ms": statistics.median(v), "min_ms": min(v), "runs": len(v)} for name, v in times.items()}
    base = bench.results["import_time"]["deps (numpy, cv2, onnxruntime)"]["median_ms"]
    for name, v in bench.results["import_time"].items():
        v["ratio_to_deps"] = v["median_ms"] / base if base else None
