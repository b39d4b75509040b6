"""Result dataclasses and their JSON form.

Labels are ``real``, ``spoof`` or ``unknown`` everywhere; ``score`` is always P(live face)
and is ``None`` whenever no score was computed (no face, a quality gate refused the face,
the input could not be read, the model's output was not a number). ``unknown`` always carries a ``reason`` code and a
human-readable ``message``.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

__all__ = ["REAL", "SPOOF", "UNKNOWN", "LABELS", "Label", "Reason", "FaceResult", "FrameResult", "draw_result"]


class _StrEnum(str, Enum):
    """A str-valued enum that *is* its string: equal to it, hashed like it, printed and JSON-encoded as it.

    (``enum.StrEnum`` needs Python 3.11; this also keeps ``format()`` and ``str()`` the plain value
    on every version.)
    """

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)

    __hash__ = str.__hash__


class Label(_StrEnum):
    """The decision for a face or frame."""

    REAL = "real"
    SPOOF = "spoof"
    UNKNOWN = "unknown"


REAL, SPOOF, UNKNOWN = Label.REAL, Label.SPOOF, Label.UNKNOWN
LABELS = tuple(Label)


class Reason(_StrEnum):
    """The reason codes an ``unknown`` (or an error) can carry. Stable strings, safe to match on."""

    NO_FACE = "no_face"
    FACE_TOO_SMALL = "face_too_small"
    TOO_BLURRY = "too_blurry"
    TOO_DARK = "too_dark"
    OVEREXPOSED = "overexposed"
    CUT_BY_BORDER = "cut_by_border"
    NOT_A_CROP = "not_a_crop"
    COLLECTING_EVIDENCE = "collecting_evidence"
    BAD_IMAGE = "bad_image"
    ERROR = "error"


def _clean(value: Any) -> Any:
    """Make a value JSON-safe: NaN/inf become None, tuples lists, numpy scalars Python numbers."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy scalar
        value = value.item()
    if isinstance(value, float):
        return round(value, 6) if math.isfinite(value) else None
    return value


@dataclass
class FaceResult:
    """The decision for one face."""

    label: Label
    """``real``, ``spoof`` or ``unknown`` (a :class:`Label`, which is a ``str``)."""
    score: float | None = None
    """P(live) from the model for this image/frame; None when the face was not scored."""
    box: tuple[int, int, int, int] | None = None
    """``(x, y, w, h)`` in frame pixels; None for :meth:`LivenessChecker.check_face` crops."""
    reason: Reason | None = None
    """Why the label is ``unknown`` (a :class:`Reason`, which is a ``str``); None for ``real``/``spoof``."""
    message: str = ""
    """Human-readable explanation, e.g. ``face too small: 52 px < 80 px (move closer)``."""
    detector_score: float | None = None
    quality: dict[str, float] = field(default_factory=dict)
    """Quality figures: ``face_px``, ``sharpness``, ``brightness``, ``clipped``, ``border_cut``, ``padded``;
    in crop mode (:meth:`LivenessChecker.check_crop_file`) also ``face_share``, the share of the image the
    largest detected face covers (0: none found)."""
    threshold: float | None = None
    track_id: int | None = None
    """Stream mode: the track this face belongs to."""
    smoothed_score: float | None = None
    """Stream mode: the track's EMA of P(live), which (with hysteresis) decides the label."""
    timings: dict[str, float] = field(default_factory=dict)
    """Milliseconds per stage for this face (``crop``, ``quality``, ``model``)."""

    @property
    def is_real(self) -> bool:
        return self.label == REAL

    def to_dict(self) -> dict[str, Any]:
        return _clean(asdict(self))


@dataclass
class FrameResult:
    """The decision for one image or video frame: one :class:`FaceResult` per face, largest first."""

    faces: list[FaceResult] = field(default_factory=list)
    label: Label = UNKNOWN
    """The label of the largest face; ``unknown`` (reason ``no_face``) without a face."""
    score: float | None = None
    """P(live) of the largest face; None without a scored face."""
    reason: Reason | None = None
    message: str = ""
    path: str | None = None
    frame: int | None = None
    t: float | None = None
    """Stream mode: the frame's timestamp in seconds."""
    image_size: tuple[int, int] | None = None
    """``(width, height)`` of the input."""
    timings: dict[str, float] = field(default_factory=dict)
    """Milliseconds: ``detect`` (or ``track``), ``faces`` (crop+quality+model for all faces), ``total``."""
    error: str | None = None
    """Set when the input could not be processed (then label is ``unknown`` and reason ``bad_image``/``error``)."""

    @property
    def largest(self) -> FaceResult | None:
        return self.faces[0] if self.faces else None

    @classmethod
    def from_faces(cls, faces: list[FaceResult], **kwargs: Any) -> "FrameResult":
        """A frame result whose headline (label, score, reason) is that of the largest face."""
        if faces:
            # Largest first, also on frames where boxes come in track order (template following).
            faces = sorted(faces, key=lambda f: -(f.box[2] * f.box[3]) if f.box else 0.0)
            top = faces[0]
            return cls(faces=faces, label=top.label, score=top.score, reason=top.reason, message=top.message, **kwargs)
        return cls(faces=[], label=UNKNOWN, score=None, reason=Reason.NO_FACE, message="no face found in the image", **kwargs)

    @classmethod
    def failed(cls, reason: Reason, message: str, **kwargs: Any) -> "FrameResult":
        """An input that could not be processed: ``unknown``, no score, the error message kept."""
        return cls(faces=[], label=UNKNOWN, score=None, reason=reason, message=message, error=message, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        d = _clean(asdict(self))
        # Keep the JSON lines short: drop keys that do not apply to this kind of input.
        for key in ("path", "frame", "t", "error"):
            if d.get(key) is None:
                d.pop(key, None)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))


_COLOURS = {REAL: (0, 200, 0), SPOOF: (0, 0, 230), UNKNOWN: (0, 200, 230)}  # BGR


def draw_result(image, result: FrameResult):
    """Draw each face's box, label and score (or reason) on a copy of a BGR image."""
    import cv2  # only here: results stay importable without OpenCV

    out = image.copy()
    for face in result.faces:
        if face.box is None:
            continue
        x, y, w, h = face.box
        colour = _COLOURS.get(face.label, _COLOURS[UNKNOWN])
        cv2.rectangle(out, (x, y), (x + w, y + h), colour, 2)
        text = f"{face.label} {face.score:.2f}" if face.score is not None else f"{face.label}: {face.reason}"
        if face.track_id is not None:
            text = f"#{face.track_id} {text}"
        cv2.putText(out, text, (x, max(12, y - 6)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1, cv2.LINE_AA)
    if not result.faces:
        cv2.putText(out, result.message or result.label, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, _COLOURS[UNKNOWN], 1, cv2.LINE_AA)
    return out
