"""Side by side: leave-one-source-out runs of several recipes, each over one or more seeds.

Every recipe choice is made on the leave-one-source-out table, and per held-out domain two seeds
of the same recipe differ by up to 0.19 AUC on our data: one run's table cannot choose between
recipes whose means differ by a few hundredths. ``compare`` reads the runs of each variant
(finished ones from ``crossval.json``, interrupted ones from their scored folds), averages a
domain's figures over the variant's seeds, and summarises over the domains EVERY run has scored,
so a partial run is compared on the same folds as the others, never on a flattering subset.

A spoofsdk model file stands for the runs whose table it carries (``metrics['loso']``, the first seed,
and ``['replicates']``, the others): a candidate is compared with the embedded default on a machine
where the default's own runs were never made.

    spoofsdk-train compare distilled=runs/loso_d+runs/loso_d_s7 alpha075=runs/loso_a075+runs/loso_a075_s7
    spoofsdk-train compare default=spoofsdk/assets/hybrid_mnv2-fp32.onnx candidate=runs/loso_c+runs/loso_c_s7
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from spoofsdk.errors import SpoofSDKError
from spoofsdk.model import LOSO_FIGURES as FIGURES, loso_tables, read_metadata_props

from .crossval import read_scored_fold

__all__ = ["CompareError", "read_run", "read_model_runs", "read_runs", "compare", "render_compare", "parse_variants"]


class CompareError(SpoofSDKError, ValueError):
    """A run folder that holds no scored fold, or a variant given in a form we cannot read."""


def read_run(path: str | Path) -> dict:
    """``{"path", "complete", "test_only", "domains": {name: row}}`` of one crossval run folder.

    A finished run is read from its ``crossval.json``; an interrupted one from every fold that was
    scored (``folds/<domain>/fold.json`` + ``held_out_scores.npz``: figures recomputed at that fold's
    frozen threshold, as crossval does). Test-only domains of a partial run are the held-out ones
    no scored fold trained on.
    """
    path = Path(path)
    table = path if path.is_file() else path / "crossval.json"  # a kept table (docs/loso/*.json) or a run folder
    if table.is_file():
        try:
            data = json.loads(table.read_text())
            domains = {r["domain"]: {k: r.get(k) for k in FIGURES} for r in data["domains"]}
        except (ValueError, KeyError, TypeError) as e:
            raise CompareError(f"{table}: not a crossval table ({type(e).__name__}: {e})") from e
        return {"path": str(path), "complete": True, "test_only": list(data.get("test_only", [])), "domains": domains}
    rows, trained_on = {}, set()
    for fold_dir in sorted(p.parent for p in (path / "folds").glob("*/fold.json")):
        try:
            fold = read_scored_fold(fold_dir)  # the row crossval itself would have tabulated
        except (ValueError, KeyError, TypeError, zipfile.BadZipFile) as e:
            raise CompareError(f"{fold_dir}: unreadable fold ({type(e).__name__}: {e})") from e
        if fold is None:  # fold.json without its scores: not scored
            continue
        info, row = fold
        rows[row["domain"]] = {k: row[k] for k in FIGURES}
        trained_on.update(info["train_domains"])
    if not rows:
        raise CompareError(f"{path}: no crossval.json and no scored fold under folds/ (is it a crossval run folder?)")
    # With one scored fold there is nothing to tell a never-trained domain from the others by.
    test_only = sorted(d for d in rows if d not in trained_on) if len(rows) > 1 else []
    return {"path": str(path), "complete": False, "test_only": test_only, "domains": rows}


def read_model_runs(path: str | Path) -> list[dict]:
    """The runs whose leave-one-source-out table a spoofsdk ONNX file carries: its table (one seed) and each
    replicate (the other seeds). A replicate embedded before session 10 holds per-domain AUC only: its
    other figures are missing (None) and the per-domain means of those figures come from the seeds that
    hold them."""
    path = Path(path)
    try:
        metrics = json.loads(read_metadata_props(path.read_bytes()).get("metrics", "{}"))
        loso = metrics.get("loso")
    except (OSError, ValueError, AttributeError, SpoofSDKError) as e:
        raise CompareError(f"{path}: not a readable spoofsdk model ({type(e).__name__}: {e})") from e
    tables = loso_tables(metrics)
    if not tables or not tables[0]:
        raise CompareError(f"{path}: the model carries no leave-one-source-out table (metrics['loso'])")
    test_only = list(loso.get("test_only", []))
    labels = [f"{loso.get('recipe', '?')} {loso.get('recipe_hash', '')}".strip()] + [f"replicate {i}" for i in range(1, len(tables))]
    return [{"path": f"{path} ({label})", "complete": True, "test_only": test_only, "domains": rows}
            for label, rows in zip(labels, tables)]


def read_runs(path: str | Path) -> list[dict]:
    """A crossval run folder or table (``.json``): one run; a spoofsdk model file: the runs of its embedded table."""
    path = Path(path)
    return read_model_runs(path) if path.is_file() and path.suffix.lower() != ".json" else [read_run(path)]


def parse_variants(specs: Sequence[str]) -> dict[str, list[str]]:
    """``["name=run1+run2", "run3"]`` -> ``{"name": [run1, run2], "run3": [run3]}``."""
    variants: dict[str, list[str]] = {}
    for spec in specs:
        name, _, runs = spec.partition("=") if "=" in spec else (Path(spec).resolve().name, "", spec)
        paths = [r for r in runs.split("+") if r]
        if not name or not paths:
            raise CompareError(f"cannot read variant {spec!r}: write NAME=RUN[+RUN...] or a run folder")
        if name in variants:
            raise CompareError(f"variant {name!r} given twice")
        # One run counted twice in a variant would pass for two seeds that agree (across variants it may
        # appear again: one seed of a recipe beside its two-seed mean).
        if len({Path(p).resolve() for p in paths}) < len(paths):
            raise CompareError(f"variant {name!r}: a run given twice ({'+'.join(paths)})")
        variants[name] = paths
    return variants


def _defined(values) -> list[float]:
    return [v for v in values if v is not None and not np.isnan(v)]


def _mean(values) -> float | None:
    vals = _defined(values)
    return float(np.mean(vals)) if vals else None


def _worst(aucs) -> float | None:
    vals = _defined(aucs)
    return float(min(vals)) if vals else None


def compare(variants: Mapping[str, Sequence[str | Path]]) -> dict:
    """Per variant: each domain's figures averaged over its runs (seeds), and the summary over the
    domains that every run of every variant has scored (``common``)."""
    if not variants:
        raise CompareError("nothing to compare: give at least one run")
    runs = {name: [run for p in paths for run in read_runs(p)] for name, paths in variants.items()}
    every = [run for rs in runs.values() for run in rs]
    common = sorted(set.intersection(*(set(r["domains"]) for r in every)))
    if not common:
        raise CompareError("the runs have no held-out domain in common")
    test_only = sorted(set().union(*(r["test_only"] for r in every)))
    all_domains = sorted(set().union(*(r["domains"] for r in every)), key=lambda d: (d in test_only, d.lower()))
    out: dict = {"common": common, "test_only": test_only, "domains": all_domains, "variants": {}}
    for name, rs in runs.items():
        per_domain = {}
        for d in all_domains:
            seen = [r["domains"][d] for r in rs if d in r["domains"]]
            if not seen:
                continue
            per_domain[d] = {**{k: _mean(s[k] for s in seen) for k in FIGURES}, "auc_runs": [s["auc"] for s in seen]}
        trained = [d for d in common if d not in test_only]
        auc = {d: per_domain[d]["auc"] for d in common}
        out["variants"][name] = {
            "runs": [r["path"] for r in rs],
            "runs_complete": [r["complete"] for r in rs],
            "per_domain": per_domain,
            "summary": {
                "auc_mean": _mean(auc.values()), "auc_worst": _worst(auc.values()),
                "auc_mean_trained_domains": _mean(auc[d] for d in trained),
                "auc_worst_trained_domains": _worst(auc[d] for d in trained),
                "bpcer_at_apcer_5_mean": _mean(per_domain[d]["bpcer_at_apcer_5"] for d in common),
                "auc_mean_per_run": [_mean(r["domains"][d]["auc"] for d in common) for r in rs],
            },
        }
    return out


def _f(v) -> str:
    return "–" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.3f}"


def render_compare(result: dict) -> str:
    names = list(result["variants"])
    v = result["variants"]
    n_common, n_all = len(result["common"]), len(result["domains"])
    test_only = result["test_only"]
    lines = ["# Leave-one-source-out, side by side", "",
             "Each cell: the held-out domain's AUC, averaged over the variant's runs (seeds; each run's in brackets). "
             f"Summaries over the {n_common} domain(s) every run has scored"
             + (f" (of {n_all}; rows outside them are marked *)" if n_common < n_all else "")
             + (f"; never trained on: {', '.join(test_only)}" if test_only else "") + ".", "",
             "| held-out domain | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for d in result["domains"]:
        cells = []
        for n in names:
            row = v[n]["per_domain"].get(d)
            if row is None:
                cells.append("–")
                continue
            runs = row["auc_runs"]
            cells.append(_f(row["auc"]) + (f" ({' / '.join(_f(a) for a in runs)})" if len(runs) > 1 else ""))
        mark = "" if d in result["common"] else " *"
        lines.append(f"| {d}{mark} | " + " | ".join(cells) + " |")
    rows = [("**mean**", "auc_mean"), ("**worst**", "auc_worst")]
    if set(test_only) & set(result["common"]):
        rows += [("mean without never-trained domains", "auc_mean_trained_domains"),
                 ("worst without never-trained domains", "auc_worst_trained_domains")]
    rows += [("mean BPCER@APCER5 (lower is better)", "bpcer_at_apcer_5_mean")]
    for label, key in rows:
        lines.append(f"| {label} | " + " | ".join(_f(v[n]["summary"][key]) for n in names) + " |")
    lines.append("| mean of each run | " + " | ".join(" / ".join(_f(m) for m in v[n]["summary"]["auc_mean_per_run"])
                                                    for n in names) + " |")
    lines += ["", "Runs, in the order of the brackets:"]
    for n in names:
        lines.append(f"- {n}: " + ", ".join(f"`{r}`" + ("" if done else " (interrupted: read from its scored folds)")
                                             for r, done in zip(v[n]["runs"], v[n]["runs_complete"])))
    return "\n".join(lines) + "\n"
