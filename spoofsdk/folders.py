"""Labelled image folders: the one place that knows how a folder of labelled face images is laid out.

Used by calibration (``spoofsdk calibrate``), the trainer's ``prepare`` and quantizer, the
benchmarks and the scripts, so that they all accept the same folders and read them the same way.

Class folders are named with this vocabulary (any case); labels follow :mod:`spoofsdk.metrics`,
1 = real (bona fide), 0 = attack:

- real: ``real``, ``live``, ``living``, ``bonafide``, ``bona_fide``, ``genuine``
- attack: ``attack``, ``fake``, ``spoof``, ``spoofing``, ``imposter``, ``impostor``, ``print``, ``replay``

Layouts (:func:`scan`):

- ``class_subject``         ``<root>/{real,attack}/<subject>/<images>``          (NUAA)
- ``class_flat``            ``<root>/{real,attack}/<images>``
- ``split_class``           ``<root>/{train,val,test}/{real,attack}/<images>``   (gc535: train, test)
- ``split_class_identity``  ``<root>/{train,test}/{real,attack}/<identity>/<images>``

Images are the files with one of :data:`~spoofsdk.sources.IMAGE_EXTENSIONS`, read with
:func:`~spoofsdk.sources.read_image` (which refuses truncated files and decompression bombs).
An image whose longer side is at most :data:`CROP_MAX_SIDE` is taken as an existing face crop
(gc535-style), a larger one as a camera frame that goes through the detector first
(:func:`is_face_crop`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
import numpy as np

from .errors import SourceError
from .sources import IMAGE_EXTENSIONS, read_image

__all__ = [
    "REAL_NAMES", "ATTACK_NAMES", "SPLIT_NAMES", "SPLITS", "CROP_MAX_SIDE", "IMAGE_EXTENSIONS", "FolderError",
    "LabelledImage", "label_of", "label_from_path", "class_folders", "image_files", "scan", "is_face_crop", "read_image",
]

REAL_NAMES = frozenset({"real", "live", "living", "bonafide", "bona_fide", "genuine"})
ATTACK_NAMES = frozenset({"attack", "fake", "spoof", "spoofing", "imposter", "impostor", "print", "replay"})
SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val", "dev": "val",
               "test": "test", "testing": "test"}
SPLITS = ("train", "val", "test")
CROP_MAX_SIDE = 256


class FolderError(SourceError, ValueError):
    """A folder is missing, holds no images, or is not laid out as labelled class folders."""


@dataclass
class LabelledImage:
    source: str  # path relative to the folder's root (POSIX separators)
    label: int  # 1 real, 0 attack
    split: str | None  # split named by the layout, or None
    subject: str | None  # identity (the folder below the class folder), or None when unknown


def label_of(name: str) -> int | None:
    """1 for a real class-folder name, 0 for an attack one, None otherwise."""
    n = name.lower()
    return 1 if n in REAL_NAMES else 0 if n in ATTACK_NAMES else None


def label_from_path(path: str | Path, root: str | Path | None = None) -> int | None:
    """The label of the first class-named folder on ``path`` (below ``root`` when given)."""
    p = Path(path)
    parts = p.relative_to(root).parts if root is not None else p.parts
    for part in parts[:-1]:
        label = label_of(part)
        if label is not None:
            return label
    return None


def image_files(folder: str | Path) -> list[Path]:
    """Image files under ``folder``, recursively, sorted."""
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def class_folders(folder: str | Path, require_both: bool = True) -> list[tuple[Path, int]]:
    """The class folders directly inside ``folder`` with their labels (sorted by name).

    With ``require_both`` a folder lacking real or attack images' folders raises :class:`FolderError`.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FolderError(f"folder not found: {folder}")
    found = [(d, lab) for d in sorted(folder.iterdir()) if d.is_dir() and (lab := label_of(d.name)) is not None]
    if require_both and {lab for _, lab in found} != {0, 1}:
        raise FolderError(f"{folder} must contain a folder of live faces ({'/'.join(sorted(REAL_NAMES))}) "
                          f"and one of attacks ({'/'.join(sorted(ATTACK_NAMES))})")
    return found


def scan(root: str | Path) -> tuple[str, list[LabelledImage]]:
    """Find the layout of ``root`` and list its labelled images; :class:`FolderError` for an unknown layout."""
    root = Path(root)
    if not root.is_dir():
        raise FolderError(f"dataset folder not found: {root}")
    split_dirs = [(d, SPLIT_NAMES[d.name.lower()]) for d in sorted(root.iterdir()) if d.is_dir() and d.name.lower() in SPLIT_NAMES]
    groups: list[tuple[str | None, Path, int]] = []
    if split_dirs:
        for d, split in split_dirs:
            classes = class_folders(d, require_both=False)
            if not classes:
                raise FolderError(f"{d}: split folder without real/attack class folders")
            groups += [(split, cd, lab) for cd, lab in classes]
    else:
        classes = class_folders(root, require_both=False)
        if not classes:
            raise FolderError(f"{root}: unknown layout; expected {{real,attack}}/... or {{train,val,test}}/{{real,attack}}/... class folders")
        groups = [(None, cd, lab) for cd, lab in classes]
    samples: list[LabelledImage] = []
    with_identity = False
    for split, cd, lab in groups:
        for sd in sorted(p for p in cd.iterdir() if p.is_dir()):
            with_identity = True
            samples += [LabelledImage(f.relative_to(root).as_posix(), lab, split, sd.name) for f in image_files(sd)]
        direct = sorted(p for p in cd.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        samples += [LabelledImage(f.relative_to(root).as_posix(), lab, split, None) for f in direct]
    if not samples:
        raise FolderError(f"{root}: no images found")
    kind = "split_class" if split_dirs else "class"
    layout = kind + ("_identity" if split_dirs and with_identity else "_subject" if with_identity else "" if split_dirs else "_flat")
    return layout, samples


def is_face_crop(image: np.ndarray) -> bool:
    """An image no larger than :data:`CROP_MAX_SIDE` on its longer side is taken as a face crop, not a frame."""
    return max(image.shape[:2]) <= CROP_MAX_SIDE
