"""Shortcut check: per domain, how well one plain image statistic alone tells live from attack.

A statistic that separates a domain's classes (AUC far from 0.5) is a cue a model can learn
there instead of the attack itself. When its direction flips between domains (live faces brighter
than the replays on one camera, darker on another), a model that learned it ranks the other
domain backwards: gc535 against the webcam sources is the case in point (docs/TRAINING.md).

AUC here is :func:`spoofsdk.metrics.roc_auc` with the statistic as the score: the probability that
a live crop's value exceeds an attack's. Crops are read from prepared data (``manifest.json``)
and resized to the model's input size first, as training sees them. numpy/OpenCV only.

    spoofsdk-train cues cache/s1.0_128/*
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from spoofsdk.folders import SPLITS
from spoofsdk.metrics import roc_auc

from .data import load_crops, read_manifest

__all__ = ["STATISTICS", "crop_sharpness", "crop_statistics", "cue_table", "format_cues"]

# name -> what it measures; the order of crop_statistics' output
STATISTICS = {
    "brightness": "mean grey level",
    "contrast": "standard deviation of the grey levels",
    "saturation": "mean HSV saturation",
    "sharpness": "log(1 + variance of the Laplacian): edges, focus, grain",
}
# |AUC - 0.5| at or above this is called a cue; a statistic that is a cue in both directions flips.
CUE_MARGIN = 0.25


def crop_sharpness(crop: np.ndarray) -> float:
    """The "sharpness" statistic of one BGR uint8 crop (also what cue-matching augmentation sets)."""
    return float(np.log1p(cv2.Laplacian(cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY), cv2.CV_32F).var()))


def crop_statistics(crop: np.ndarray) -> np.ndarray:
    """The STATISTICS of one BGR uint8 crop, in their order."""
    if crop.ndim != 3 or crop.shape[2] != 3 or crop.dtype != np.uint8:
        raise ValueError(f"expected a BGR uint8 crop (H, W, 3), got {crop.dtype} {crop.shape}")
    grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
    saturation = cv2.cvtColor(crop, cv2.COLOR_BGR2HSV)[..., 1]
    return np.array([grey.mean(), grey.std(), saturation.mean(), crop_sharpness(crop)], dtype=np.float64)


def cue_table(manifests: Sequence[str | os.PathLike], size: int = 128, splits: Sequence[str] | None = None) -> list[dict]:
    """One row per prepared domain: its counts and the AUC of each statistic (None without both classes)."""
    rows = []
    for m in manifests:
        man = read_manifest(m)
        parts = [load_crops([man], split, size) for split in (splits or SPLITS)]  # the trainer's own crop loader
        y = np.concatenate([part.labels for part in parts])
        values = np.array([crop_statistics(img) for part in parts for img in part.images]).reshape(len(y), len(STATISTICS))
        both = len(set(y.tolist())) == 2
        row = {"domain": man.get("dataset", Path(man["_dir"]).name), "real": int((y == 1).sum()), "attack": int((y == 0).sum())}
        row.update({name: roc_auc(y, values[:, k]) if both else None for k, name in enumerate(STATISTICS)})
        rows.append(row)
    return rows


def flips(rows: list[dict]) -> list[str]:
    """Statistics that are a cue in opposite directions on different domains."""
    out = []
    for name in STATISTICS:
        aucs = [r[name] for r in rows if r[name] is not None]
        if any(a >= 0.5 + CUE_MARGIN for a in aucs) and any(a <= 0.5 - CUE_MARGIN for a in aucs):
            out.append(name)
    return out


def format_cues(rows: list[dict]) -> str:
    """A markdown table (cues in bold) and the statistics whose direction flips between domains."""
    head = "| domain | real / attack | " + " | ".join(STATISTICS) + " |"
    lines = [head, "|---|---|" + "---|" * len(STATISTICS)]
    for r in rows:
        cells = []
        for name in STATISTICS:
            a = r[name]
            cells.append("–" if a is None else f"**{a:.2f}**" if abs(a - 0.5) >= CUE_MARGIN else f"{a:.2f}")
        lines.append(f"| {r['domain']} | {r['real']} / {r['attack']} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("AUC = P(a live crop's value > an attack's); bold: |AUC - 0.5| >= %.2f." % CUE_MARGIN)
    flipped = flips(rows)
    if flipped:
        lines.append("Direction flips between domains (a model that learns it ranks some domain backwards): " + ", ".join(flipped) + ".")
    else:
        lines.append("No statistic flips direction between these domains.")
    return "\n".join(lines)
