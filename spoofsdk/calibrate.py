"""Calibrate a model's threshold on the user's own camera (no torch, no onnx package).

A threshold chosen on the training data rarely holds on another camera. Given a folder
with ``real/`` and ``attack/`` images taken with the user's camera (any class-folder name of
:mod:`spoofsdk.folders`: ``live/``, ``fake/``, ``spoof/``... as ``prepare`` and the quantizer accept), this scores every image with the runtime path (detection + crop
+ gates, or ``crops=True`` for face crops), picks a threshold, and writes a copy of the model
whose metadata carries the new ``threshold``, a ``threshold_source`` saying how it was chosen,
and ``metrics`` whose threshold-dependent figures are replaced by the calibration's own.

The policy (a biometric check must not become less secure by being calibrated):

- **APCER cap.** The new threshold never accepts a larger share of these attacks than the
  model's own threshold does (its APCER on these images), unless ``allow_higher_apcer``.
  ``target_apcer`` can lower the cap; above the model's own APCER it needs ``allow_higher_apcer``.
- **Operating point.** By default: among thresholds within the cap, the BPCER is lowest at the
  lowest one; the chosen threshold is the *highest* threshold with that same BPCER. When
  BPCER is flat (the common case on a few hundred images), this is the most secure threshold
  that costs no extra rejections, not the least secure one. With ``target_bpcer``: the highest
  threshold whose BPCER stays within the target, raised to the cap if it would exceed it.
- **Never below the model's own threshold unless asked.** A threshold below the model's accepts
  more of every kind of attack, seen in the folder or not, even where it keeps these attacks
  out: the chosen threshold is raised to the model's own, with a warning saying what the lower
  one would give, unless ``allow_lower_threshold`` or ``allow_higher_apcer`` (then a warning says
  it is less secure).

Images without a decided face (no face, refused by a quality gate, unreadable) cannot inform
a threshold: they are skipped and counted per reason.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import ImageError, ModelError, SourceError
from .folders import class_folders
from .metrics import error_rates, threshold_at_apcer, threshold_at_bpcer
from .model import parse_metadata, read_metadata_props, write_metadata_props
from .results import UNKNOWN, Reason
from .sources import list_images

log = logging.getLogger(__name__)

__all__ = ["CalibrationResult", "collect_scores", "calibrate", "choose_threshold", "write_calibrated_model",
           "THRESHOLD_DEPENDENT"]

# Figures in a model's `metrics` that hold only at the threshold they were computed at.
THRESHOLD_DEPENDENT = ("apcer", "bpcer", "acer", "accuracy", "hter", "far", "frr")


@dataclass
class CalibrationResult:
    threshold: float
    target_apcer: float | None
    apcer_cap: float
    """The highest APCER the chosen threshold was allowed (target and/or the model's own)."""
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
    target_bpcer: float | None = None
    allow_higher_apcer: bool = False
    allow_lower_threshold: bool = False

    @property
    def direction(self) -> str:
        if self.threshold > self.previous_threshold:
            return "more secure"
        if self.threshold < self.previous_threshold:
            return "LESS secure"
        return "unchanged"

    def to_dict(self) -> dict[str, Any]:
        from .results import _clean  # NaN rates (a class without samples) become null: valid JSON

        return _clean({**asdict(self), "direction": self.direction})


def collect_scores(
    checker, folder: str | os.PathLike, crops: bool = False, on_result: Callable[[Any], None] | None = None
) -> tuple[np.ndarray, np.ndarray, Counter]:
    """Score every image under the class folders of ``folder``: ``(labels, scores, skipped per reason)``.

    ``on_result`` is called with each image's :class:`~spoofsdk.results.FrameResult` (progress reports).
    """
    from .results import FrameResult

    jobs = [(path, label) for sub, label in class_folders(folder) for path in list_images([sub])]
    labels: list[int] = []
    scores: list[float] = []
    skipped: Counter = Counter()
    for path, label in jobs:
        try:
            result = checker.check_crop_file(path) if crops else checker.check(path)
        except ImageError as e:
            result = FrameResult.failed(Reason.BAD_IMAGE, str(e), path=str(path))
        if on_result is not None:
            on_result(result)
        # A face crop without a face found keeps its score but is unknown (no_face): no decision is made on
        # it at run time, so it cannot inform the threshold either.
        if result.score is None or result.label == UNKNOWN:
            skipped[str(result.reason or Reason.ERROR)] += 1
            continue
        labels.append(label)
        scores.append(result.score)
    log.debug("calibration: %d images scored, skipped %s", len(scores), dict(skipped))
    return np.asarray(labels, dtype=np.int64), np.asarray(scores, dtype=np.float64), skipped


def choose_threshold(
    labels: np.ndarray,
    scores: np.ndarray,
    model_threshold: float,
    target_apcer: float | None = None,
    target_bpcer: float | None = None,
    allow_higher_apcer: bool = False,
    allow_lower_threshold: bool = False,
) -> tuple[float, float, list[str]]:
    """The calibrated threshold, the APCER cap it obeyed, and warnings. See the module docstring."""
    warnings: list[str] = []
    own_apcer = error_rates(labels, scores, model_threshold).apcer
    cap = own_apcer if target_apcer is None else float(target_apcer)
    if cap > own_apcer and not allow_higher_apcer:
        warnings.append(
            f"target APCER {cap:g} is above the model's own APCER on these images ({own_apcer:.4f}): "
            f"kept at {own_apcer:.4f} (pass --allow-higher-apcer / allow_higher_apcer=True to accept more attacks)"
        )
        cap = own_apcer
    n_attack = int((labels == 0).sum())
    if 0 < cap and n_attack * cap < 1:
        warnings.append(
            f"only {n_attack} attack images: an APCER of {cap:g} cannot be resolved "
            f"(needs at least {int(np.ceil(1 / max(cap, 1e-9)))}); the threshold rejects every attack seen"
        )
    lowest_in_cap = threshold_at_apcer(labels, scores, cap)
    if target_bpcer is None:
        best_bpcer = error_rates(labels, scores, lowest_in_cap).bpcer
        threshold = threshold_at_bpcer(labels, scores, best_bpcer)
    else:
        threshold = threshold_at_bpcer(labels, scores, target_bpcer)
        if threshold < lowest_in_cap:
            reached = error_rates(labels, scores, lowest_in_cap).bpcer
            warnings.append(
                f"BPCER {target_bpcer:g} cannot be met within the APCER cap {cap:.4f}: BPCER will be {reached:.4f}"
                + ("" if allow_higher_apcer else " (--allow-higher-apcer trades security for fewer rejections)")
            )
            threshold = lowest_in_cap
    # The highest-threshold rule never lands below the cap's lowest threshold; keep the order explicit.
    threshold = max(threshold, lowest_in_cap)
    # allow_higher_apcer already consents to a less secure threshold: accepting more attacks needs a lower one.
    if threshold < model_threshold and not (allow_lower_threshold or allow_higher_apcer):
        lower = error_rates(labels, scores, threshold)
        kept = error_rates(labels, scores, model_threshold)
        warnings.append(
            f"kept the model's threshold {model_threshold:.4f}: the best one on these images, {threshold:.4f}, is lower "
            f"(BPCER {kept.bpcer:.4f} -> {lower.bpcer:.4f} here, but it accepts more of every attack not in this folder); "
            "pass --allow-lower-threshold / allow_lower_threshold=True to use it"
        )
        threshold = model_threshold
    return float(threshold), float(cap), warnings


def recalibrated_metrics(metrics_json: str | None, calibration: dict[str, Any]) -> str:
    """The model's ``metrics`` with the figures a new threshold invalidates replaced.

    Threshold-free figures (AUC, EER, BPCER at a fixed APCER, n) stay. APCER, BPCER, ACER
    and accuracy held at the old threshold only: they are removed from every test set, and
    the calibration's own figures are added under ``calibration``.
    """
    try:
        metrics = json.loads(metrics_json) if metrics_json else {}
    except json.JSONDecodeError:
        metrics = {}
    if not isinstance(metrics, dict):
        metrics = {}
    removed = False
    # A calibration that kept the threshold leaves every figure true: only the calibration is added.
    unchanged = calibration.get("threshold") == calibration.get("previous_threshold")
    for value in ([] if unchanged else metrics.values()):
        if isinstance(value, dict):
            for key in THRESHOLD_DEPENDENT:
                removed |= value.pop(key, None) is not None
    if removed:
        metrics["threshold_dependent_removed"] = (
            f"{', '.join(THRESHOLD_DEPENDENT[:4])} of the test sets held at threshold {calibration['previous_threshold']:g}; "
            "removed by spoofsdk calibrate (see 'calibration' for the figures at the new threshold)"
        )
    metrics["calibration"] = calibration
    return json.dumps(metrics, sort_keys=True)


def write_calibrated_model(
    model_bytes: bytes, out: str | os.PathLike, threshold: float, source: str, metrics: str | None = None
) -> Path:
    """Write ``model_bytes`` to ``out`` with ``threshold``, ``threshold_source`` (and ``metrics``) set; check it reads back."""
    updates = {"threshold": repr(float(threshold)), "threshold_source": source}
    if metrics is not None:
        updates["metrics"] = metrics
    data = write_metadata_props(model_bytes, updates)
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
    target_apcer: float | None = None,
    out: str | os.PathLike | None = None,
    crops: bool = False,
    target_bpcer: float | None = None,
    allow_higher_apcer: bool = False,
    on_result: Callable[[Any], None] | None = None,
    allow_lower_threshold: bool = False,
    **checker_kwargs: Any,
) -> CalibrationResult:
    """Choose the threshold for ``folder`` (see the module docstring); write the calibrated model to ``out`` if given."""
    from .checker import LivenessChecker

    if target_apcer is not None and not 0.0 <= target_apcer < 1.0:
        raise ValueError(f"target APCER must be in [0, 1), got {target_apcer}")
    if target_bpcer is not None and not 0.0 <= target_bpcer < 1.0:
        raise ValueError(f"target BPCER must be in [0, 1), got {target_bpcer}")
    checker_kwargs.pop("threshold", None)  # calibration starts from the model's own threshold
    checker = LivenessChecker(model, **checker_kwargs)
    source = checker.model.source
    if out is not None and source != "<bytes>" and Path(out).resolve() == Path(source).resolve():
        raise ValueError("--out must differ from the model file: calibration writes a new file")
    labels, scores, skipped = collect_scores(checker, folder, crops=crops, on_result=on_result)
    n_real, n_attack = int(labels.sum()), int((1 - labels).sum())
    if n_real == 0 or n_attack == 0:
        raise SourceError(
            f"calibration needs scored images of both classes; got {n_real} real and {n_attack} attack "
            f"(skipped: {dict(skipped) or 'none'})"
        )
    previous = checker.model.threshold
    threshold, cap, warnings = choose_threshold(labels, scores, previous, target_apcer, target_bpcer, allow_higher_apcer,
                                                allow_lower_threshold)
    kept_lower = None  # the lower best threshold the policy refused, for the model's threshold_source
    if threshold == previous and not (allow_lower_threshold or allow_higher_apcer):
        best, _, _ = choose_threshold(labels, scores, previous, target_apcer, target_bpcer, allow_higher_apcer, True)
        kept_lower = best if best < previous else None
    # Metadata thresholds live in (0, 1); a score at exactly 1.0 or 0.0 would push it out.
    clipped = float(np.clip(threshold, 1e-6, 1.0 - 1e-6))
    if clipped != threshold:
        warnings.append(f"threshold {threshold!r} clipped to {clipped!r} to stay inside (0, 1)")
    rates = error_rates(labels, scores, clipped)
    before = error_rates(labels, scores, previous)
    if clipped < previous:
        warnings.append(
            f"the new threshold {clipped:.4f} is LOWER than the model's {previous:.4f}: less secure "
            f"(APCER on these images {before.apcer:.4f} -> {rates.apcer:.4f}; attacks unlike these may pass more often)"
        )
    result = CalibrationResult(
        threshold=clipped,
        target_apcer=None if target_apcer is None else float(target_apcer),
        apcer_cap=cap,
        apcer=rates.apcer,
        bpcer=rates.bpcer,
        n_real=n_real,
        n_attack=n_attack,
        previous_threshold=previous,
        previous_apcer=before.apcer,
        previous_bpcer=before.bpcer,
        skipped=dict(skipped),
        warnings=warnings,
        target_bpcer=None if target_bpcer is None else float(target_bpcer),
        allow_higher_apcer=bool(allow_higher_apcer),
        allow_lower_threshold=bool(allow_lower_threshold),
    )
    if out is not None:
        if isinstance(model, (bytes, bytearray)):
            data = bytes(model)
        else:
            data = Path(source).read_bytes()
        mode = "face crops" if crops else f"frames, detector {getattr(checker.detector, 'name', type(checker.detector).__name__)}"
        goal = f"BPCER target {target_bpcer:g}" if target_bpcer is not None else "lowest BPCER, highest such threshold"
        if kept_lower is not None:  # the policy kept the model's own threshold over a lower best one
            goal += f" (lower {kept_lower:g} refused: below the model's own threshold)"
        note = (
            f"spoofsdk calibrate on {Path(folder).resolve().name} ({n_real} real, {n_attack} attack; {mode}): "
            f"{goal} within APCER cap {cap:.4f}: APCER {rates.apcer:.4f}, BPCER {rates.bpcer:.4f}; "
            f"previous threshold {previous:g} ({result.direction}); {_dt.date.today().isoformat()}"
        )
        calibration = {
            "folder": Path(folder).resolve().name, "mode": mode, "n_real": n_real, "n_attack": n_attack,
            "threshold": clipped, "apcer": rates.apcer, "bpcer": rates.bpcer, "acer": rates.acer,
            "apcer_cap": cap, "previous_threshold": previous, "previous_apcer": before.apcer, "previous_bpcer": before.bpcer,
            "date": _dt.date.today().isoformat(),
        }
        from .results import _clean

        metrics = recalibrated_metrics(checker.model.info.extra.get("metrics"), _clean(calibration))
        result.out = str(write_calibrated_model(data, out, clipped, note, metrics))
    return result
