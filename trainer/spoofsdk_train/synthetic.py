"""Tiny synthetic datasets in every supported layout, for tests and smoke runs (no real data needed).

Real images are smooth colour gradients, attacks carry a fine print-like dot pattern, so a
model can learn the difference in a few steps. Images are small (``size`` px) and already
"face crops" (prepare them with ``faces='crop'``).
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

__all__ = ["synthetic_image", "make_synthetic"]

LAYOUTS = ("class_subject", "class_flat", "split_class", "split_class_identity")


def synthetic_image(label: int, rng: np.random.Generator, size: int = 48) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    base = rng.uniform(60, 200, size=3).astype(np.float32)
    img = base[None, None, :] + 40 * (xx[..., None] - 0.5) + 30 * (yy[..., None] - 0.5)
    cv2.circle(img, (size // 2, size // 2), size // 3, tuple(float(v) for v in base * 0.8), -1)
    if label == 0:
        img += 25 * ((np.indices((size, size)).sum(0) % 2)[..., None] - 0.5)
    img += rng.normal(0, 2, size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_synthetic(root: str | Path, layout: str = "class_subject", n_subjects: int = 6, per_subject: int = 3, size: int = 48, seed: int = 0) -> Path:
    """Write a synthetic dataset in ``layout`` under ``root``; returns ``root``."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    names = {"class_subject": ("real", "attack"), "class_flat": ("live", "spoof"), "split_class": ("real", "fake"), "split_class_identity": ("real", "attack")}[layout]
    for s in range(n_subjects):
        for label, cname in ((1, names[0]), (0, names[1])):
            for k in range(per_subject):
                if layout == "class_subject":
                    p = root / cname / f"{s:04d}" / f"{s:04d}_{k}.jpg"
                elif layout == "class_flat":
                    p = root / cname / f"{s:04d}_{k}.jpg"
                elif layout == "split_class":
                    split = ("train", "train", "train", "train", "val", "test")[s % 6]
                    p = root / split / cname / f"{s:04d}_{k}.png"
                else:
                    split = "test" if s % 3 == 2 else "train"
                    p = root / split / cname / f"v{s:03d}{label}" / f"{k}.jpg"
                p.parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(p), synthetic_image(label, rng, size))
    return root
