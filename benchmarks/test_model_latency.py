"""Model latency: per-face latency at batch 1 and throughput at batch 8, every model x precision x threads.

Ratios are same-run: in every timed round of a non-FP32 variant, the same model's FP32 is run
(and timed) just before it, in pytest-benchmark's untimed ``setup`` hook, so both see the same
background load (this machine shares its two cores with a training job). Nothing is asserted.
"""
from __future__ import annotations

import pytest

from benchmarks.common import PairedTimer, estimate_call_ms, plan_rounds, round_times_ms

WARMUP = 2


def _record(bench, kind: str, row: dict) -> None:
    bench.results[kind].append(row)


def test_latency(bench, benchmark, model_key, precision, threads, batch):
    model = bench.session(model_key, precision, threads)
    if model is None:
        pytest.skip(f"{model_key}: no {precision} variant")
    x = bench.input_batch(model, batch)
    target = lambda: model.predict(x)  # noqa: E731
    refs = {}
    ref = bench.session(model_key, "fp32", threads) if precision != "fp32" else None
    if ref is not None:  # a model shipped quantized only may have no FP32 here: no speed-up then
        refs["fp32"] = lambda: ref.predict(x)
    timer = PairedTimer(refs)
    call_ms = estimate_call_ms(target)
    rounds = plan_rounds(call_ms, bench.quick, calls_per_round=1 + len(refs))
    benchmark.group = f"latency b{batch} t{threads}"
    benchmark.extra_info.update(model=model_key, precision=precision, threads=threads, batch=batch)
    benchmark.pedantic(target, setup=timer.setup if refs else None, rounds=rounds, warmup_rounds=WARMUP, iterations=1)
    times = round_times_ms(benchmark) or [call_ms]
    import statistics

    med = statistics.median(times)
    row = {
        "model": model_key, "precision": precision, "threads": threads, "batch": batch, "rounds": len(times),
        "median_ms": med, "ms_per_face": med / batch, "faces_per_s": 1000.0 * batch / med,
        "p90_ms": sorted(times)[int(0.9 * (len(times) - 1))], "min_ms": min(times),
    }
    if refs:
        r = timer.ratios(times, WARMUP)["fp32"]
        row.update(fp32_median_ms=r["median_ms"], ratio_to_fp32=r["ratio"], speedup_vs_fp32=1.0 / r["ratio"] if r["ratio"] else None)
    elif precision == "fp32":
        row.update(fp32_median_ms=med, ratio_to_fp32=1.0, speedup_vs_fp32=1.0)
    else:
        row.update(fp32_median_ms=None, ratio_to_fp32=None, speedup_vs_fp32=None)
    benchmark.extra_info.update({k: v for k, v in row.items() if k.endswith(("fp32", "ms_per_face"))})
    _record(bench, "latency", row)


def test_default_vs_reference(bench, benchmark, precision, threads):
    """The default model against the real MiniFASNet pair (V2 + V1SE, FP32: what a face costs with
    the published models), batch 1, interleaved round by round."""
    from benchmarks.models import MINIFASNET_PAIR, default_entry, minifasnet_unavailable

    ref_keys = list(MINIFASNET_PAIR)
    if not all(k in bench.entries for k in ref_keys):
        pytest.skip(f"MiniFASNet reference pair not in this run: {minifasnet_unavailable() or 'quick mode'}")
    default = default_entry(list(bench.entries.values()))
    model = bench.session(default.key, precision, threads)
    if model is None:
        pytest.skip(f"{default.key}: no {precision} variant")
    refs = [bench.session(k, "fp32", threads) for k in ref_keys]
    x, xr = bench.input_batch(model, 1), [bench.input_batch(r, 1) for r in refs]
    target = lambda: model.predict(x)  # noqa: E731

    def pair():  # one face costs both models (each on its own crop; the crops are the same size)
        for r, xi in zip(refs, xr):
            r.predict(xi)

    timer = PairedTimer({"reference": pair})
    rounds = plan_rounds(estimate_call_ms(target), bench.quick, calls_per_round=4)
    benchmark.group = f"default vs reference t{threads}"
    benchmark.pedantic(target, setup=timer.setup, rounds=rounds, warmup_rounds=WARMUP, iterations=1)
    times = round_times_ms(benchmark)
    import statistics

    r = timer.ratios(times, WARMUP)["reference"]
    bench.results["reference"].append({
        "model": default.key, "kind": default.kind, "precision": precision, "threads": threads, "batch": 1,
        "rounds": len(times), "median_ms": statistics.median(times), "reference": "+".join(ref_keys),
        "reference_precision": "fp32", "reference_median_ms": r["median_ms"], "ratio_to_reference": r["ratio"],
    })


def test_torch_eager(bench, benchmark, torch_arch, model_key, threads, batch):
    """The same architecture in PyTorch eager FP32 (random weights: latency only), against ORT FP32 and INT8."""
    import torch

    entry = bench.entries[model_key]
    try:
        from spoofsdk_train.models import build_model, get_spec

        spec = get_spec(entry.architecture)
    except (KeyError, ImportError) as e:
        pytest.skip(f"{model_key}: architecture {entry.architecture!r} not buildable in torch ({e})")
    ort32 = bench.session(model_key, "fp32", threads)
    ort8 = bench.session(model_key, "int8", threads)
    ort = ort32 or ort8  # a model shipped quantized only may have no FP32 here
    if ort is None:
        pytest.skip(f"{model_key}: no FP32 or INT8 file to compare with")
    size = ort.info.input_size
    torch.manual_seed(0)
    net = build_model(entry.architecture).eval()
    x = bench.input_batch(ort, batch)
    xt = torch.from_numpy(x.copy())
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        def target():
            with torch.inference_mode():
                return net(xt)

        refs = {}
        if ort32 is not None:
            refs["ort_fp32"] = lambda: ort32.predict(x)
        if ort8 is not None:
            refs["ort_int8"] = lambda: ort8.predict(x)
        timer = PairedTimer(refs)
        rounds = plan_rounds(estimate_call_ms(target), bench.quick, calls_per_round=1 + len(refs))
        benchmark.group = f"torch eager b{batch} t{threads}"
        benchmark.extra_info.update(model=model_key, framework="torch-eager", threads=threads, batch=batch, input_size=size)
        benchmark.pedantic(target, setup=timer.setup, rounds=rounds, warmup_rounds=WARMUP, iterations=1)
        times = round_times_ms(benchmark)
    finally:
        torch.set_num_threads(previous)
    import statistics

    rat = timer.ratios(times, WARMUP)
    row = {"model": model_key, "architecture": entry.architecture, "threads": threads, "batch": batch, "rounds": len(times),
           "eager_median_ms": statistics.median(times), "eager_ms_per_face": statistics.median(times) / batch,
           "torch": torch.__version__}
    for name, r in rat.items():
        row[f"{name}_median_ms"] = r["median_ms"]
        row[f"eager_over_{name}"] = r["ratio"]  # > 1: eager is slower by this factor
    bench.results["torch_eager"].append(row)
