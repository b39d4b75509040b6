"""Calibrate a model's threshold on the user's own camera (no torch, no onnx package).

A threshold chosen on the training data rarely holds on another camera. Given a folder
with ``real/`` and ``attack/`` images taken with the user's camera, this scores every image
with the runtime path (detection + crop + gates, or ``crops=True`` for face crops), picks the
lowest threshold whose APCER does not exceed the target (so BPCER is as low as that
allows; :func:`spoofsdk.metrics.threshold_at_apcer`), and writes a copy of the model whose
metadata carries the new ``threshold`` and a ``threshold_source`` saying how it was chosen.

Images without a scored face (no face, refused by a quality gate, unreadable) cannot inform
a threshold: they are skipped and counted per reason.
"""
from __future__ import annotations

import datetime as _dt
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ImageError, ModelError, SourceError
from .metrics import error_rates, threshold_at_apcer
from .model import parse_metadata, read_metadata_props, write_metadata_props
from .results import Reason
from .sources import list_images

__all__ = ["CalibrationResult", "collect_scores", "calibrate", "write_calibrated_model", "CLASS_DIRS"]

# folder name -> label (1 = real). 'spoof' is accepted as a synonym of 'attack'.
CLASS_DIRS = {"real": 1, "attack": 0, "spoof": 0}


@dataclass
class CalibrationResult:
    threshold: float
    target_apcer: float
    apcer: float
    bpcer: float
    n_real: int
    n_attack: int
    previous_threshold: float
    previous_apcer: float
    previous_bpcer: float
    skipped: dict[str, int] = field(default_factory=dict)
    """Images without a score, per reason (``no_face``, ``too_blurry``, ``bad_image``...)."""
    out: str | None = None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        from .results import _clean  # NaN rates (a class without samples) become null: valid JSON

        return _clean(asdict(self))


def _class_folders(folder: Path) -> list[tuple[Path, int]]:
    if not folder.is_dir():
        raise SourceError(f"calibration folder not found: {folder}")
    found = [(folder / name, label) for name, label in CLASS_DIRS.items() if (folder / name).is_dir()]
    labels = {label for _, label in found}
    if labels != {0, 1}:
        raise SourceError(f"{folder} must contain a real/ folder and an attack/ (or spoof/) folder of images")
    return found


def collect_scores(checker, folder: str | os.PathLike, crops: bool = False) -> tuple[np.ndarray, np.ndarray, Counter]:
    """Score every image under ``folder/real`` and ``folder/attack``: ``(labels, scores, skipped per reason)``."""
    labels: list[int] = []
    scores: list[float] = []
    skipped: Counter = Counter()
    for sub, label in _class_folders(Path(folder)):
        for path in list_images([sub]):
            try:
                result = checker.check_crop_file(path) if crops else checker.check(path)
            except ImageError:
                skipped[Reason.BAD_IMAGE] += 1
                continue
            if result.score is None:
                skipped[result.reason or Reason.ERROR] += 1
                continue
            labels.append(label)
            scores.append(result.score)
    return np.asarray(labels, dtype=np.int64), np.asarray(scores, dtype=np.float64), skipped


def write_calibrated_model(model_bytes: bytes, out: str | os.PathLike, threshold: float, source: str) -> Path:
    """Write ``model_bytes`` to ``out`` with ``threshold`` and ``threshold_source`` set; check it reads back."""
    data = write_metadata_props(model_bytes, {"threshold": repr(float(threshold)), "threshold_source": source})
    info = parse_metadata(read_metadata_props(data), str(out))
    if abs(info.threshold - threshold) > 1e-12:
        raise ModelError("the calibrated model did not read back with its new threshold")
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, out)  # never leave a half-written model behind
    return out


def calibrate(
    folder: str | os.PathLike,
    model: Any = None,
    target_apcer: float = 0.05,
    out: str | os.PathLike | None = None,
    crops: bool = False,
    **checker_kwargs: Any,
) -> CalibrationResult:
    """Choose the threshold meeting ``target_apcer`` on ``folder``; write the calibrated model to ``out`` if given."""
    from .checker import LivenessChecker

    if not 0.0 <= target_apcer < 1.0:
        raise ValueError(f"target APCER must be in [0, 1), got {target_apcer}")
    checker_kwargs.pop("threshold", None)  # calibration starts from the model's own threshold
    checker = LivenessChecker(model, **checker_kwargs)
    source = checker.model.source
    if out is not None and source != "<bytes>" and Path(out).resolve() == Path(source).resolve():
        raise ValueError("--out must differ from the model file: calibration writes a new file")
    labels, scores, skipped = collect_scores(checker, folder, crops=crops)
    n_real, n_attack = int(labels.sum()), int((1 - labels).sum())
    if n_real == 0 or n_attack == 0:
        raise SourceError(
            f"calibration needs scored images of both classes; got {n_real} real and {n_attack} attack "
            f"(skipped: {dict(skipped) or 'none'})"
        )
    warnings = []
    if n_attack * target_apcer < 1:
        warnings.append(
            f"only {n_attack} attack images: an APCER of {target_apcer:g} cannot be resolved "
            f"(needs at least {int(np.ceil(1 / max(target_apcer, 1e-9)))}); the threshold rejects every attack seen"
        )
    threshold = threshold_at_apcer(labels, scores, target_apcer)
    # Metadata thresholds live in (0, 1); a score at exactly 1.0 or 0.0 would push it out.
    clipped = float(np.clip(threshold, 1e-6, 1.0 - 1e-6))
    if clipped != threshold:
        warnings.append(f"threshold {threshold!r} clipped to {clipped!r} to stay inside (0, 1)")
    rates = error_rates(labels, scores, clipped)
    before = error_rates(labels, scores, checker.model.threshold)
    result = CalibrationResult(
        threshold=clipped,
        target_apcer=float(target_apcer),
        apcer=rates.apcer,
        bpcer=rates.bpcer,
        n_real=n_real,
        n_attack=n_attack,
        previous_threshold=checker.model.threshold,
        previous_apcer=before.apcer,
        previous_bpcer=before.bpcer,
        skipped=dict(skipped),
        warnings=warnings,
    )
    if out is not None:
        if isinstance(model, (bytes, bytearray)):
            data = bytes(model)
        else:
            data = Path(source).read_bytes()
        mode = "face crops" if crops else f"frames, detector {getattr(checker.detector, 'name', type(checker.detector).__name__)}"
        note = (
            f"spoofsdk calibrate on {Path(folder).resolve().name} ({n_real} real, {n_attack} attack; {mode}) "
            f"at target APCER {target_apcer:g}: APCER {rates.apcer:.4f}, BPCER {rates.bpcer:.4f}; "
            f"previous threshold {checker.model.threshold:g}; {_dt.date.today().isoformat()}"
        )
        result.out = str(write_calibrated_model(data, out, clipped, note))
    return result
