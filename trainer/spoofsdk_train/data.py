"""Datasets: layouts, face-crop preparation, subject-disjoint splits and the manifest.

``prepare`` reads a dataset folder in one of the supported layouts, turns every image into
a face crop with the runtime's own detector and :func:`spoofsdk.crop.crop_face` (or, for
sets that are already tight face crops, a centre square + :func:`spoofsdk.crop.resize_square`),
splits it into train/val/test and writes a JSON manifest that training and evaluation read
back. Labels follow :mod:`spoofsdk.metrics`: 1 = real (bona fide), 0 = attack.

Layouts and class-folder names are those of :mod:`spoofsdk.folders` (``scan``), shared with
the runtime's calibration and the quantizer.

Split policy: existing train/test folders are kept (test stays test). Where identities are
known, every split is identity-disjoint (a subject's frames never straddle two splits); a
missing val split is carved from train by identity, or, where identities are unknown, at
random (stratified by class) with a fixed seed.
"""
from __future__ import annotations

import json
import logging
import os
import random
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np

from spoofsdk.crop import crop_face, fit_face_crop, resize_square
from spoofsdk.errors import ImageError, SpoofSDKError
from spoofsdk.folders import SPLITS, is_face_crop, read_image, scan
from spoofsdk.folders import LabelledImage as Sample

log = logging.getLogger("spoofsdk_train.data")

MANIFEST_VERSION = 1

DATA_ENV = "SPOOFSDK_DATA"


def data_root() -> Path:
    """Where the shared data lives: $SPOOFSDK_DATA, else ``../shared/data`` beside the repository."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "shared" / "data"


def _largest_remainder(n: int, fractions: Sequence[float]) -> list[int]:
    """Split ``n`` items into integer counts proportional to ``fractions`` (ties favour later entries: test over val over train)."""
    total = float(sum(fractions))
    raw = [n * f / total for f in fractions]
    counts = [int(np.floor(r)) for r in raw]
    order = sorted(range(len(raw)), key=lambda i: (raw[i] - counts[i], i), reverse=True)
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    return counts


def split_subjects(subject_labels: dict[str, set[int]], fractions: Sequence[float], seed: int) -> dict[str, list[str]]:
    """Assign subjects to train/val/test, identity-disjoint.

    Subjects that have both classes are preferred for val and test (so each held-out split
    can measure both error rates); subjects with one class go to train first.
    """
    subjects = sorted(subject_labels)
    rng = random.Random(seed)
    both = [s for s in subjects if len(subject_labels[s]) == 2]
    one = [s for s in subjects if len(subject_labels[s]) < 2]
    rng.shuffle(both)
    rng.shuffle(one)
    n_train, n_val, n_test = _largest_remainder(len(subjects), fractions)
    if len(both) >= n_val + n_test:
        ordered = both + one  # val/test come from the front (both classes), train takes the rest
        test = ordered[:n_test]
        val = ordered[n_test : n_test + n_val]
        train = ordered[n_test + n_val :]
        return {"train": sorted(train), "val": sorted(val), "test": sorted(test)}
    # Identities with one class each (e.g. one video per identity): split each class's identities
    # separately, so that every held-out split with a non-zero share gets both classes.
    out: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for key in ("both", 1, 0):
        group = both if key == "both" else [s for s in one if subject_labels[s] == {key}]
        counts = _largest_remainder(len(group), fractions)
        for i, name in ((1, "val"), (2, "test")):
            if counts[i] == 0 and fractions[i] > 0 and counts[0] > 1:
                counts[0] -= 1
                counts[i] += 1
        out["test"] += group[: counts[2]]
        out["val"] += group[counts[2] : counts[2] + counts[1]]
        out["train"] += group[counts[2] + counts[1] :]
    return {k: sorted(v) for k, v in out.items()}


def split_random(labels: Sequence[int], fractions: Sequence[float], seed: int) -> list[str]:
    """Stratified random split of items by class; returns the split name of each item."""
    out = [""] * len(labels)
    rng = random.Random(seed)
    for lab in sorted(set(labels)):
        idx = [i for i, l in enumerate(labels) if l == lab]
        rng.shuffle(idx)
        counts = _largest_remainder(len(idx), fractions)
        pos = 0
        for name, c in zip(SPLITS, counts):
            for i in idx[pos : pos + c]:
                out[i] = name
            pos += c
    return out


def assign_splits(samples: list[Sample], fractions: Sequence[float] = (0.70, 0.15, 0.15), val_fraction: float = 0.15, seed: int = 42) -> tuple[list[str], dict]:
    """The split of every sample and a description of how it was made."""
    splits = [s.split for s in samples]
    info: dict = {"seed": seed}
    have = {s for s in splits if s}
    identities = all(s.subject is not None for s in samples)
    if not have:
        if identities:
            subj: dict[str, set[int]] = {}
            for s in samples:
                subj.setdefault(s.subject, set()).add(s.label)  # type: ignore[arg-type]
            by = split_subjects(subj, fractions, seed)
            where = {x: name for name, xs in by.items() for x in xs}
            info.update(method="subject-disjoint", fractions=list(fractions), subjects=by)
            return [where[s.subject] for s in samples], info  # type: ignore[index]
        info.update(method="random stratified (identities unknown)", fractions=list(fractions))
        return split_random([s.label for s in samples], fractions, seed), info
    out = [s or "train" for s in splits]
    info["method"] = "kept the dataset's own splits"
    if "val" not in have:
        train_idx = [i for i, s in enumerate(out) if s == "train"]
        if identities:
            subj = {}
            for i in train_idx:
                subj.setdefault(samples[i].subject, set()).add(samples[i].label)  # type: ignore[arg-type]
            by = split_subjects(subj, (1 - val_fraction, val_fraction, 0.0), seed)
            for i in train_idx:
                if samples[i].subject in by["val"]:
                    out[i] = "val"
            info.update(val_from_train="identity-disjoint", val_fraction=val_fraction, val_subjects=by["val"])
        else:
            carved = split_random([samples[i].label for i in train_idx], (1 - val_fraction, val_fraction, 0.0), seed)
            for i, name in zip(train_idx, carved):
                out[i] = name
            info.update(val_from_train="random stratified (identities unknown)", val_fraction=val_fraction)
    if identities:
        info["subjects"] = {name: sorted({s.subject for s, sp in zip(samples, out) if sp == name}) for name in SPLITS}  # type: ignore[type-var]
    return out, info


def _read(path: Path) -> np.ndarray | None:
    try:
        return read_image(path)
    except ImageError:
        return None


def _needs_detection(root: Path, samples: list[Sample]) -> bool:
    """'auto' face mode: full frames need the detector, face-crop-sized images are taken as crops."""
    for s in samples[:: max(1, len(samples) // 10)][:10]:
        img = _read(root / s.source)
        if img is not None and not is_face_crop(img):
            return True
    return False


def prepare(
    root: str | os.PathLike,
    out: str | os.PathLike,
    name: str | None = None,
    *,
    crop_scale: float = 1.5,
    size: int = 128,
    faces: str = "auto",
    detector: str = "yunet",
    detector_model: str | os.PathLike | None = None,
    fractions: Sequence[float] = (0.70, 0.15, 0.15),
    val_fraction: float = 0.15,
    seed: int = 42,
    limit: int | None = None,
    progress: bool = True,
) -> Path:
    """Crop every image of the dataset at ``root`` into ``out/<name>/`` and write ``manifest.json`` there.

    ``faces``: 'detect' (full frames: detector + crop_face at ``crop_scale``), 'crop' (already
    face crops: centre square + resize), or 'auto' (detect when images are larger than 256 px).
    ``limit``: keep an evenly spaced subset of that many images (for tests).
    Returns the manifest path.
    """
    from tqdm import tqdm

    root = Path(root)
    name = name or root.name
    dest = Path(out) / name
    layout, samples = scan(root)
    if limit is not None and limit < len(samples):
        step = len(samples) / float(limit)
        samples = [samples[int(i * step)] for i in range(limit)]
    splits, split_info = assign_splits(samples, fractions, val_fraction, seed)
    mode = faces
    if faces == "auto":
        mode = "detect" if _needs_detection(root, samples) else "crop"
    det = None
    if mode == "detect":
        from spoofsdk.detect import make_detector

        det = make_detector(detector, detector_model)  # YuNet: $SPOOFSDK_YUNET_MODEL, else the runtime's bundled file
    elif mode != "crop":
        raise ValueError(f"faces must be 'auto', 'detect' or 'crop', got {faces!r}")
    items, skipped = [], []
    for s, split in tqdm(list(zip(samples, splits)), desc=f"prepare {name}", disable=not progress, unit="img"):
        img = _read(root / s.source)
        if img is None:
            skipped.append({"source": s.source, "reason": "unreadable"})
            continue
        entry: dict = {}
        if det is not None:
            found = det.detect(img)
            if not found:
                skipped.append({"source": s.source, "reason": "no face detected"})
                continue
            d = found[0]
            fc = crop_face(img, d.box, crop_scale, size)
            crop = fc.image
            entry.update(box=[round(float(v), 1) for v in d.box], det_score=round(float(d.score), 4), padded=round(fc.padded_fraction, 4), n_faces=len(found))
        else:
            crop = fit_face_crop(img, size)  # the runtime's check_face does the same
        rel = Path("crops") / Path(s.source).with_suffix(".png")
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(dest / rel), crop)
        items.append({"file": rel.as_posix(), "source": s.source, "label": s.label, "class": "real" if s.label else "attack", "split": split, "subject": s.subject, **entry})
    counts = _split_counts(items)
    manifest = {
        "version": MANIFEST_VERSION,
        "dataset": name,
        "root": str(root.resolve()),
        "layout": layout,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "crop": {"faces": mode, "detector": detector if det is not None else None, "crop_scale": crop_scale if det is not None else None, "size": size, "format": "png (lossless), BGR",
                 "fit": "detector box -> spoofsdk.crop.crop_face" if det is not None else "centre square -> spoofsdk.crop.resize_square"},
        "split": split_info,
        "counts": counts,
        "n_items": len(items),
        "skipped": skipped,
        "items": items,
    }
    dest.mkdir(parents=True, exist_ok=True)
    path = dest / "manifest.json"
    path.write_text(json.dumps(manifest, indent=1))
    log.info("%s: layout %s, faces=%s, %d crops (%d skipped) -> %s", name, layout, mode, len(items), len(skipped), path)
    for sp in SPLITS:
        log.info("  %-5s real %5d  attack %5d%s", sp, counts[sp]["real"], counts[sp]["attack"],
                 f"  subjects {split_info['subjects'][sp]}" if "subjects" in split_info else "")
    return path


def _split_counts(items: Sequence[dict]) -> dict[str, dict[str, int]]:
    """Live and attack crops per split, as a manifest's ``counts``."""
    return {sp: {"real": sum(1 for i in items if i["split"] == sp and i["label"] == 1),
                 "attack": sum(1 for i in items if i["split"] == sp and i["label"] == 0)} for sp in SPLITS}


RESPLIT_METHOD = "random stratified by class over all crops (subjects and the dataset's own splits ignored)"


def is_random_resplit(manifest: dict) -> bool:
    """``manifest`` was written by :func:`resplit_random`: a random re-cut of another prepared set's
    crops, whose test part holds frames and people of the source's train part."""
    return str((manifest.get("split") or {}).get("method", "")) == RESPLIT_METHOD


def resplit_random(
    src: str | os.PathLike,
    out: str | os.PathLike,
    *,
    fractions: Sequence[float] = (0.70, 0.15, 0.15),
    seed: int = 42,
) -> Path:
    """A copy of a prepared dataset's manifest whose splits are random (stratified by class), in ``out/<name>/``.

    Subjects and the dataset's own train/test folders are ignored, as in a plain random 70/15/15
    split of every image (the split SEEDS reports SpoofNet's 99.94 % test accuracy on). No crop is
    copied: the items point at the source crops by relative path. Such a split flatters a model:
    near-duplicate frames of one video and the same people land on both sides, so test accuracy
    measures recall of seen faces and cameras, not generalisation (use the subject-disjoint
    manifests and ``crossval`` for that). Returns the new manifest path.
    """
    man = read_manifest(src)
    src_dir = Path(man["_dir"]).resolve()
    dest = Path(out) / man["dataset"]
    dest.mkdir(parents=True, exist_ok=True)
    items = [dict(it) for it in man["items"]]
    splits = split_random([int(it["label"]) for it in items], fractions, seed)
    for it, split in zip(items, splits):
        it["split"] = split
        it["file"] = Path(os.path.relpath(src_dir / it["file"], dest.resolve())).as_posix()
    counts = _split_counts(items)
    new = {k: v for k, v in man.items() if k != "_dir"}
    new.update(
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        split={"method": RESPLIT_METHOD,
               "fractions": list(fractions), "seed": seed, "from": str(src_dir / "manifest.json"),
               "note": "flatters: near-duplicate frames and the same people on both sides"},
        counts=counts,
        items=items,
    )
    path = dest / "manifest.json"
    path.write_text(json.dumps(new, indent=1))
    log.info("%s: random split of %d crops -> %s  %s", man["dataset"], len(items), path,
             "  ".join(f"{sp} {c['real']}/{c['attack']}" for sp, c in counts.items()))
    return path


# --- reading prepared data back ------------------------------------------------------------
class DataError(SpoofSDKError):
    """Prepared data is missing or unreadable."""


def read_manifest(path: str | os.PathLike) -> dict:
    path = Path(path)
    if path.suffix != ".json":
        path = path / "manifest.json"
    if not path.is_file():
        raise DataError(f"no prepared data at {path.parent} ({path.name} missing): "
                        f"run `spoofsdk-train prepare DATASET --out {path.parent.parent}` first")
    try:
        m = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read {path}: {e}") from e
    m["_dir"] = str(path.parent)
    return m


@dataclass
class CropSet:
    """Crops of one split of one or more prepared datasets, in memory."""

    images: np.ndarray  # N x S x S x 3 BGR uint8
    labels: np.ndarray  # N int64, 1 real / 0 attack
    sets: list[str]  # dataset name per item
    files: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx: Iterable[int]) -> "CropSet":
        idx = list(idx)
        return CropSet(self.images[idx], self.labels[idx], [self.sets[i] for i in idx], [self.files[i] for i in idx])

    def by_set(self) -> dict[str, "CropSet"]:
        return {name: self.subset([i for i, s in enumerate(self.sets) if s == name]) for name in sorted(set(self.sets))}


def load_crops(manifests: Sequence[str | os.PathLike | dict], split: str, size: int | None = None, limit: int | None = None) -> CropSet:
    """Load the crops of ``split`` from each manifest (resized to ``size`` if given and different)."""
    images, labels, sets, files = [], [], [], []
    for m in manifests:
        man = m if isinstance(m, dict) else read_manifest(m)
        base = Path(man["_dir"])
        items = [it for it in man["items"] if it["split"] == split]
        if limit is not None and len(items) > limit:
            step = len(items) / float(limit)
            items = [items[int(i * step)] for i in range(limit)]
        for it in items:
            img = _read(base / it["file"])
            if img is None:
                raise DataError(f"crop missing: {base / it['file']} (run prepare again)")
            if size is not None and img.shape[0] != size:
                img = resize_square(img, size)
            images.append(img)
            labels.append(int(it["label"]))
            sets.append(man["dataset"])
            files.append(str(base / it["file"]))
    arr = np.stack(images) if images else np.zeros((0, size or 1, size or 1, 3), np.uint8)
    return CropSet(arr, np.asarray(labels, dtype=np.int64), sets, files)
