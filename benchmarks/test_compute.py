"""Model sizes, parameters, MACs, and this machine's float32 matmul rate (numpy) to compare conv throughput with.

The matmul rate is measured in a subprocess per thread count (BLAS reads its thread count at
start-up): the best of several square float32 products (n = 1024 and 2048), in multiply-accumulates
per second. numpy's wheels carry OpenBLAS; the "fraction of matmul" columns compare a model's
achieved MAC rate with it, so a value above 1 means onnxruntime's convolutions run faster than
this BLAS's matmul on the same core(s).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

from benchmarks.models import REPO

MATMUL = """
import json, numpy as np
from spoofsdk.timing import time_calls
out = []
for n in {sizes}:
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
    best = time_calls(lambda: a @ b, runs={reps}, warmup=1)["min_ms"] / 1000.0
    out.append({{"n": n, "best_s": best, "macs_per_s": n ** 3 / best}})
top = max(out, key=lambda r: r["macs_per_s"])
print(json.dumps(dict(top, sizes=out)))
"""


def test_matmul_rate(bench, threads):
    sizes, reps = ((512,), 5) if bench.quick else ((1024, 2048), 8)
    env = dict(os.environ)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    r = subprocess.run([sys.executable, "-c", MATMUL.format(sizes=sizes, reps=reps)], env=env, capture_output=True, text=True, check=True, timeout=300)
    res = json.loads(r.stdout.strip().splitlines()[-1])
    try:
        import numpy as np

        cfg = np.show_config(mode="dicts")
        res["blas"] = cfg.get("Build Dependencies", {}).get("blas", {}).get("name")
    except Exception:
        res["blas"] = None
    bench.results["matmul"][str(threads)] = res


def test_model_facts(bench, model_key):
    """Building the variants records their sizes, params and MACs (see Bench.variants)."""
    bench.variants(model_key)
    assert model_key in bench.results["models"]
