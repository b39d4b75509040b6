"""Distillation teachers: the one place a teacher is named, built and described.

A teacher gives P(live) in two forms: of BGR uint8 crops (the probe's cached views,
:mod:`.probe`) and of a student's own training batch (online distillation in the full loop,
:mod:`.train`). A distilled model's metadata says which teacher shaped it, under what licence,
and which checkpoint files (SHA-256) it was (:func:`.export.training_data_text`).

    teacher = get_teacher("minifasnet_pair")
    module = teacher.batch_module("RGB", mean, std)   # scores normalised student batches
    score = teacher.crop_scorer()                      # scores BGR uint8 crops of any size
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

__all__ = ["Teacher", "TEACHERS", "DISTILL_GATES", "check_distill_gate", "get_teacher", "file_sha256", "heard_teacher"]

# train.distill_gate: "none" hears the teacher on every draw; "agree" only where it is on the label's side of 0.5.
DISTILL_GATES = ("none", "agree")


@dataclass(frozen=True)
class Teacher:
    name: str
    card: str  # what a distilled model's metadata says of it: who made it, licence, what it sees
    checkpoint_files: Callable[[], list[Path]]
    build_batch_module: Callable[[str, Sequence[float], Sequence[float]], nn.Module]
    build_crop_scorer: Callable[[], Callable[[np.ndarray], np.ndarray]]

    def check_available(self) -> None:
        """Fail before any data is loaded when a checkpoint is missing (a training run would otherwise die late)."""
        missing = [str(p) for p in self.checkpoint_files() if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"teacher {self.name}: checkpoint(s) not found: {', '.join(missing)}")

    def batch_module(self, color_order: str, mean: Sequence[float], std: Sequence[float]) -> nn.Module:
        """A frozen module: P(live) of a batch in the student's input format (normalised, its colour order)."""
        return self.build_batch_module(color_order, mean, std)

    def crop_scorer(self) -> Callable[[np.ndarray], np.ndarray]:
        """A function: P(live) of N BGR uint8 crops (N x H x W x 3), each resized to the teacher's input."""
        return self.build_crop_scorer()

    def checkpoints(self) -> dict[str, str]:
        """File name -> SHA-256 of the weights in use: recorded in a distilled run's checkpoints."""
        return {p.name: file_sha256(p) for p in self.checkpoint_files()}


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --- the MiniFASNet pair (Minivision, Apache-2.0) --------------------------------------------

def _minifasnet_files() -> list[Path]:
    from .models.minifasnet import CHECKPOINTS, checkpoint_path

    return [checkpoint_path(name) for name in CHECKPOINTS]


def _minifasnet_batch_module(color_order: str, mean, std) -> nn.Module:
    from .models.minifasnet import PairTeacher

    return PairTeacher(color_order, mean, std)


def _minifasnet_crop_scorer() -> Callable[[np.ndarray], np.ndarray]:
    import cv2

    from .models.minifasnet import minifasnet_pair_p_live

    def score(images: np.ndarray) -> np.ndarray:
        return minifasnet_pair_p_live(np.stack([cv2.resize(im, (80, 80), interpolation=cv2.INTER_LINEAR) for im in images]))

    return score


TEACHERS: dict[str, Teacher] = {
    "minifasnet_pair": Teacher(
        name="minifasnet_pair",
        card="the MiniFASNet pair (MiniFASNetV2 and MiniFASNetV1SE of Minivision's Silent-Face-Anti-Spoofing, "
             "Apache-2.0; mean P(live) of both on the crop resized to 80x80)",
        checkpoint_files=_minifasnet_files,
        build_batch_module=_minifasnet_batch_module,
        build_crop_scorer=_minifasnet_crop_scorer,
    ),
}


def get_teacher(name: str) -> Teacher:
    if name not in TEACHERS:
        raise ValueError(f"unknown teacher {name!r}; known: {', '.join(TEACHERS)}")
    return TEACHERS[name]


def check_distill_gate(gate: str) -> None:
    if gate not in DISTILL_GATES:
        raise ValueError(f"train.distill_gate must be one of {', '.join(DISTILL_GATES)}; got {gate!r}")


def heard_teacher(labels: torch.Tensor, teacher_p_live: torch.Tensor, keep_label: torch.Tensor, gate: str = "none") -> torch.Tensor:
    """The teacher's P(live) where it is heard, the label where it is not (float32).

    ``keep_label`` marks the draws whose teacher score must not count (a synthesized attack; a crop
    without a score); ``gate="agree"`` adds every draw the teacher puts on the wrong side of 0.5.
    The full loop (:func:`.train.distill_targets`) and the probe (:func:`.probe.fit_head`) both use it.
    """
    check_distill_gate(gate)
    y, teacher_p_live = labels.float(), teacher_p_live.float()
    if gate == "agree":
        keep_label = keep_label | ((teacher_p_live > 0.5) != (y > 0.5))
    return torch.where(keep_label, y, teacher_p_live)
