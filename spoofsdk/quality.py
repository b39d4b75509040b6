"""Quality gates: refuse to score a face that the model cannot judge.

A presentation-attack model scores what it is shown; on a tiny, blurred, dark or half-visible
face its score is noise, and noise must not become ``real``. Each gate turns such a face into
``unknown`` with a reason the user can act on ("move closer", "more light").

The figures are measured on the face box (not the context crop), converted to grey and
resized to a fixed side (:data:`MEASURE_SIDE`), so that sharpness does not depend on how
large the face is in the frame:

- ``face_px``: shorter side of the face box in frame pixels.
- ``sharpness``: variance of the Laplacian of the normalised face patch.
- ``brightness``: mean grey level (0..255); ``clipped``: share of pixels at >= 250.
- ``border_cut``: share of the face box lying outside the frame.
- ``landmarks_outside``: how many of the detector's facial landmarks (eyes, nose tip, mouth
  corners; YuNet gives 5) lie outside the frame or within :data:`LANDMARK_MARGIN` of the face
  size from its edge. Detectors without landmarks report 0.
- ``padded``: share of the model crop filled with black padding.
- ``face_inside``: 1 when the face itself is inside the frame (:func:`face_inside`), else 0.
- ``face_share`` (crop mode only, set by :meth:`~spoofsdk.LivenessChecker.check_face` with ``verify``): the
  share of the image the largest detected face covers; 0 when none was found. Not a gate.

A face is *cut* when its box lies more than ``max_border_cut`` outside the frame or when a
landmark is outside it; a cut face is refused (``cut_by_border``). A face that is inside the
frame but fills it (a phone held close, a tight crop) is scored on the crop its model's policy
gives, padded or not: ``max_padded`` only refuses crops of faces not known to be inside (with
the border gates switched off). Measured on 658 webcam close-ups with the embedded EdgeNet
(trained with padded crops): AUC 0.58 on its padded crops, 0.44 with the context narrowed to fit
inside the frame, 0.43 on the centre-square crop of ``check_face``.

Every gate can be changed or switched off (set its limit to ``None``) through
:class:`QualityConfig`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Mapping, Sequence

import cv2
import numpy as np

from .results import Reason

__all__ = ["QualityConfig", "QualityReport", "MEASURE_SIDE", "measure", "assess", "quality_config", "face_inside"]

MEASURE_SIDE = 96
# A landmark closer to the frame edge than this share of the face size counts as outside: on a half
# face, YuNet still places all 5 landmarks, squeezed against the edge (1-5 px on a 180 px face). On
# 275 webcam close-ups, the nearest landmark was at least 3 % of the face size from the edge.
LANDMARK_MARGIN = 0.03
CLIP_LEVEL = 250


@dataclass(frozen=True)
class QualityConfig:
    """Limits of the gates; ``None`` switches a gate off. Defaults were set on NUAA webcam frames and gc535 crops.

    ``min_sharpness`` is deliberately low: webcam faces are soft, and the gate is meant for
    motion blur and defocus, not to demand studio sharpness.
    """

    min_face_px: float | None = 64
    min_sharpness: float | None = 15.0
    min_brightness: float | None = 40.0
    max_brightness: float | None = 220.0
    max_clipped: float | None = 0.50
    max_border_cut: float | None = 0.10
    max_landmarks_outside: int | None = 0
    max_padded: float | None = 0.30

    @classmethod
    def off(cls) -> "QualityConfig":
        """Every gate disabled (score whatever is detected)."""
        return cls(**{f.name: None for f in fields(cls)})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def quality_config(value: "QualityConfig | Mapping[str, Any] | bool | None") -> QualityConfig:
    """Accept a :class:`QualityConfig`, a dict of overrides, ``None``/``True`` (defaults) or ``False`` (gates off)."""
    if value is None or value is True:
        return QualityConfig()
    if value is False:
        return QualityConfig.off()
    if isinstance(value, QualityConfig):
        return value
    if isinstance(value, Mapping):
        known = {f.name for f in fields(QualityConfig)}
        unknown = set(value) - known
        if unknown:
            raise ValueError(f"unknown quality gate option(s): {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
        return replace(QualityConfig(), **dict(value))
    raise TypeError(f"quality must be a QualityConfig, a dict, True/False or None, got {type(value).__name__}")


@dataclass(frozen=True)
class QualityReport:
    figures: dict[str, float]
    reason: str | None = None
    """None when every gate passed, else the :class:`~spoofsdk.results.Reason` code of the first gate that failed."""
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.reason is None


def _border_cut(frame_shape: Sequence[int], box: Sequence[float]) -> float:
    x, y, w, h = (float(v) for v in box)
    fh, fw = frame_shape[0], frame_shape[1]
    iw = max(0.0, min(x + w, fw) - max(x, 0.0))
    ih = max(0.0, min(y + h, fh) - max(y, 0.0))
    return float(1.0 - (iw * ih) / (w * h)) if w > 0 and h > 0 else 1.0


def _landmarks_outside(frame_shape: Sequence[int], box: Sequence[float], landmarks: Sequence[Sequence[float]] | None) -> int:
    if not landmarks:
        return 0
    fh, fw = frame_shape[0], frame_shape[1]
    margin = LANDMARK_MARGIN * max(float(box[2]), float(box[3]))
    return sum(1 for x, y in landmarks if not (margin <= x < fw - margin and margin <= y < fh - margin))


def measure(
    frame: np.ndarray,
    box: Sequence[float] | None = None,
    padded_fraction: float = 0.0,
    landmarks: Sequence[Sequence[float]] | None = None,
) -> dict[str, float]:
    """The quality figures of the face ``box`` = ``(x, y, w, h)`` in a BGR uint8 frame (whole image if None)."""
    fh, fw = frame.shape[:2]
    if box is None:
        box = (0.0, 0.0, float(fw), float(fh))
    x, y, w, h = (float(v) for v in box)
    x0, y0 = max(int(round(x)), 0), max(int(round(y)), 0)
    x1, y1 = min(int(round(x + w)), fw), min(int(round(y + h)), fh)
    patch = frame[y0:y1, x0:x1]
    figures = {
        "face_px": float(min(w, h)),
        "border_cut": _border_cut(frame.shape, box),
        "landmarks_outside": float(_landmarks_outside(frame.shape, box, landmarks)),
        "padded": float(padded_fraction),
    }
    if patch.size == 0:
        figures.update(sharpness=0.0, brightness=0.0, clipped=0.0)
        return figures
    grey = cv2.cvtColor(patch, cv2.COLOR_BGR2GRAY)
    grey = cv2.resize(grey, (MEASURE_SIDE, MEASURE_SIDE), interpolation=cv2.INTER_AREA if min(grey.shape) > MEASURE_SIDE else cv2.INTER_LINEAR)
    _, std = cv2.meanStdDev(cv2.Laplacian(grey, cv2.CV_32F))
    figures["sharpness"] = float(std[0, 0] ** 2)
    figures["brightness"] = float(grey.mean())
    figures["clipped"] = float(np.count_nonzero(grey >= CLIP_LEVEL)) / grey.size
    return figures


def face_inside(figures: Mapping[str, float], config: QualityConfig) -> bool:
    """True when the face itself is inside the frame (not cut), whatever its context crop needs."""
    max_cut = config.max_border_cut if config.max_border_cut is not None else QualityConfig.max_border_cut
    max_out = config.max_landmarks_outside if config.max_landmarks_outside is not None else 0
    return _get(figures, "border_cut") <= max_cut and _get(figures, "landmarks_outside") <= max_out


def _get(figures: Mapping[str, float], key: str) -> float:
    return float(figures.get(key, 0.0))


def assess(figures: Mapping[str, float], config: QualityConfig) -> QualityReport:
    """Apply the gates to measured figures. The first failing gate (in the order below) gives the reason."""
    f, c = figures, config
    checks = (
        (c.max_border_cut, lambda: f["border_cut"] > c.max_border_cut, Reason.CUT_BY_BORDER,
         lambda: f"face cut by the frame border ({f['border_cut']:.0%} of it outside): centre the face"),
        (c.max_landmarks_outside, lambda: f.get("landmarks_outside", 0) > c.max_landmarks_outside, Reason.CUT_BY_BORDER,
         lambda: f"face cut by the frame border ({f['landmarks_outside']:.0f} of its landmarks outside): centre the face or step back"),
        (c.max_padded, lambda: f["padded"] > c.max_padded and not f.get("face_inside"), Reason.CUT_BY_BORDER,
         lambda: f"face too close to the frame border ({f['padded']:.0%} of the crop outside the frame): centre the face or step back"),
        (c.min_face_px, lambda: f["face_px"] < c.min_face_px, Reason.FACE_TOO_SMALL,
         lambda: f"face too small: {f['face_px']:.0f} px < {c.min_face_px:.0f} px (move closer)"),
        (c.min_brightness, lambda: f["brightness"] < c.min_brightness, Reason.TOO_DARK,
         lambda: f"face too dark: brightness {f['brightness']:.0f} < {c.min_brightness:.0f} (add light)"),
        (c.max_brightness, lambda: f["brightness"] > c.max_brightness, Reason.OVEREXPOSED,
         lambda: f"face overexposed: brightness {f['brightness']:.0f} > {c.max_brightness:.0f} (less direct light)"),
        (c.max_clipped, lambda: f["clipped"] > c.max_clipped, Reason.OVEREXPOSED,
         lambda: f"face overexposed: {f['clipped']:.0%} of it saturated (less direct light)"),
        (c.min_sharpness, lambda: f["sharpness"] < c.min_sharpness, Reason.TOO_BLURRY,
         lambda: f"face too blurred: sharpness {f['sharpness']:.1f} < {c.min_sharpness:.1f} (hold still, check focus)"),
    )
    for limit, failed, reason, message in checks:
        if limit is not None and failed():
            return QualityReport(dict(figures), reason, message())
    return QualityReport(dict(figures))
