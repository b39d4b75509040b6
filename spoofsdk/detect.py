"""Face detectors: a small protocol and two OpenCV implementations.

- :class:`YuNetDetector` (the default) runs the YuNet ONNX model through
  ``cv2.FaceDetectorYN``. The model ships inside the package
  (``spoofsdk/assets/face_detection_yunet_2023mar.onnx``, 232 kB, Apache-2.0, licence file
  beside it); another file can be given, or set with ``$SPOOFSDK_YUNET_MODEL``.
- :class:`HaarDetector` uses the frontal-face Haar cascade that ships inside
  opencv-python-headless: less accurate (no face on 18 of the 2,563 NUAA frames where YuNet finds all)
  and slower; kept as an option.

Both detect on a copy of the frame downscaled so that its longer side is at most
``detect_size`` pixels and map the boxes back: detection cost falls with the square of the
scale, and the crop itself is still cut from the full-resolution frame.

Any object with a ``detect(frame) -> list[Detection]`` method can be passed to the checker.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import cv2
import numpy as np

from .crop import MAX_BOX_TO_FRAME, as_bgr_uint8, overlaps_frame
from .errors import DetectorError

__all__ = ["Detection", "FaceDetector", "usable_detections", "HaarDetector", "YuNetDetector", "make_detector", "YUNET_ENV", "YUNET_MODEL", "DEFAULT_DETECTOR"]

log = logging.getLogger(__name__)

YUNET_ENV = "SPOOFSDK_YUNET_MODEL"
YUNET_MODEL = Path(__file__).resolve().parent / "assets" / "face_detection_yunet_2023mar.onnx"
"""The YuNet model bundled with spoofsdk (ShiqiYu/libfacedetection.train, 2023mar; Apache-2.0)."""
YUNET_SHA256 = "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4"
DEFAULT_DETECTOR = "yunet"


@dataclass(frozen=True)
class Detection:
    """One face: box ``(x, y, w, h)`` in frame pixels, detector confidence, optional 5 landmarks."""

    box: tuple[float, float, float, float]
    score: float
    landmarks: tuple[tuple[float, float], ...] | None = None

    @property
    def area(self) -> float:
        return self.box[2] * self.box[3]


def usable_detections(dets: object, frame_shape: tuple[int, ...]) -> list[Detection]:
    """The faces of a detector's answer that can be cropped, largest first.

    A detector that breaks its contract (not a list of :class:`Detection`, a box that is not four
    numbers, a score that is not a number, landmarks that are not (x, y) pairs) raises :class:`DetectorError`: the caller's frame
    is then ``unknown``, never scored. Boxes that are well formed but hold no face of this frame
    (non-finite, at most 1 px wide or high, wholly outside it) are dropped, as a detector's noise.
    """
    if not isinstance(dets, (list, tuple)):
        raise DetectorError(f"the detector must return a list of Detection, got {type(dets).__name__}")
    good = []
    for d in dets:
        if not isinstance(d, Detection):
            raise DetectorError(f"the detector must return Detection objects, got {type(d).__name__}")
        try:
            box = np.asarray(d.box, dtype=np.float64)
            marks = None if d.landmarks is None else np.asarray(d.landmarks, dtype=np.float64)
            score = float(d.score)
        except (TypeError, ValueError) as e:
            raise DetectorError(f"detection {d!r} is not numeric: {e}") from None
        if box.shape != (4,):
            raise DetectorError(f"a detection box must be (x, y, w, h), got {d.box!r}")
        if marks is not None and (marks.ndim != 2 or marks.shape[1] != 2):
            raise DetectorError(f"detection landmarks must be (x, y) pairs, got {d.landmarks!r}")
        x, y, w, h = box
        with np.errstate(over="ignore"):  # a box of 1e308: its far edge overflows, and is dropped as non-finite
            far = (x + w, y + h)
        if not (np.isfinite(box).all() and np.isfinite(far).all() and w > 1 and h > 1 and overlaps_frame(box, frame_shape)):
            continue
        # Handed on as plain floats: what passed as numbers here ("12", numpy scalars) stays numbers downstream.
        good.append(Detection(tuple(float(v) for v in box), score,  # type: ignore[arg-type]
                              None if marks is None else tuple((float(a), float(b)) for a, b in marks)))
    return _sorted(good)


@runtime_checkable
class FaceDetector(Protocol):
    def detect(self, frame: np.ndarray) -> list[Detection]:
        """Faces in a BGR uint8 frame, largest first."""
        ...


def _downscale(frame: np.ndarray, detect_size: int) -> tuple[np.ndarray, float]:
    h, w = frame.shape[:2]
    factor = min(1.0, float(detect_size) / max(h, w))
    if factor >= 1.0:
        return frame, 1.0
    small = cv2.resize(frame, (max(1, round(w * factor)), max(1, round(h * factor))), interpolation=cv2.INTER_AREA)
    return small, factor


def _sorted(dets: list[Detection]) -> list[Detection]:
    return sorted(dets, key=lambda d: d.area, reverse=True)


class HaarDetector:
    """OpenCV's frontal-face Haar cascade (bundled with OpenCV)."""

    name = "haar"

    # scale_factor 1.2 (OpenCV's default is 1.1): measured on 214 NUAA frames against YuNet boxes
    # (IoU > 0.4), 1.2 found 212 faces vs 213 at 1.1, with 1 false box vs 7, in about half the time.
    # border_retry: the cascade needs some background around a face; a face that fills the frame
    # (a phone held close, a tight crop) was found on 17 of 300 webcam close-ups without
    # it, 204/300 with a black border of 25 % of the longer side. The retry runs only on frames
    # where nothing was found, so frames with a face cost no more.
    def __init__(self, detect_size: int = 320, min_face: int = 24, min_neighbors: int = 5, scale_factor: float = 1.2,
                 border_retry: float = 0.25):
        path = Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"
        self._cascade = cv2.CascadeClassifier(str(path))
        if self._cascade.empty():
            raise DetectorError(f"cannot load the Haar cascade from {path}")
        self.detect_size = int(detect_size)
        self.min_face = int(min_face)
        self.min_neighbors = int(min_neighbors)
        self.scale_factor = float(scale_factor)
        self.border_retry = float(border_retry)

    def _run(self, gray: np.ndarray) -> list[tuple[tuple[float, float, float, float], float]]:
        boxes, _, weights = self._cascade.detectMultiScale3(
            gray,
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=(self.min_face, self.min_face),
            outputRejectLevels=True,
        )
        # The cascade's level weight is an unbounded margin; squash it to (0, 1) for a comparable score.
        return [
            ((float(x), float(y), float(w), float(h)), float(1.0 / (1.0 + np.exp(-float(weight)))))
            for (x, y, w, h), weight in zip(np.asarray(boxes).reshape(-1, 4), np.asarray(weights).ravel())
        ]

    def detect(self, frame: np.ndarray) -> list[Detection]:
        frame = as_bgr_uint8(frame)
        small, factor = _downscale(frame, self.detect_size)
        gray = cv2.equalizeHist(cv2.cvtColor(small, cv2.COLOR_BGR2GRAY))
        found = self._run(gray)
        pad = 0
        if not found and self.border_retry > 0:
            pad = int(round(self.border_retry * max(gray.shape)))
            found = self._run(cv2.copyMakeBorder(gray, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0))
            if found:
                log.debug("haar: face found only with a %d px border (it fills the frame)", pad)
        out = [
            Detection(box=((x - pad) / factor, (y - pad) / factor, w / factor, h / factor), score=score)
            for (x, y, w, h), score in found
        ]
        return _sorted(out)


class YuNetDetector:
    """YuNet (``cv2.FaceDetectorYN``): more accurate than Haar, handles pose, gives landmarks."""

    name = "yunet"

    def __init__(
        self,
        model_path: str | os.PathLike | None = None,
        detect_size: int = 320,
        score_threshold: float = 0.7,
        nms_threshold: float = 0.3,
        top_k: int = 50,
    ):
        model_path = model_path or os.environ.get(YUNET_ENV) or YUNET_MODEL
        path = Path(model_path)
        if not path.is_file():
            raise DetectorError(f"YuNet model file not found: {path}")
        if path == YUNET_MODEL:
            import hashlib

            if hashlib.sha256(path.read_bytes()).hexdigest() != YUNET_SHA256:
                raise DetectorError(f"the bundled YuNet model {path} fails its SHA-256 check: the file is corrupted or was modified")
        try:
            self._net = cv2.FaceDetectorYN.create(str(path), "", (320, 320), score_threshold, nms_threshold, top_k)
        except cv2.error as e:
            raise DetectorError(f"cannot load YuNet model {path}: {e}") from e
        self.model_path = path
        log.debug("YuNet detector from %s (detect_size %d)", path, detect_size)
        self.detect_size = int(detect_size)
        self._input_size: tuple[int, int] | None = None

    def detect(self, frame: np.ndarray) -> list[Detection]:
        frame = as_bgr_uint8(frame)
        small, factor = _downscale(frame, self.detect_size)
        size = (small.shape[1], small.shape[0])
        if size != self._input_size:
            self._net.setInputSize(size)
            self._input_size = size
        _, faces = self._net.detect(small)
        frame_h, frame_w = frame.shape[:2]
        out = []
        for row in faces if faces is not None else []:
            if not np.all(np.isfinite(row[:15])):
                continue
            x, y, w, h = (float(v) / factor for v in row[:4])
            marks = tuple((float(row[4 + 2 * i]) / factor, float(row[5 + 2 * i]) / factor) for i in range(5))
            # A face of this frame overlaps the frame and is no larger than crop_face accepts: on degenerate
            # frames (one row, say) YuNet has returned boxes millions of pixels wide. A face partly outside is
            # kept: the quality gate reports it (cut by the border), which tells the user what to do.
            if w > 1 and h > 1 and overlaps_frame((x, y, w, h), frame.shape) and max(w, h) <= MAX_BOX_TO_FRAME * max(frame_h, frame_w):
                out.append(Detection(box=(x, y, w, h), score=float(row[14]), landmarks=marks))
        return _sorted(out)


def make_detector(name: str = DEFAULT_DETECTOR, model_path: str | os.PathLike | None = None, **kwargs) -> FaceDetector:
    """Build a detector by name: ``yunet`` (default; ``model_path``, else $SPOOFSDK_YUNET_MODEL, else the bundled file) or ``haar``."""
    if name == "haar":
        return HaarDetector(**kwargs)
    if name == "yunet":
        return YuNetDetector(model_path, **kwargs)
    raise DetectorError(f"unknown detector {name!r}: use 'haar' or 'yunet'")
