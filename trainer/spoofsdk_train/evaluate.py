"""Evaluation: threshold on the validation split, figures on the test split(s), JSON report and plots.

The threshold is chosen on the validation split only ('eer': the equal-error point, or
'apcer:0.05': the lowest threshold whose APCER is at most 5 %) and then frozen; the test
splits are read once, for the final report. All figures come from :mod:`spoofsdk.metrics`
(accuracy, per-class precision/recall/F1, confusion matrix, ROC-AUC, APCER/BPCER/ACER at
the threshold, EER, BPCER@APCER 5 % and 1 %).

Plots (matplotlib, Agg): training curves from the checkpoint's history, ROC and DET per
test set, confusion matrix per test set.
"""
from __future__ import annotations

import json
import logging
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np

from spoofsdk import metrics

log = logging.getLogger("spoofsdk_train.evaluate")

__all__ = ["choose_threshold", "score_report", "evaluate", "plot_curves", "plot_roc_det", "plot_confusion"]

LICENCES = {
    "nuaa": "NUAA: academic research",
    "gc535": "gc535: no licence — research/evaluation use only",
}


def choose_threshold(labels, scores, rule: str | float) -> tuple[float, str]:
    """The decision threshold on P(real) by ``rule`` ('eer', 'apcer:<rate>' or a number), kept inside (0, 1)."""
    if isinstance(rule, (int, float)) or (isinstance(rule, str) and rule.replace(".", "", 1).isdigit()):
        thr, how = float(rule), f"fixed {float(rule)}"
    elif rule == "eer":
        rate, thr = metrics.eer(labels, scores)
        how = f"EER on validation (EER {rate:.4f})"
    elif isinstance(rule, str) and rule.startswith("apcer:"):
        target = float(rule.split(":", 1)[1])
        thr = metrics.threshold_at_apcer(labels, scores, target)
        how = f"lowest threshold with APCER <= {target:g} on validation"
    else:
        raise ValueError(f"threshold rule must be 'eer', 'apcer:<rate>' or a number, got {rule!r}")
    thr = float(np.clip(thr, 1e-6, 1.0 - 1e-6))
    return thr, how


def score_report(labels, scores, threshold: float) -> dict:
    """Every figure for one set at ``threshold`` (spoofsdk.metrics.summary)."""
    return metrics.summary(np.asarray(labels), np.asarray(scores), threshold)


# --- plots ---------------------------------------------------------------------------
def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(history: list[dict], path: Path, best_epoch: int | None = None) -> Path | None:
    if not history:
        return None
    plt = _plt()
    ep = [h["epoch"] for h in history]
    fig, ax = plt.subplots(1, 3, figsize=(14, 4))
    ax[0].plot(ep, [h["train_loss"] for h in history], "o-", label="train")
    ax[0].plot(ep, [h["val_loss"] for h in history], "o-", label="val (mean over sets)")
    for name in sorted(history[-1].get("val_sets", {})):
        ax[0].plot(ep, [h["val_sets"].get(name, {}).get("loss", np.nan) for h in history], "--", label=f"val {name}")
    ax[0].set_title("loss")
    ax[0].set_xlabel("epoch")
    ax[0].legend()
    for name in sorted(history[-1].get("val_sets", {})):
        ax[1].plot(ep, [h["val_sets"].get(name, {}).get("auc", np.nan) for h in history], "o-", label=f"AUC {name}")
        ax[1].plot(ep, [h["val_sets"].get(name, {}).get("eer", np.nan) for h in history], "x--", label=f"EER {name}")
    ax[1].plot(ep, [h["train_acc"] for h in history], ":", label="train acc")
    ax[1].set_title("validation AUC / EER, train accuracy")
    ax[1].set_xlabel("epoch")
    ax[1].set_ylim(-0.02, 1.02)
    ax[1].legend(fontsize=8)
    ax[2].plot(ep, [h["lr"] for h in history], "o-")
    ax[2].set_yscale("log")
    ax[2].set_title("learning rate")
    ax[2].set_xlabel("epoch")
    if best_epoch:
        for a in ax:
            a.axvline(best_epoch, color="grey", ls=":", lw=1)
        ax[0].set_title(f"loss (dotted: best epoch {best_epoch})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_roc_det(curves: dict[str, tuple[np.ndarray, np.ndarray]], threshold_points: dict[str, tuple[float, float]], path: Path) -> Path:
    """ROC (APCER vs 1-BPCER) and DET (APCER vs BPCER, normal-deviate axes) for each set."""
    from statistics import NormalDist

    plt = _plt()
    nd = NormalDist()

    def probit(v):
        return np.array([nd.inv_cdf(float(np.clip(x, 1e-4, 1 - 1e-4))) for x in np.atleast_1d(v)])

    fig, ax = plt.subplots(1, 2, figsize=(11, 5))
    for name, (labels, scores) in curves.items():
        fpr, tpr, _ = metrics.roc_curve(labels, scores)
        auc = metrics.roc_auc(labels, scores)
        ax[0].plot(fpr, tpr, label=f"{name} (AUC {auc:.4f})")
        ax[1].plot(probit(fpr), probit(1 - tpr), label=name)
        if name in threshold_points:
            a, b = threshold_points[name]
            ax[0].plot([a], [1 - b], "o", color=ax[0].lines[-1].get_color())
            ax[1].plot(probit(a), probit(b), "o", color=ax[1].lines[-1].get_color())
    ax[0].plot([0, 1], [0, 1], ":", color="grey")
    ax[0].set_xlabel("APCER (attacks accepted)")
    ax[0].set_ylabel("1 - BPCER (real accepted)")
    ax[0].set_title("ROC (dot: operating threshold)")
    ax[0].legend()
    ticks = [0.001, 0.01, 0.05, 0.2, 0.5]
    for setter in (ax[1].set_xticks, ax[1].set_yticks):
        setter(probit(ticks))
    ax[1].set_xticklabels([f"{t:g}" for t in ticks])
    ax[1].set_yticklabels([f"{t:g}" for t in ticks])
    ax[1].set_xlim(probit(0.0005)[0], probit(0.6)[0])
    ax[1].set_ylim(probit(0.0005)[0], probit(0.6)[0])
    ax[1].set_xlabel("APCER")
    ax[1].set_ylabel("BPCER")
    ax[1].set_title("DET")
    ax[1].grid(True, alpha=0.3)
    ax[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_confusion(matrices: dict[str, list[list[int]]], path: Path, threshold: float) -> Path:
    plt = _plt()
    n = len(matrices)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 4), squeeze=False)
    for ax, (name, m) in zip(axes[0], matrices.items()):
        m = np.asarray(m)
        ax.imshow(m, cmap="Blues")
        for i in range(2):
            for j in range(2):
                ax.text(j, i, str(m[i, j]), ha="center", va="center", color="white" if m[i, j] > m.max() / 2 else "black", fontsize=14)
        ax.set_xticks([0, 1], ["spoof", "real"])
        ax.set_yticks([0, 1], ["spoof", "real"])
        ax.set_xlabel("decision")
        ax.set_ylabel("truth")
        ax.set_title(f"{name} @ {threshold:.4f}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --- evaluation ----------------------------------------------------------------------
def evaluate(
    checkpoint: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    test: Sequence[str] | None = None,
    val: Sequence[str] | None = None,
    threshold: str | float | None = None,
    plots: bool = True,
) -> dict:
    """Score val and test crops with a checkpoint, choose the threshold on val, write report.json + plots."""
    import torch

    from .data import load_crops, read_manifest
    from .train import model_from_checkpoint, predict_scores

    torch.set_num_threads(max(1, int(os.environ.get("SPOOFSDK_THREADS", "2"))))
    checkpoint = Path(checkpoint)
    out = Path(out_dir) if out_dir else checkpoint.parent
    out.mkdir(parents=True, exist_ok=True)
    model, recipe, ck = model_from_checkpoint(checkpoint)
    val_m = [read_manifest(p) for p in (val or recipe.data.manifests)]
    test_m = [read_manifest(p) for p in (test or recipe.data.manifests)]
    rule = threshold if threshold is not None else recipe.eval.threshold

    val_crops = load_crops(val_m, "val")
    val_scores = predict_scores(model, val_crops, recipe)
    thr, how = choose_threshold(val_crops.labels, val_scores, rule)
    log.info("threshold %.6f (%s; %d val crops from %s)", thr, how, len(val_crops), ", ".join(m["dataset"] for m in val_m))
    report: dict = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "checkpoint": str(checkpoint),
        "model": {
            "architecture": recipe.model.architecture,
            "input_size": recipe.model.input_size,
            "crop_scale": recipe.model.crop_scale,
            "params": ck.get("params"),
            "macs": ck.get("macs"),
            "recipe": recipe.name,
        },
        "training": {"best_epoch": int(ck.get("epoch", -1)) + 1, "epochs_run": len(ck.get("history", [])),
                     "train_sets": [m["dataset"] for m in (read_manifest(p) for p in recipe.data.manifests)]},
        "threshold": {"value": thr, "rule": str(rule), "how": how, "val_sets": [m["dataset"] for m in val_m]},
        "val": {"all": score_report(val_crops.labels, val_scores, thr)},
        "test": {},
        "splits": {},
    }
    for name, part in val_crops.by_set().items():
        idx = [i for i, s in enumerate(val_crops.sets) if s == name]
        report["val"][name] = score_report(part.labels, val_scores[idx], thr)
    curves, points, matrices = {}, {}, {}
    for man in test_m:
        crops = load_crops([man], "test")
        if len(crops) == 0:
            continue
        scores = predict_scores(model, crops, recipe)
        s = score_report(crops.labels, scores, thr)
        report["test"][man["dataset"]] = s
        report["splits"][man["dataset"]] = {"method": man["split"].get("method"), "subjects": man["split"].get("subjects"), "counts": man["counts"]}
        curves[man["dataset"]] = (crops.labels, scores)
        points[man["dataset"]] = (s["apcer"], s["bpcer"])
        matrices[man["dataset"]] = s["confusion_matrix"]
        np.savez_compressed(out / f"scores_{man['dataset']}_test.npz", labels=crops.labels, scores=scores)
        log.info("test %-8s n %4d  AUC %.4f  EER %.4f  APCER %.4f  BPCER %.4f  ACER %.4f  BPCER@APCER5 %.4f  acc %.4f",
                 man["dataset"], s["n"], s.get("auc", float("nan")), s.get("eer", float("nan")), s["apcer"], s["bpcer"], s["acer"],
                 s.get("bpcer_at_apcer_5", float("nan")), s["accuracy"])
    if len(curves) > 1:
        # Every test set pooled: the figure a single random split of everything reports (the seed's 99.94 %).
        labels = np.concatenate([c[0] for c in curves.values()])
        scores = np.concatenate([c[1] for c in curves.values()])
        s = report["test_all"] = score_report(labels, scores, thr)
        log.info("test %-8s n %4d  AUC %.4f  EER %.4f  APCER %.4f  BPCER %.4f  ACER %.4f  BPCER@APCER5 %.4f  acc %.4f",
                 "pooled", s["n"], s.get("auc", float("nan")), s.get("eer", float("nan")), s["apcer"], s["bpcer"], s["acer"],
                 s.get("bpcer_at_apcer_5", float("nan")), s["accuracy"])
    if plots:
        files = {}
        history = ck.get("history", [])
        full = checkpoint.parent / "history.json"  # the whole run (best.pt holds the history up to its epoch)
        if full.exists():
            history = json.loads(full.read_text())
        if plot_curves(history, out / "curves.png", best_epoch=int(ck.get("epoch", -1)) + 1):
            files["curves"] = "curves.png"
        valid_curves = {k: v for k, v in curves.items() if 0 < v[0].sum() < len(v[0])}
        if valid_curves:
            files["roc_det"] = plot_roc_det(valid_curves, points, out / "roc_det.png").name
        if matrices:
            files["confusion"] = plot_confusion(matrices, out / "confusion.png", thr).name
        report["plots"] = files
    (out / "report.json").write_text(json.dumps(report, indent=1, default=float))
    log.info("report -> %s", out / "report.json")
    return report
