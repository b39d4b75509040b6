"""Training a frozen-trunk model's head on cached trunk statistics (``[train] mode = "probe"``).

A model whose trunk never changes (:class:`~spoofsdk_train.models.mnv2probe.MobileNetV2Probe`)
gives the same trunk output for the same image in every epoch and every leave-one-source-out
fold. So each training crop is turned into ``probe_views`` images once — view 0 is the crop
itself, view k > 0 is the crop after attack synthesis (:mod:`spoofsdk_train.synth`, which may
relabel a live crop as an attack) and the recipe's augmentations, drawn from a generator seeded
by (seed, k, crop file) — their trunk statistics are computed once and cached on disk, and the
head is fitted on the cache. On two CPU cores this turns hours of trunk passes per fold into
seconds.

The cache key is the crop's file and content size, the view, the trunk's configuration and the
parts of the recipe that shape the view images; a fold that shares crops with another reads
them back instead of recomputing. A style-mixed view (``synth.p_style_mix`` > 0, views > 0)
borrows the look of another training crop, so its key also holds the training domains it was
computed among: no fold reads a view styled after a domain it holds out.

The head is fitted with AdamW and a one-cycle schedule, every (domain, class) group weighing
the same (``data.sampling = "balanced"``), on binary cross-entropy against the label, mixed
with the teacher's P(live) where ``train.distill_alpha`` > 0 (a synthesized attack's target is
0, never the live crop's teacher score).
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from spoofsdk.crop import resize_square, to_tensor

from .augment import Augmenter
from .data import CropSet
from .recipe import Recipe
from .synth import AttackSynthesizer, maybe_synthesize, pick_reference
from .teachers import get_teacher, heard_teacher

log = logging.getLogger("spoofsdk_train.probe")

__all__ = ["view_images", "ProbeCache", "group_weights", "fit_head", "probe_scores"]


def _crop_seed(file: str) -> int:
    return int.from_bytes(hashlib.sha256(Path(file).name.encode() + str(Path(file).parent.name).encode()).digest()[:4], "little")


def view_images(crops: CropSet, view: int, recipe: Recipe) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images, labels, synthesized) of one view of ``crops``; view 0 is the crops as they are.

    Each crop's draws depend only on (seed, view, its file name), never on which other crops are in
    the set, so every fold sees the same view of a crop. Style mixing (``synth.p_style_mix``) is the
    exception: its reference is a crop of another domain among those computed together, which is
    why :class:`ProbeCache` keeps such views apart per set of domains.
    """
    m = recipe.model
    if view == 0:
        imgs = np.stack([resize_square(im, m.input_size) for im in crops.images]) if len(crops) else crops.images
        return imgs, crops.labels.copy(), np.zeros(len(crops), bool)
    augment = Augmenter(recipe.augment)
    synth = AttackSynthesizer(recipe.synth)
    out, labels, synthesized = [], [], []
    for i, (img, label, file) in enumerate(zip(crops.images, crops.labels.tolist(), crops.files)):
        rng = np.random.default_rng([recipe.train.seed, view, _crop_seed(file)])
        j = pick_reference(crops.sets, i, rng) if synth.cfg.p_style_mix > 0 else None
        new, new_label = maybe_synthesize(img, int(label), rng, synth, ref=None if j is None else crops.images[j])
        out.append(resize_square(augment(new, rng), m.input_size))
        labels.append(new_label)
        synthesized.append(new_label != label)
    return np.stack(out), np.asarray(labels, np.int64), np.asarray(synthesized, bool)


class ProbeCache:
    """Trunk statistics (and teacher scores) of crop views, computed once and kept under ``root``."""

    def __init__(self, root: str | Path, model: nn.Module, recipe: Recipe, teacher: Callable[[np.ndarray], np.ndarray] | None = None,
                 batch_size: int = 64):
        self.root = Path(root)
        self.model, self.recipe, self.teacher, self.batch_size = model, recipe, teacher, batch_size
        m = recipe.model
        shaping = {"model": {"architecture": m.architecture, "input_size": m.input_size, "color_order": m.color_order,
                             "mean": m.mean, "std": m.std, "kwargs": {k: v for k, v in m.kwargs.items() if k in ("split", "depth", "std_high", "pretrained", "input_norm")}},
                   "augment": recipe.augment, "synth": recipe.synth, "seed": recipe.train.seed, "teacher": teacher is not None}
        self.key = hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:12]

    def _view_dir(self, crops: CropSet, view: int) -> str:
        """``v<view>``; for a style-mixed view also the domains of ``crops``, among which its references are
        drawn. Without them a fold would read views computed for another fold, styled after the domain it
        holds out. Unmixed views (and every view of recipes without style mixing) keep the plain name."""
        if view > 0 and AttackSynthesizer(self.recipe.synth).cfg.p_style_mix > 0:
            domains = hashlib.sha256(json.dumps(sorted(set(crops.sets))).encode()).hexdigest()[:12]
            return f"v{view}-styled-among-{domains}"
        return f"v{view}"

    def _path(self, file: str, view_dir: str) -> Path:
        p = Path(file)
        tag = hashlib.sha256(f"{p.resolve()}:{p.stat().st_size if p.exists() else 0}".encode()).hexdigest()[:16]
        return self.root / self.key / view_dir / tag[:2] / f"{tag}.npz"

    @torch.no_grad()
    def _statistics(self, images: np.ndarray) -> np.ndarray:
        m = self.recipe.model
        self.model.eval()
        out = []
        for s in range(0, len(images), self.batch_size):
            x = torch.from_numpy(to_tensor(images[s : s + self.batch_size], m.color_order, m.mean, m.std))
            out.append(self.model.statistics(x.contiguous(memory_format=torch.channels_last)).float().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.model.feature_dim), np.float32)

    def view(self, crops: CropSet, view: int) -> dict[str, np.ndarray]:
        """``stats`` (N x D float32), ``labels``, ``synthesized``, ``teacher`` (NaN where no teacher) of one view."""
        view_dir = self._view_dir(crops, view)
        paths = [self._path(f, view_dir) for f in crops.files]
        missing = [i for i, p in enumerate(paths) if not p.exists()]
        if missing:
            t0 = time.time()
            part = crops.subset(missing)
            imgs, labels, synth = view_images(part, view, self.recipe)
            stats = self._statistics(imgs)
            teach = self.teacher(imgs) if self.teacher is not None else np.full(len(part), np.nan)
            for j, i in enumerate(missing):
                paths[i].parent.mkdir(parents=True, exist_ok=True)
                # written whole then renamed: folds running in parallel processes may read it meanwhile
                tmp = paths[i].with_name(f"{paths[i].stem}.{os.getpid()}.tmp")
                with open(tmp, "wb") as fh:
                    np.savez(fh, stats=stats[j], label=labels[j], synthesized=synth[j], teacher=teach[j])
                os.replace(tmp, paths[i])
            log.info("view %d: trunk statistics of %d crops in %.0f s (cached under %s)", view, len(missing), time.time() - t0, self.root / self.key)
        rows = [np.load(p) for p in paths]
        return {
            "stats": np.stack([r["stats"] for r in rows]).astype(np.float32) if rows else np.zeros((0, self.model.feature_dim), np.float32),
            "labels": np.asarray([int(r["label"]) for r in rows], np.int64),
            "synthesized": np.asarray([bool(r["synthesized"]) for r in rows], bool),
            "teacher": np.asarray([float(r["teacher"]) for r in rows], np.float64),
        }


def group_weights(sets: list[str], labels: np.ndarray, sampling: str) -> np.ndarray:
    """Per-sample weights: 'balanced' = every (domain, class) group the same total, 'class' = every class, 'uniform' = 1."""
    if sampling == "uniform":
        return np.ones(len(labels))
    keys = [f"{s}/{l}" if sampling == "balanced" else str(l) for s, l in zip(sets, labels.tolist())]
    if sampling not in ("balanced", "class"):
        raise ValueError(f"sampling must be balanced, class or uniform, got {sampling!r}")
    counts: dict[str, int] = {}
    for k in keys:
        counts[k] = counts.get(k, 0) + 1
    w = np.asarray([1.0 / counts[k] for k in keys])
    return w * (len(w) / w.sum())


def fit_head(model: nn.Module, stats: np.ndarray, labels: np.ndarray, weights: np.ndarray, teacher: np.ndarray, recipe: Recipe) -> list[dict]:
    """Fit ``model``'s standardisation and head on trunk statistics; returns the loss per epoch."""
    t = recipe.train
    torch.manual_seed(t.seed)
    x = torch.from_numpy(stats.astype(np.float32))
    model.set_standardisation(x.mean(0), x.std(0))
    y = torch.from_numpy(labels.astype(np.float32))
    w = torch.from_numpy(weights.astype(np.float32))
    # A view without a teacher score (NaN) keeps its label, as one the gate does not let the teacher speak for.
    target = heard_teacher(y, torch.from_numpy(teacher.astype(np.float32)), torch.from_numpy(np.isnan(teacher)), t.distill_gate)
    alpha = float(t.distill_alpha)
    params = [p for p in model.head.parameters()]
    opt = torch.optim.AdamW(params, lr=float(t.lr), weight_decay=float(t.weight_decay))
    n, bs = len(x), int(t.batch_size)
    steps = max(1, t.epochs * math.ceil(n / bs))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=float(t.lr), total_steps=steps)
    gen = torch.Generator().manual_seed(t.seed)
    history = []
    model.train()
    for epoch in range(t.epochs):
        order = torch.randperm(n, generator=gen)
        total, correct = 0.0, 0
        for s in range(0, n, bs):
            b = order[s : s + bs]
            z = model.head_logit(x[b])[:, 0]
            loss = nn.functional.binary_cross_entropy_with_logits(z, y[b], reduction="none")
            if alpha > 0:
                loss = (1 - alpha) * loss + alpha * nn.functional.binary_cross_entropy_with_logits(z, target[b], reduction="none")
            loss = (loss * w[b]).sum() / w[b].sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if t.clip_grad > 0:
                nn.utils.clip_grad_norm_(params, t.clip_grad)
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(b)
            correct += int(((z.detach() >= 0) == (y[b] >= 0.5)).sum())
        history.append({"epoch": epoch + 1, "train_loss": total / n, "train_acc": correct / n, "lr": opt.param_groups[0]["lr"]})
    model.eval()
    return history


@torch.no_grad()
def probe_scores(model: nn.Module, stats: np.ndarray) -> np.ndarray:
    """P(real) from cached trunk statistics (the same numbers the full forward pass gives)."""
    model.eval()
    return torch.sigmoid(model.head_logit(torch.from_numpy(stats.astype(np.float32)))[:, 0]).double().numpy()


def make_cache(model: nn.Module, recipe: Recipe) -> ProbeCache:
    teacher = get_teacher(recipe.train.teacher).crop_scorer() if recipe.train.distill_alpha > 0 else None
    return ProbeCache(recipe.train.probe_cache, model, recipe, teacher)


def train_probe(recipe: Recipe, out: Path, train_crops: CropSet, val_crops: CropSet, model: nn.Module) -> tuple[dict, dict]:
    """Fit ``model``'s head on cached views of ``train_crops``; returns (validation figures, history row)."""
    from .train import set_figures

    t0 = time.time()
    cache = make_cache(model, recipe)
    stats, labels, sets, teacher, n_synth = [], [], [], [], 0
    for view in range(max(1, recipe.train.probe_views)):
        v = cache.view(train_crops, view)
        stats.append(v["stats"])
        labels.append(v["labels"])
        sets += train_crops.sets
        # A synthesized attack's teacher target is "attack", whatever the teacher said of its live source.
        teacher.append(np.where(v["synthesized"], 0.0, v["teacher"]))
        n_synth += int(v["synthesized"].sum())
    stats_all, labels_all, teacher_all = np.concatenate(stats), np.concatenate(labels), np.concatenate(teacher)
    weights = group_weights(sets, labels_all, recipe.data.sampling)
    log.info("probe: %d samples (%d views x %d crops; %d synthesized attacks), %d features", len(labels_all), len(stats),
             len(train_crops), n_synth, stats_all.shape[1])
    history = fit_head(model, stats_all, labels_all, weights, teacher_all, recipe)
    val_view = cache.view(val_crops, 0)
    scores = probe_scores(model, val_view["stats"])
    val = set_figures(val_crops, scores)
    last = history[-1] if history else {"lr": 0.0, "train_loss": float("nan"), "train_acc": float("nan")}
    row = {"epoch": recipe.train.epochs, "lr": last["lr"], "train_loss": last["train_loss"], "train_acc": last["train_acc"],
           "epoch_time_s": time.time() - t0}
    return val, row
