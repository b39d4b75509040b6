"""Run the benchmark suites and write RESULTS.md and the latency-vs-AUC plot.

    python -m benchmarks.report            # full run (~15 min, niced), writes benchmarks/RESULTS.md + latency_vs_auc.png
    python -m benchmarks.report --quick    # smoke mode (< 2 min): one untrained model, few rounds; writes under .benchmarks/work/
    python -m benchmarks.report --render-only [--results FILE]   # re-render from an existing results file

The suites run in a pytest subprocess (``pytest benchmarks --benchmark-json ...``) at nice 15;
they record their figures in a results JSON that this module renders.
"""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from string import Template

import click

from spoofsdk.clitools import Command, run_main

REPO = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent


def _work() -> Path:
    d = Path(os.environ.get("SPOOFSDK_BENCH_DIR", REPO / ".benchmarks" / "work"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def run_suites(results: Path, bench_json: Path, quick: bool, extra: list[str]) -> int:
    env = dict(os.environ)
    env["SPOOFSDK_BENCH_RESULTS"] = str(results)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    if quick:
        env["SPOOFSDK_BENCH_QUICK"] = "1"
    cmd = [sys.executable, "-m", "pytest", str(HERE), "-p", "no:cacheprovider", "-q", "-rs",
           f"--benchmark-json={bench_json}", "--benchmark-columns=median,iqr,rounds", "--benchmark-sort=name"]
    cmd += (["--quick"] if quick else []) + extra
    print("running:", " ".join(cmd), flush=True)
    return subprocess.call(cmd, cwd=REPO, env=env)


# ------------------------------------------------------------------------------------------
# formatting helpers
# ------------------------------------------------------------------------------------------
def _f(v, digits=2, unit=""):
    if v is None or (isinstance(v, float) and (math.isnan(v) or math.isinf(v))):
        return "–"
    if isinstance(v, (int,)) and not isinstance(v, bool):
        return f"{v:,}{unit}"
    return f"{v:.{digits}f}{unit}"


def _x(v, digits=2):
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}×"


def _table(head: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    return "\n".join(out + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows])


def _lat(res, model, precision, threads, batch):
    return next((r for r in res.get("latency", []) if (r["model"], r["precision"], r["threads"], r["batch"]) == (model, precision, threads, batch)), None)


def _facts(d: dict) -> dict:
    """Size-independent facts (input, params, MACs) of a model: its FP32's, else its first precision's
    (a model shipped quantized only may have no FP32 here)."""
    return next((d[p] for p in ("fp32", "int8", "fp16") if p in d), {})


def _status(ok):
    return "–" if ok is None else ("met" if ok else "**not met**")


def templates(path: Path = HERE / "report_templates.md") -> dict[str, Template]:
    """The report's text: ``<!-- section: name -->`` blocks of ``benchmarks/report_templates.md``."""
    parts = re.split(r"^<!-- section: (\w+) -->\n", path.read_text(encoding="utf-8"), flags=re.M)
    return {name: Template(body.strip() + "\n") for name, body in zip(parts[1::2], parts[2::2])}


def targets(path: Path = HERE / "targets.toml") -> dict[str, dict]:
    with open(path, "rb") as f:
        return tomllib.load(f)


# ------------------------------------------------------------------------------------------
# sections: each returns the template's values, or None when the run has no such figures
# ------------------------------------------------------------------------------------------
def _header(res, **_):
    m = res["machine"]
    return {"quick_flag": " --quick" if res["mode"] == "quick" else "", "mode": res["mode"], "started": res.get("started"),
            "finished": res.get("finished"), "load_start": res.get("load_start"), "load_end": res.get("load_end"),
            "cores": m.get("cores"), "nice": res.get("nice")}


def _machine(res, models, default, **_):
    m, v = res["machine"], res["versions"]
    table = _table(["CPU", "cores", "ISA (relevant)", "RAM", "onnxruntime", "numpy", "torch", "python", "OS"],
                   [[m["cpu"], m["cores"], " ".join(m["isa"]), f"{m['memory_gb']} GiB", v.get("onnxruntime"), v.get("numpy"),
                     v.get("torch") or "not installed", v.get("python"), m["os"]]])
    no_trained = "" if any(d["kind"] in ("trained", "asset") for d in models.values()) else (
        "**No trained model was present for this run**: accuracy rows are absent (untrained weights are not scored), "
        "and the default model is an untrained export (same architecture and compute as the trained one).")
    return {"table": table, "default": default, "default_kind": models.get(default, {}).get("kind", "?"), "no_trained": no_trained,
            "models": "; ".join(f"`{k}` ({d['kind']}{', ' + d['note'] if d.get('note') else ''})" for k, d in models.items())}


def _targets(res, models, default, goals, **_):
    rows = []

    def row(key, measured, ok):
        if key in goals:
            rows.append([goals[key]["text"].format(**goals[key]), measured, ok if isinstance(ok, str) else _status(ok)])

    g = goals
    d_int8, d_fp32 = _lat(res, default, "int8", 2, 1), _lat(res, default, "fp32", 2, 1)
    best = min((r for r in (d_int8, d_fp32) if r), key=lambda r: r["ms_per_face"], default=None)
    if best and "latency" in g:
        row("latency", f"{_f(best['ms_per_face'], 3)} ms ({default} {best['precision']}); FP32 {_f(d_fp32['ms_per_face'] if d_fp32 else None, 3)} ms",
            best["ms_per_face"] <= g["latency"]["max_ms"])
    refs = [r for r in res.get("reference", []) if r["threads"] == 2]
    if refs and "reference" in g:
        bestr = min(refs, key=lambda r: r["ratio_to_reference"])
        row("reference", "; ".join(f"{r['precision']}: {_x(r['ratio_to_reference'], 3)} (pair {_f(r['reference_median_ms'], 2)} ms)" for r in refs),
            bestr["ratio_to_reference"] <= g["reference"]["max_ratio"])
    spd = [(k, t, b, r["speedup_vs_fp32"]) for k in models for t, b in ((2, 1), (1, 8))
           if (r := _lat(res, k, "int8", t, b)) and r.get("speedup_vs_fp32")]
    if spd and "int8_speedup" in g:
        row("int8_speedup", "; ".join(f"{k} b{b}/t{t}: {_x(s)}" for k, t, b, s in spd), all(s >= g["int8_speedup"]["min"] for *_, s in spd))
    f16 = [(k, r["speedup_vs_fp32"]) for k in models if (r := _lat(res, k, "fp16", 2, 1))]
    if f16:
        rows.append(["FP16 reported honestly (speed vs FP32, b1, 2 threads)", "; ".join(f"{k}: {_x(s)}" for k, s in f16), "reported"])
    mm = res.get("matmul", {})
    for key in [k for k, d in models.items() if d.get("fp32", {}).get("macs", 0) > 1e9]:
        parts = []
        for t in (1, 2):
            r, rate = _lat(res, key, "fp32", t, 8), mm.get(str(t), {}).get("macs_per_s")
            if r and rate:
                achieved = models[key]["fp32"]["macs"] * 8 / (r["median_ms"] / 1000.0)
                parts.append(f"t{t}: {achieved / 1e9:.1f} GMAC/s = {achieved / rate:.2f} of matmul ({rate / 1e9:.1f} GMAC/s)")
        if parts:
            rows.append([f"FP32 conv throughput vs matmul rate ({key}, {models[key]['fp32']['macs'] / 1e9:.2f} GMACs, b8)", "; ".join(parts), "reported"])
    te = [r for r in res.get("torch_eager", []) if r.get("eager_over_ort_int8")]
    if te and "eager_speedup" in g:
        sel = [r for r in te if r["batch"] == 1 and r["threads"] == 1] or te  # the 1-thread rows: least disturbed by other load
        row("eager_speedup", "; ".join(f"{r['model']} b{r['batch']}/t{r['threads']}: {_x(r['eager_over_ort_int8'])}" for r in sel),
            all(r["eager_over_ort_int8"] >= g["eager_speedup"]["min"] for r in sel))
    pipe = [r for r in res.get("pipeline", []) if r["detect_every"] == 3]
    if pipe and "pipeline" in g:
        row("pipeline", "; ".join(f"{r['detector']}: {_f(r['fps'], 1)} fps" for r in pipe),
            next((r["fps"] >= g["pipeline"]["min_fps"] for r in pipe if r["detector"] == "haar"), None))
    mem = res.get("memory") or {}
    if mem and "memory" in g:
        growth = mem["growth_mb_per_1000_frames_after_200"]
        row("memory", f"{mem['frames']:,} frames: start {_f(mem['start_mb'], 1)} MB, peak {_f(mem['peak_mb'], 1)} MB, end {_f(mem['end_mb'], 1)} MB; "
            f"growth {_f(growth, 2)} MB/1000 frames after frame 200",
            mem["peak_mb"] <= g["memory"]["max_mb"] and abs(growth) < g["memory"]["max_growth_mb_per_1000"])
    return {"table": _table(["target", "measured (same run)", "status"], rows)}


def _latency(res, models, **_):
    rows = []
    for key in models:
        for p in ("fp32", "fp16", "int8"):
            for t in (1, 2):
                b1, b8 = _lat(res, key, p, t, 1), _lat(res, key, p, t, 8)
                if b1 or b8:
                    rows.append([key, p.upper(), t, _f(b1["ms_per_face"], 3) if b1 else "–", _x(b1.get("speedup_vs_fp32")) if b1 else "–",
                                 _f(b8["ms_per_face"], 3) if b8 else "–", _f(b8["faces_per_s"], 0) if b8 else "–",
                                 _x(b8.get("speedup_vs_fp32")) if b8 else "–", (b1 or b8)["rounds"]])
    head = ["model", "precision", "threads", "b1 ms/face", "b1 speed-up", "b8 ms/face", "b8 faces/s", "b8 speed-up", "rounds"]
    return {"table": _table(head, rows)} if rows else None


def _torch_eager(res, **_):
    te = res.get("torch_eager", [])
    rows = [[r["model"], r["threads"], r["batch"], _f(r["eager_ms_per_face"], 3), _x(r.get("eager_over_ort_fp32")), _x(r.get("eager_over_ort_int8"))] for r in te]
    return {"table": _table(["model", "threads", "batch", "eager ms/face", "ORT FP32 speed-up over eager", "ORT INT8 speed-up over eager"], rows)} if rows else None


def _reference(res, models, **_):
    refs = res.get("reference", [])
    if not refs:
        return None
    note = "; ".join(f"`{k}` ({d['note']})" if d.get("note") else f"`{k}`" for k, d in models.items() if d["kind"] == "reference")
    rows = [[r["model"], r["precision"], r["threads"], _f(r["median_ms"], 3), _f(r["reference_median_ms"], 3), _x(r["ratio_to_reference"], 3)] for r in refs]
    return {"note": note or "none", "table": _table(["default model", "precision", "threads", "ms/face", "pair FP32 ms/face", "ratio (same run)"], rows)}


def _pipeline(res, **_):
    pipe = res.get("pipeline", [])
    if not pipe:
        return None
    stages = list(pipe[0]["stage_share"])
    rows = [[r["detector"], r["detect_every"], f"{r['model']} {r['precision']}", _f(r["fps"], 1), _f(r["mean_ms"], 2), _f(r["p90_ms"], 2),
             _f(r["faces_per_frame"], 2)] + [f"{100 * r['stage_share'][s]:.0f} %" for s in stages] for r in pipe]
    return {"table": _table(["detector", "detect_every", "model", "fps", "mean ms", "p90 ms", "faces/frame"] + stages, rows)}


def _accuracy(res, models, **_):
    acc = res.get("accuracy", [])
    if not acc:
        return None
    notes = []
    if res["mode"] == "quick":
        notes.append("Quick mode scores an untrained model only to exercise the code: the figures mean nothing.")
    cross = [k for k, d in models.items() if d["kind"] == "checkpoint"]
    if cross:
        notes.append("Rows of " + ", ".join(f"`{k}`" for k in cross) + " come from spoofsdk_train checkpoints trained on one data set "
                     "only (exported here for this table; their latency is their architecture's, above): on the other set "
                     "they are the cross-dataset figures. INT8 variants are calibrated on the train split of both sets.\n")
    random = [k for k, d in models.items() if "random" in (d.get("training_data") or "") and any(r["model"] == k for r in acc)]
    if random:
        notes.append("Rows of " + ", ".join(f"`{k}`" for k in random) + " are not held-out figures: it was trained on a *random* "
                     "70/15/15 split of the same crops (its metadata's `training_data`), so part of these test crops, or near-duplicate "
                     "frames of them, were in its training data.\n")
    rows = [[r["model"], r["precision"].upper(), r["dataset"], f"{r['n']} ({r['n_real']}/{r['n_attack']})", _f(r.get("auc"), 4), _f(r.get("eer"), 4),
             _f(r.get("acer"), 4), _f(r.get("bpcer_at_apcer_5"), 4), _f(r.get("max_abs_dscore_vs_fp32"), 4) if r["precision"] != "fp32" else "–"]
            for r in acc]
    srcs = sorted({(r["dataset"], r["source"], json.dumps(r.get("subjects"))) for r in acc})
    sources = "\n".join(f"- {ds}: {src}" + (f"; test subjects {', '.join(json.loads(subj))}" if subj != "null" else "") for ds, src, subj in srcs)
    head = ["model", "precision", "set", "n (real/attack)", "AUC", "EER", "ACER @thr", "BPCER@APCER5%", "max |Δscore| vs FP32"]
    return {"notes": "\n".join(notes), "table": _table(head, rows), "sources": sources}


def _memory(res, **_):
    mem, it = res.get("memory") or {}, res.get("import_time") or {}
    if not mem and not it:
        return None
    stream = ""
    if mem:
        stream = (f"Streaming {mem['frames']:,} frames ({mem['distinct_frames']} distinct NUAA frames cycled, {mem['detector']}, "
                  f"`{mem.get('model')}` {mem.get('precision')}) in a fresh process: RSS before import {_f(mem['rss_mb']['before_import'], 1)} MB, "
                  f"after loading {_f(mem['start_mb'], 1)} MB, end {_f(mem['end_mb'], 1)} MB, peak {_f(mem['peak_mb'], 1)} MB; "
                  f"growth after frame 200: {_f(mem['growth_mb_per_1000_frames_after_200'], 2)} MB per 1,000 frames ({_f(mem['fps'], 1)} fps in that process).")
    table = _table(["import (fresh interpreter)", "median ms", "ratio to deps alone"],
                   [[k, _f(x["median_ms"], 1), _x(x.get("ratio_to_deps"))] for k, x in it.items()]) if it else ""
    return {"stream": stream, "table": table}


def _compute(res, models, **_):
    mm = res.get("matmul", {})
    rates = {t: mm.get(str(t), {}).get("macs_per_s") for t in (1, 2)}
    rows = []
    for key, d in models.items():
        f32 = d.get("fp32", {})
        facts = _facts(d)
        cells = [key, d["kind"], facts.get("input_size"), _f(facts.get("params")), _f((facts.get("macs") or 0) / 1e6, 1)]
        cells += [_f(d[p]["size_bytes"] / 1e6, 2) if p in d else "–" for p in ("fp32", "fp16", "int8")]
        for t in (1, 2):
            r = _lat(res, key, "fp32", t, 8)
            ach = f32["macs"] * 8 / (r["median_ms"] / 1000.0) if r and rates[t] and f32.get("macs") else None
            cells += [_f(ach / 1e9, 1), _f(ach / rates[t], 3)] if ach else ["–", "–"]
        rows.append(cells)
    head = ["model", "kind", "input", "params", "MMACs", "FP32 MB", "FP16 MB", "INT8 MB", "FP32 b8 GMAC/s t1", "of matmul t1", "FP32 b8 GMAC/s t2", "of matmul t2"]
    return {"rates": ", ".join(f"{t} thread{'s' if t > 1 else ''}: {_f(r / 1e9 if r else None, 1)} GMAC/s" for t, r in rates.items()),
            "sizes": ", ".join(str(x["n"]) for x in mm.get("1", {}).get("sizes", [])) or mm.get("1", {}).get("n"),
            "blas": mm.get("1", {}).get("blas"), "table": _table(head, rows)}


def loso_notes(path: Path = HERE / "loso_notes.toml") -> dict[str, str]:
    """Why a shipped model has no leave-one-source-out figure: ``benchmarks/loso_notes.toml``."""
    with open(path, "rb") as f:
        return {k: v["why"] for k, v in tomllib.load(f).items()}


def pair_latency(res: dict, threads: int) -> float | None:
    """The MiniFASNet pair's per-face latency (V2 + V1SE, FP32, batch 1): the median of the pair's times in
    the reference rows (timed with the default model, interleaved), else the sum of its two latency rows."""
    import statistics

    refs = [r["reference_median_ms"] for r in res.get("reference", []) if r["threads"] == threads and r.get("reference_median_ms")]
    if refs:
        return statistics.median(refs)
    rows = [_lat(res, k, "fp32", threads, 1) for k in ("minifasnet-v2", "minifasnet-v1se")]
    return sum(r["ms_per_face"] for r in rows) if all(rows) else None


def loso_points(res: dict) -> list[dict]:
    """One row per shipped model x precision (FP32, INT8) and the MiniFASNet pair: latency, size, compute
    and the LOSO figures (the same model's figures beside both its precisions)."""
    models, out = res.get("models", {}), []
    for key, d in models.items():
        if d["kind"] != "asset":
            continue
        for p in ("fp32", "int8"):
            if p not in d:
                continue
            b1 = {t: _lat(res, key, p, t, 1) for t in (1, 2)}
            out.append({"model": key, "precision": p, "shipped": p in d.get("shipped", []), "default": key == res.get("default_model"),
                        "ms_t1": b1[1]["ms_per_face"] if b1[1] else None, "ms_t2": b1[2]["ms_per_face"] if b1[2] else None,
                        "size_mb": d[p]["size_bytes"] / 1e6, "params": _facts(d).get("params"), "macs": _facts(d).get("macs"),
                        "loso": d.get("loso")})
    ref = res.get("loso_reference")
    pair = [models[k] for k in ("minifasnet-v2", "minifasnet-v1se") if k in models and "fp32" in models[k]]
    if ref:
        out.append({"model": "MiniFASNet pair", "precision": "fp32", "shipped": False, "default": False, "reference": True,
                    "ms_t1": pair_latency(res, 1), "ms_t2": pair_latency(res, 2),
                    "size_mb": sum(d["fp32"]["size_bytes"] for d in pair) / 1e6 if len(pair) == 2 else None,
                    "params": sum(d["fp32"]["params"] for d in pair) if len(pair) == 2 else None,
                    "macs": sum(d["fp32"]["macs"] for d in pair) if len(pair) == 2 else None, "loso": ref})
    return out


def _loso(res, models, **_):
    if "loso_reference" not in res:
        return None  # a run from before the LOSO figures were collected
    points = loso_points(res)
    if not points:
        return None
    why, notes, footnotes = loso_notes(), {}, []
    rows = []
    for pt in points:
        lo = pt["loso"]
        label = f"`{pt['model']}`" + (" (default)" if pt["default"] else "")
        if pt.get("reference"):
            label, shipped = "MiniFASNet pair (V2 + V1SE, published)", "reference: never trained on our domains"
        else:
            shipped = "shipped" if pt["shipped"] else "trainer's export, not shipped"
        if lo:
            seeds = lo.get("seeds", 1)
            figures = [_f(lo["auc_mean"], 3) + (f" ({' / '.join(_f(m, 3) for m in lo['auc_mean_per_seed'])})" if seeds > 1 else ""),
                       _f(lo["auc_worst"], 3), _f(lo.get("bpcer_at_apcer_5_mean"), 3), lo["n_domains"],
                       (f"`{lo['recipe']}` {lo['recipe_hash']}" + (f", {seeds} seeds" if seeds > 1 else "")) if lo.get("recipe") else "every domain unseen"]
        else:
            if pt["model"] not in notes:
                notes[pt["model"]] = len(notes) + 1
                footnotes.append(f"{notes[pt['model']]}. `{pt['model']}`: not measured: {why.get(pt['model'], 'no `loso` in its metadata')}.")
            figures = [f"not measured ({notes[pt['model']]})", "–", "–", "–", "–"]
        rows.append([label, pt["precision"].upper(), shipped, _f(pt["ms_t1"], 3), _f(pt["ms_t2"], 3), _f(pt["size_mb"], 2),
                     _f(pt["params"]), _f((pt["macs"] or 0) / 1e6 if pt["macs"] else None, 1)] + figures)
    head = ["model", "precision", "file", "b1 ms/face, 1 thread", "b1 ms/face, 2 threads", "MB", "params", "MMACs",
            "LOSO mean AUC", "worst AUC", "mean BPCER@APCER5", "domains", "LOSO recipe / hash"]
    los = [pt["loso"] for pt in points if pt["loso"] and not pt.get("reference")]
    domains = list(dict.fromkeys(dom for lo in los for dom, auc in lo["domains"].items() if auc is not None))
    ref = res.get("loso_reference")
    ref_text = ""
    if ref:
        moved = [f"{dom} = its `{v['source']}` ({v['n_real']} / {v['n_attack']} crops)" for dom, v in ref["domains"].items()
                 if v["source"] not in (dom, f"webcam/{dom}")]
        ref_text = (f"The MiniFASNet pair never trained on any of our domains, so every domain is unseen for it: its row is its "
                    f"AUC on each of the same {ref['n_domains']} domains (`{ref['file']}`, made by `python -m spoofsdk_train.minifasnet_reference`), "
                    f"mean and worst over them" + (f"; {', '.join(moved)} (a LOSO fold scores all of a held-out domain's crops)" if moved else "")
                    + (f"; missing from it: {', '.join(ref['missing'])}" if ref.get("missing") else "")
                    + ". Its latency is V2 and V1SE together, FP32, timed interleaved with the default model (reference rows).")
    return {"domains": ", ".join(domains) or "none", "n_domains": len(domains), "reference": ref_text,
            "table": _table(head, rows), "footnotes": "\n".join(footnotes)}


def _plot(res, plot_name, **_):
    return {"plot": plot_name} if plot_name else None


def _notes(res, **_):
    return {"notes": "\n".join(f"- {n}" for n in res["notes"])} if res.get("notes") else None


SECTIONS = {"header": _header, "machine": _machine, "targets": _targets, "loso": _loso, "plot": _plot, "latency": _latency,
            "torch_eager": _torch_eager, "reference": _reference, "pipeline": _pipeline, "accuracy": _accuracy, "memory": _memory,
            "compute": _compute, "notes": _notes, "method": lambda res, **_: {}}


# ------------------------------------------------------------------------------------------
# RESULTS.md
# ------------------------------------------------------------------------------------------
def render(res: dict, plot_name: str | None, goals: dict | None = None) -> str:
    """RESULTS.md for one results JSON: the templates filled with its figures, sections without figures left out."""
    text = templates()
    args = {"models": res.get("models", {}), "default": res.get("default_model"), "plot_name": plot_name,
            "goals": targets() if goals is None else goals}
    parts = [text[name].substitute(values) for name, section in SECTIONS.items() if (values := section(res, **args)) is not None]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(parts))


# ------------------------------------------------------------------------------------------
# the plot
# ------------------------------------------------------------------------------------------
def plot(res: dict, path: Path) -> Path:
    """Top: latency (b1, 1 thread, log) against leave-one-source-out mean AUC, a bar down to the worst
    domain, for every shipped model x precision with a LOSO table and the MiniFASNet pair; numbers on
    the points are the legend's. Below: a strip with every measured model's latency, each on its own
    row, so no two labels overlap."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # 1 thread: the figure least disturbed by other load on the machine.
    lat = {(r["model"], r["precision"]): r["ms_per_face"] for r in res.get("latency", []) if r["threads"] == 1 and r["batch"] == 1}
    pts = [pt for pt in loso_points(res) if pt["loso"] and pt["ms_t1"]] if "loso_reference" in res else []
    from matplotlib.ticker import FuncFormatter

    n_strip, n_legend = max(1, len(lat)), max(1, len(pts))
    fig, (ax, key_ax, strip) = plt.subplots(3, 1, figsize=(9.5, 5.4 + 0.19 * n_legend + 0.17 * n_strip),
                                            gridspec_kw={"height_ratios": [4.6, 0.25 + 0.19 * n_legend, 0.4 + 0.17 * n_strip], "hspace": 0.3})
    markers = {"fp32": "o", "fp16": "s", "int8": "^"}
    colors = {"fp32": "tab:blue", "fp16": "tab:orange", "int8": "tab:green"}
    model_colors: dict[str, str] = {}
    palette = ["tab:purple", "tab:red", "tab:brown", "tab:cyan", "tab:olive", "tab:pink"]  # not the strip's precision colours
    ordered = sorted(pts, key=lambda p: p["ms_t1"])
    for i, pt in enumerate(ordered, 1):
        lo, x = pt["loso"], pt["ms_t1"]
        ref = pt.get("reference", False)
        color = "black" if ref else model_colors.setdefault(pt["model"], palette[len(model_colors) % len(palette)])
        name = "MiniFASNet pair (V2+V1SE)" if ref else f"{pt['model']}{' (default)' if pt['default'] else ''}"
        ax.vlines(x, lo["auc_worst"], lo["auc_mean"], color=color, lw=1.4, alpha=0.6, zorder=2)
        ax.scatter([x], [lo["auc_worst"]], marker="_", color=color, s=120, zorder=3)
        ax.scatter([x], [lo["auc_mean"]], marker="D" if ref else markers.get(pt["precision"], "o"), color=color, s=80, zorder=4,
                   edgecolors="white" if pt["shipped"] else color,
                   label=f"{i}: {name} {pt['precision'].upper()}{'' if ref or pt['shipped'] else ' (not shipped)'}, {x:.2f} ms, "
                         f"mean {lo['auc_mean']:.3f}, worst {lo['auc_worst']:.3f}")
        # the number goes left of its point when the next point is close on the right (2.5 % of a decade or so),
        # and neighbours alternate above and below
        crowded = i < len(ordered) and math.log10(ordered[i]["ms_t1"] / x) < 0.03
        ax.annotate(str(i), (x, lo["auc_mean"]), textcoords="offset points", xytext=(-14 if crowded else 6, 4 if i % 2 else -12),
                    fontsize=8, zorder=5)
    ax.set_xscale("log")

    if pts:
        xs = [pt["ms_t1"] for pt in pts]
        ax.set_xlim(min(xs) / 1.6, max(xs) * 1.6)
        ax.set_ylim(max(0.0, min(pt["loso"]["auc_worst"] for pt in pts) - 0.05), 1.0)
        ax.axhline(0.5, color="grey", lw=0.8, ls=":", zorder=1)
        handles, labels = ax.get_legend_handles_labels()
        key_ax.legend(handles, labels, loc="center", fontsize=7, frameon=False,
                      title="mean AUC (marker), bar down to the worst domain; white edge: the shipped file", title_fontsize=7)
    else:
        ax.text(0.5, 0.5, "no leave-one-source-out figures in this run", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("ms per face, batch 1, 1 thread (log)")
    ax.set_ylabel("leave-one-source-out AUC")
    ax.set_title("latency against leave-one-source-out AUC (mean, bar to the worst held-out domain)", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    key_ax.axis("off")
    for i, ((k, p), v) in enumerate(sorted(lat.items(), key=lambda kv: kv[1])):
        strip.scatter([v], [i], marker=markers.get(p, "o"), color=colors.get(p), s=22)
        strip.annotate(f"{k} {p}", (v, i), fontsize=6, xytext=(5, -2.5), textcoords="offset points")
    strip.set_yticks([])
    strip.set_ylim(n_strip - 0.4, -0.6)
    strip.set_xscale("log")
    if lat:
        strip.set_xlim(min(lat.values()) / 1.3, max(lat.values()) * 4.0)
    strip.set_xlabel("ms per face, batch 1, 1 thread (log)")
    strip.grid(True, which="both", axis="x", alpha=0.3)
    strip.set_title("every model measured, latency only (blue FP32, orange FP16, green INT8)", fontsize=8, loc="left")
    plain = FuncFormatter(lambda v, _: f"{v:g}")  # after set_xscale, which installs its own
    for a in (ax, strip):
        a.xaxis.set_major_formatter(plain)
        a.xaxis.set_minor_formatter(plain)
        a.tick_params(axis="x", which="minor", labelsize=7)
    fig.suptitle(f"{res['machine']['cpu']}, {res['machine']['cores']} cores, onnxruntime {res['versions'].get('onnxruntime')} ({res['mode']} run)", fontsize=9)
    fig.subplots_adjust(left=0.08, right=0.97, top=0.93, bottom=0.06)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def machine_slug(res: dict) -> str:
    m = res["machine"]
    cpu = "".join(c if c.isalnum() else "-" for c in m["cpu"].lower()).strip("-")
    while "--" in cpu:
        cpu = cpu.replace("--", "-")
    return f"{cpu}-{m['cores']}c-{m['machine']}"


def default_weights(res: dict) -> dict:
    """What identifies the default model a run measured: its name, and, where the run recorded them, the
    recipe hash of its leave-one-source-out table and its FP32 file's size and SHA-256 (a new default can
    keep the old one's name: same architecture, new weights)."""
    name = res.get("default_model")
    entry = res.get("models", {}).get(name) or {}
    loso = entry.get("loso") if isinstance(entry.get("loso"), dict) else {}
    fp32 = entry.get("fp32") or {}
    return {"name": name, "recipe_hash": loso.get("recipe_hash"), "fp32_bytes": fp32.get("size_bytes"), "fp32_sha256": fp32.get("sha256")}


def _describe(weights: dict) -> str:
    return f"`{weights['name']}`" + (f" (recipe {weights['recipe_hash']})" if weights.get("recipe_hash") else "")


def superseded_note(res: dict, newest: dict) -> str | None:
    """The warning for a machine whose latest run measured another default model than the newest run
    of all (another name, or the same name with other weights: every identifying field both runs
    recorded is compared): its default-model rows (targets, pipeline, memory) describe a model the SDK
    no longer defaults to, and stay until that machine runs again; None when ``res`` is up to date."""
    if res is newest:
        return None
    mine, theirs = default_weights(res), default_weights(newest)
    if all(mine[k] == theirs[k] for k in mine if mine[k] is not None and theirs[k] is not None):
        return None
    return (f"> **Superseded:** this machine's latest run ({res.get('started', '?')}) measured {_describe(mine)} "
            f"as the default model; the newest run ({newest['machine']['cpu']}, {newest.get('started', '?')}) measures "
            f"{_describe(theirs)}. Its default-model rows (targets, default against the MiniFASNet pair, "
            "pipeline, memory) describe the earlier default; run `python -m benchmarks.report` on this machine to refresh them.")


def render_all(runs: list[tuple[dict, str | None]]) -> str:
    """RESULTS.md for one or more machines: one section per machine, the latest run of each; a machine
    whose run measured another default than the newest run says so under its heading (:func:`superseded_note`)."""
    if len(runs) == 1:
        return render(*runs[0])
    parts = ["# spoofsdk benchmarks: results", "",
             "One section per machine (its latest full run); every ratio is same-run within its section.", ""]
    newest = max((res for res, _ in runs), key=lambda r: r.get("started", ""))  # "YYYY-MM-DD HH:MM:SS UTC" sorts by time
    for res, plot_name in runs:
        body = render(res, plot_name).split("\n", 1)[1]  # drop the title
        m = res["machine"]
        parts.append(f"## {m['cpu']}, {m['cores']} cores, {m['machine']}, onnxruntime {res['versions'].get('onnxruntime')}")
        if note := superseded_note(res, newest):
            parts += ["", note]
        parts.append(body.replace("\n## ", "\n### "))
    return "\n".join(parts)


@click.command(cls=Command, help=__doc__.split("\n\n")[0], context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--quick", is_flag=True, help="Smoke mode (also $SPOOFSDK_BENCH_QUICK=1).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="RESULTS.md path (default: benchmarks/RESULTS.md; quick: .benchmarks/work/RESULTS-quick.md).")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path), help="PNG path (default: beside --out, latency_vs_auc.png).")
@click.option("--results", type=click.Path(dir_okay=False, path_type=Path), help="Results JSON (default: .benchmarks/work/results[-quick].json).")
@click.option("--render-only", is_flag=True, help="Do not run the suites; render the results JSON.")
@click.option("--nice", type=int, default=15, show_default=True, help="Niceness for the run.")
@click.argument("pytest_args", nargs=-1)
def cli(quick, out, plot_path, results, render_only, nice, pytest_args) -> int:
    """Extra pytest arguments go after --, e.g. -- -k latency."""
    quick = quick or os.environ.get("SPOOFSDK_BENCH_QUICK", "").lower() in ("1", "true", "yes")
    work = _work()
    results = results or work / ("results-quick.json" if quick else "results.json")
    default_out = out is None
    out = out or (work / "RESULTS-quick.md" if quick else HERE / "RESULTS.md")
    plot_path = plot_path or out.with_name("latency_vs_auc.png")
    code = 0
    if not render_only:
        if nice:
            try:
                os.nice(max(0, nice - os.nice(0)))
            except OSError:
                pass
        t0 = time.time()
        code = run_suites(results, work / ("bench-quick.json" if quick else "bench.json"), quick, list(pytest_args))
        print(f"suites finished in {time.time() - t0:.0f} s (exit {code})")
    if not results.exists():
        raise click.ClickException(f"no results at {results}")
    res = json.loads(results.read_text())
    plot(res, plot_path)
    try:
        rel = os.path.relpath(plot_path, out.parent)
    except ValueError:
        rel = str(plot_path)
    runs = [(res, rel)]
    if res["mode"] == "full" and default_out:
        # Keep the latest full run of every machine beside RESULTS.md and render them all.
        store = HERE / "results"
        store.mkdir(exist_ok=True)
        slug = machine_slug(res)
        (store / f"{slug}.json").write_text(json.dumps(dict(res, plot=rel), indent=1) + "\n")
        for other in sorted(store.glob("*.json")):
            o = json.loads(other.read_text())
            if other.stem != slug and "machine" in o:  # other files there (live_view.json) are not suite results
                # its plot file was overwritten by this run's when they share a name: no picture rather than the wrong one
                runs.append((o, o.get("plot") if o.get("plot") != rel else None))
    out.write_text(render_all(runs))
    print(f"wrote {out} and {plot_path}")
    return code


def main(argv=None) -> int:
    return run_main(cli, argv, prog_name="python -m benchmarks.report")


if __name__ == "__main__":
    sys.exit(main())
