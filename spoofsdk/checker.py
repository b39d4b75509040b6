"""`LivenessChecker`: one model, one detector, quality gates; image mode and stream mode.

Image mode (:meth:`LivenessChecker.check`) treats every image on its own: detect every face,
crop it, gate it on quality, score the faces that pass in one batch, and label each face
``real`` (score >= threshold) or ``spoof``; a refused face is ``unknown`` with the reason.

Stream mode (:meth:`LivenessChecker.feed`, :meth:`LivenessChecker.stream`) adds time: faces
are tracked, full detection runs every ``detect_every`` frames (or at once when a track is
lost or a face is missing), template matching moves the boxes in between, and each track's
label comes from its smoothed, hysteresis-guarded decision (see :mod:`spoofsdk.track`).
A frame that cannot be processed gives an ``unknown`` result; the stream never stops on it.

A checker holds stream state (its tracks) and one onnxruntime session: use one checker per
thread and per stream.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any, Iterable, Iterator, Mapping, Sequence

import cv2
import numpy as np

from .crop import as_bgr_uint8
from .detect import DEFAULT_DETECTOR, Detection, FaceDetector, make_detector, usable_detections
from .errors import DetectorError, ImageError, ModelError, SpoofSDKError
from .model import ModelInfo, SpoofModel, load_model
from .quality import QualityConfig, assess, face_inside, measure, quality_config
from .results import REAL, SPOOF, UNKNOWN, FaceResult, FrameResult, Reason
from .sources import DEFAULT_MAX_IMAGE_PIXELS, Frame, read_image
from .track import IoUTracker, SmoothingConfig, follow_box

__all__ = ["LivenessChecker"]

log = logging.getLogger(__name__)

# A face crop given to check_face (verify=True) is refused as a full frame when the largest face found
# covers less than this share of it. Measured with YuNet on 150 random images each: NUAA full
# frames 3-31 %; gc535 and webcam tight crops 60-122 % (the box may exceed a tight crop). That is for
# models whose crop is the face box (crop_scale 1.0): a crop with more context around the face holds
# a smaller face, so the share is divided by the square of the checker's largest crop_scale
# (EdgeNet's 1.5x crops: faces cover 0.35 of them, the limit is 0.18).
MIN_CROP_FACE_SHARE = 0.40

# Tracking works on a grey copy whose longer side is at most this: template matching on it costs ~1 ms.
TRACK_SIZE = 320


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


class LivenessChecker:
    """Face liveness for images and streams.

    Args:
        model: an embedded model name (``None`` = the embedded default), a path to a spoofsdk
            ONNX file, its bytes, or a loaded :class:`~spoofsdk.model.SpoofModel`; or a list of
            these, an ensemble: each model crops the face by its own metadata and the face's
            score is the mean of their P(live) (e.g. the MiniFASNet V2 + V1SE pair).
        precision: ``fp32``/``fp16``/``int8``: which embedded variant to load (or a check on a file).
        threads: onnxruntime intra-op threads (None: onnxruntime's default).
        providers: onnxruntime execution providers (default CPU).
        detector: ``"yunet"`` (default), ``"haar"`` or any object with ``detect(frame) -> list[Detection]``.
        yunet_model: another YuNet ONNX file (default: $SPOOFSDK_YUNET_MODEL, else the one bundled in spoofsdk).
        threshold: decision threshold on P(live), overriding the model's calibrated one (for an
            ensemble, the default is the mean of its models' thresholds).
        max_faces: score only the largest N faces (None: all).
        quality: a :class:`~spoofsdk.quality.QualityConfig`, a dict of overrides, or False to switch the gates off.
        smoothing: a :class:`~spoofsdk.track.SmoothingConfig` for stream mode.
        detect_every: in stream mode, run full detection every N frames (1 = every frame).
        detect_size: longer side of the downscaled copy the detector runs on.
        spin_wait: let onnxruntime threads spin between calls (off: saves CPU in camera loops).
        max_image_pixels: larger inputs are refused with :class:`ImageError`.
    """

    def __init__(
        self,
        model: str | os.PathLike | bytes | SpoofModel | None = None,
        *,
        precision: str | None = None,
        threads: int | None = None,
        providers: Sequence[str] | None = None,
        detector: str | FaceDetector | None = None,
        yunet_model: str | os.PathLike | None = None,
        threshold: float | None = None,
        max_faces: int | None = None,
        quality: QualityConfig | Mapping[str, Any] | bool | None = None,
        smoothing: SmoothingConfig | None = None,
        detect_every: int = 3,
        detect_size: int = 320,
        spin_wait: bool = False,
        max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
    ) -> None:
        members = list(model) if isinstance(model, (list, tuple)) else [model]
        if not members:
            raise ValueError("model list is empty")
        self.models: list[SpoofModel] = [
            m if isinstance(m, SpoofModel) else load_model(m, precision=precision, threads=threads, providers=providers, spin_wait=spin_wait)
            for m in members
        ]
        self.model = self.models[0]  # the first model's metadata describes the checker (info)
        if threshold is not None and not 0.0 < float(threshold) < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        self.threshold = float(threshold) if threshold is not None else float(np.mean([m.threshold for m in self.models]))
        for m in self.models:
            info = m.info
            log.debug(
                "model %s: %s %s, input %dx%d, crop_scale %g, crop_policy %s, own threshold %.4f",
                m.source, info.name, info.precision, info.input_size, info.input_size, info.crop_scale,
                getattr(info, "crop_policy", "pad"), m.threshold,
            )
        log.debug("threshold %.4f%s", self.threshold, "" if threshold is None else " (overridden)")
        if max_faces is not None and int(max_faces) < 1:
            raise ValueError(f"max_faces must be at least 1, got {max_faces}")
        self.max_faces = int(max_faces) if max_faces is not None else None
        self.quality = quality_config(quality)
        self.detector = self._make_detector(detector, yunet_model, detect_size)
        self.tracker = IoUTracker(smoothing)
        self.detect_every = max(1, int(detect_every))
        self.max_image_pixels = int(max_image_pixels)
        self._warned_non_finite = False
        self.reset()

    @staticmethod
    def _make_detector(detector: Any, yunet_model: Any, detect_size: int) -> FaceDetector:
        if detector is None:
            detector = DEFAULT_DETECTOR
        if isinstance(detector, str):
            if detector == "yunet":
                return make_detector("yunet", yunet_model, detect_size=detect_size)
            return make_detector(detector, detect_size=detect_size)
        if not callable(getattr(detector, "detect", None)):
            raise DetectorError(f"detector must be 'haar', 'yunet' or an object with a detect(frame) method, got {detector!r}")
        return detector

    @property
    def info(self) -> ModelInfo:
        return self.model.info

    @property
    def smoothing(self) -> SmoothingConfig:
        return self.tracker.config

    def reset(self) -> None:
        """Forget all tracks (start a new stream)."""
        self.tracker.reset()
        self._since_detect = 0
        self._last_t: float | None = None
        self._t0 = time.monotonic()
        self._index = 0

    # -- shared steps -------------------------------------------------------------------------
    def _frame(self, image: Any) -> np.ndarray:
        # Check the size before any conversion copies a huge array.
        shape = getattr(image, "shape", None)
        if isinstance(shape, tuple) and len(shape) >= 2 and all(isinstance(v, int) for v in shape[:2]):
            if shape[0] * shape[1] > self.max_image_pixels:
                raise ImageError(
                    f"image of {shape[1]}x{shape[0]} px exceeds the limit of {self.max_image_pixels} pixels; downscale it first"
                )
        return as_bgr_uint8(image)

    def _detect(self, frame: np.ndarray) -> list[Detection]:
        try:
            dets = self.detector.detect(frame)
        except SpoofSDKError:
            raise
        except Exception as e:  # a third-party detector or cv2 failing is a detector problem, typed as such
            raise DetectorError(f"face detection failed: {e}") from e
        # A detector bug (a third-party one) must reach the caller typed, never as a crash or a crop of nothing.
        good = usable_detections(dets, frame.shape)
        return good[: self.max_faces] if self.max_faces else good

    def _faces(
        self,
        frame: np.ndarray,
        boxes: Sequence[Sequence[float]],
        det_scores: Sequence[float | None],
        landmarks: Sequence[Any] | None = None,
    ) -> list[FaceResult]:
        """Crop, gate and score faces; labels are the image-mode ones (score vs threshold)."""
        results: list[FaceResult] = []
        crops: list[list[np.ndarray]] = []  # per face, one crop per model
        scored: list[FaceResult] = []
        marks_per_face = landmarks if landmarks is not None else [None] * len(boxes)
        for box, det_score, marks in zip(boxes, det_scores, marks_per_face):
            start = time.perf_counter()
            face = FaceResult(
                label=UNKNOWN,
                box=tuple(int(round(v)) for v in box),  # type: ignore[arg-type]
                detector_score=det_score,
                threshold=self.threshold,
            )
            results.append(face)
            figures = measure(frame, box, 0.0, marks)
            try:
                # Each model crops by the policy it was trained with (pad: black where its context
                # square passes the frame edge; shift_cap: shifted and capped, never padded).
                face_crops = [m.crop_face(frame, box) for m in self.models]
            except ImageError as e:
                face.reason, face.message = Reason.CUT_BY_BORDER, str(e)
                continue
            figures["padded"] = max(c.padded_fraction for c in face_crops)
            # A face inside the frame that fills it (held close, a tight crop) is judged on that crop,
            # however much of its context is padding; only a face that is cut is refused.
            figures["face_inside"] = float(face_inside(figures, self.quality))
            if figures["padded"] > 0 and figures["face_inside"]:
                log.debug("face %s fills the frame: %.0f%% of its crop is padding", face.box, 100 * figures["padded"])
            face.timings["crop"] = _ms(start)
            start = time.perf_counter()
            report = assess(figures, self.quality)
            face.quality = report.figures
            face.timings["quality"] = _ms(start)
            if report.ok:
                crops.append([c.image for c in face_crops])
                scored.append(face)
            else:
                face.reason, face.message = report.reason, report.message
        self._score(crops, scored)
        return results

    def _score(self, crops: list[list[np.ndarray]], faces: list[FaceResult]) -> None:
        """Score faces given one crop per model each; an ensemble's score is the mean P(live)."""
        if not crops:
            return
        start = time.perf_counter()
        scores = np.mean([m.score_crops([c[i] for c in crops]) for i, m in enumerate(self.models)], axis=0)
        per_face = _ms(start) / len(crops)
        for face, score in zip(faces, scores):
            face.timings["model"] = per_face
            if not np.isfinite(score):  # the model gave no number for this face: an error, not an attack
                face.reason = Reason.ERROR
                face.message = "the model's output for this face is not a number (broken input or numeric overflow)"
                # Once per checker: a broken model in a 30 fps stream would otherwise log every frame.
                (log.debug if self._warned_non_finite else log.warning)("%s: %s", self.model.source, face.message)
                self._warned_non_finite = True
                continue
            face.score = float(score)
            face.label = REAL if score >= self.threshold else SPOOF

    # -- image mode -------------------------------------------------------------------------
    def check(self, image: np.ndarray | str | os.PathLike) -> FrameResult:
        """Every face of one image (BGR array or file path), judged on its own.

        Raises :class:`ImageError` when the image cannot be read or has an unsupported
        shape/dtype. An image without a face gives label ``unknown``, reason ``no_face``.
        """
        start = time.perf_counter()
        path = None
        if isinstance(image, (str, os.PathLike)):
            path = str(image)
            image = read_image(image, self.max_image_pixels)
        frame = self._frame(image)
        t_detect = time.perf_counter()
        dets = self._detect(frame)
        t_faces = time.perf_counter()
        faces = self._faces(frame, [d.box for d in dets], [d.score for d in dets], [d.landmarks for d in dets])
        timings = {"detect": (t_faces - t_detect) * 1000.0, "faces": _ms(t_faces), "total": _ms(start)}
        return FrameResult.from_faces(faces, path=path, image_size=(frame.shape[1], frame.shape[0]), timings=timings)

    def check_face(self, crop: np.ndarray | str | os.PathLike, verify: bool = True) -> FaceResult:
        """One already-cropped face (BGR array or file path), resized to the model input.

        With ``verify`` (the default), the detector first looks at the image, so that a full frame
        given as a crop is never scored whole (that judges the room, not the face: a live face drops
        from 0.93 to 0.35):

        - the largest face found covers less than :attr:`min_crop_face_share` of the image
          (:data:`MIN_CROP_FACE_SHARE` over the square of the models' largest ``crop_scale``): it is a
          full frame, refused as ``unknown`` / ``not_a_crop``, no score;
        - no face found: detectors miss some tight crops (YuNet up to a quarter of one webcam's), so
          the image is scored whole and the score kept (to measure with), but it is ``unknown`` /
          ``no_face``, never ``real`` or ``spoof``: without a face there is no decision to make
          (a rotated full frame scored whole came back ``real``);
        - ``quality["face_share"]`` is the share of the image the largest face covers (0 without one).

        With ``verify=False`` nothing is detected: the image is scored as given, for callers whose
        crops come from their own detector. The quality gates that apply to a crop (size, blur,
        exposure) apply either way.
        """
        start = time.perf_counter()
        if isinstance(crop, (str, os.PathLike)):
            crop = read_image(crop, self.max_image_pixels)
        image = self._frame(crop)
        share = self.crop_face_share(image) if verify else None
        limit = self.min_crop_face_share
        if share is not None and share < limit:
            return FaceResult(
                label=UNKNOWN, reason=Reason.NOT_A_CROP, threshold=self.threshold, quality={"face_share": share},
                message=f"not a face crop: the face covers {share:.0%} of the image (a crop: over {limit:.0%}); "
                "check the whole image instead (spoofsdk run without --crops) to detect and crop it",
                timings={"total": _ms(start)},
            )
        report = assess(measure(image), self.quality)
        face = FaceResult(label=UNKNOWN, quality=report.figures, threshold=self.threshold)
        if verify:
            face.quality["face_share"] = 0.0 if share is None else share
        face.timings["quality"] = _ms(start)
        if not report.ok:
            face.reason, face.message = report.reason, report.message
            return face
        self._score([[m.fit_crop(image) for m in self.models]], [face])
        if verify and share is None and face.score is not None:
            face.label, face.reason = UNKNOWN, Reason.NO_FACE
            face.message = ("no face found in the image: scored whole as the crop it was given as (score kept), "
                            "but without a face it is neither real nor spoof")
        return face

    @property
    def min_crop_face_share(self) -> float:
        """The share of an image the largest face must cover for :meth:`check_face` to take it as a crop."""
        return MIN_CROP_FACE_SHARE / max(1.0, max(m.info.crop_scale for m in self.models)) ** 2

    def crop_face_share(self, image: np.ndarray) -> float | None:
        """Share of the image covered by the largest face the detector finds in it; None without a face."""
        frame = self._frame(image)
        dets = self._detect(frame)
        if not dets:
            return None
        x, y, w, h = dets[0].box
        return float(w * h) / float(frame.shape[0] * frame.shape[1])

    def check_crop_file(self, path: str | os.PathLike, verify: bool = True) -> FrameResult:
        """:meth:`check_face` on a file, wrapped as a frame result (what ``spoofsdk run --crops`` prints)."""
        start = time.perf_counter()
        face = self.check_face(path, verify=verify)
        if face.reason == Reason.NOT_A_CROP:
            log.debug("%s: not a crop (face share %.2f)", path, face.quality["face_share"])
        return FrameResult.from_faces([face], path=str(path), timings={"total": _ms(start)})

    # -- stream mode ------------------------------------------------------------------------
    def feed(self, frame: Any, t: float | None = None, index: int | None = None) -> FrameResult:
        """One frame of a stream at time ``t`` (seconds; default: the wall clock since :meth:`reset`).

        Labels come from the face tracks: ``real`` only after consistent evidence. A bad
        frame gives an ``unknown`` result (reason ``bad_image``) and leaves the tracks as they are.
        """
        start = time.perf_counter()
        index = self._index if index is None else int(index)
        self._index = index + 1
        if t is None:
            t = time.monotonic() - self._t0
        t = float(t)
        try:
            image = self._frame(frame)
        except ImageError as e:
            return FrameResult.failed(Reason.BAD_IMAGE, str(e), frame=index, t=t)
        try:
            return self._feed_image(image, t, index, start)
        except (SpoofSDKError, cv2.error) as e:
            # A detector or model failure on one frame must not end the stream: that frame is
            # unknown (never real), no track gains evidence from it, and the next frame retries.
            # A model that failed on the faces of this frame also ends their streaks, as a
            # non-finite answer does (_feed_image): a broken model never keeps a face `real`.
            if isinstance(e, ModelError):
                for tr in self.tracker.tracks:
                    if tr.last_seen == t:
                        tr.discard_evidence()
            return FrameResult.failed(Reason.ERROR, f"{type(e).__name__}: {e}", frame=index, t=t)

    def _feed_image(self, image: np.ndarray, t: float, index: int, start: float) -> FrameResult:
        height, width = image.shape[:2]
        factor = min(1.0, TRACK_SIZE / max(height, width))
        small = cv2.resize(image, (max(1, round(width * factor)), max(1, round(height * factor))), interpolation=cv2.INTER_AREA) if factor < 1 else image
        grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)

        stage_start = time.perf_counter()
        self.tracker.tick(t)
        self.tracker.forget(t)
        previous = [tr for tr in self.tracker.tracks if tr.last_seen == self._last_t]
        followed: list[tuple[float, float, float, float]] | None = None
        # Follow by template matching only when every live track was seen on the previous
        # frame and a full detection is not due; a missing face triggers detection at once.
        if previous and len(previous) == len(self.tracker.tracks) and self._since_detect < self.detect_every - 1:
            followed = []
            for tr in previous:
                box = follow_box(grey, tr.template, tr.box, factor) if tr.template is not None else None
                if box is None:
                    followed = None
                    break
                followed.append(box)
        if followed is not None:
            tracks = previous
            for tr, box in zip(tracks, followed):
                tr.box, tr.last_seen = box, t
                tr.hits += 1
            boxes: list[Any] = followed
            det_scores: list[float | None] = [None] * len(boxes)
            landmarks: list[Any] | None = None
            self._since_detect += 1
            stage = "track"
        else:
            dets = self._detect(image)
            boxes, det_scores = [d.box for d in dets], [d.score for d in dets]
            landmarks = [d.landmarks for d in dets]
            tracks = self.tracker.update(boxes, t)
            self._since_detect = 0
            stage = "detect"
        stage_ms = _ms(stage_start)
        for tr in tracks:
            tr.template = _template(grey, tr.box, factor)
        self._last_t = t

        faces_start = time.perf_counter()
        faces = self._faces(image, boxes, det_scores, landmarks)
        for face, tr in zip(faces, tracks):
            gated = face.score is None
            if face.reason == Reason.ERROR:
                tr.discard_evidence()  # a broken answer in the middle of a streak: the face earns `real` again
            label, reason, message = tr.observe(face.score, t, self.threshold, self.tracker.config)
            face.track_id, face.smoothed_score = tr.id, tr.ema
            if not gated:
                face.label, face.reason, face.message = label, reason, message
        timings = {stage: stage_ms, "faces": _ms(faces_start), "total": _ms(start)}
        return FrameResult.from_faces(faces, frame=index, t=t, image_size=(width, height), timings=timings)

    def stream_frames(self, source: Iterable[Frame] | Iterable[np.ndarray], max_frames: int | None = None) -> Iterator[tuple[Frame, FrameResult]]:
        """Like :meth:`stream`, yielding each source frame with its result (to draw or save them)."""
        self.reset()
        for count, item in enumerate(source):
            if max_frames is not None and count >= max_frames:
                break
            if not isinstance(item, Frame):
                item = Frame(item, count)
            if item.image is None:
                message = item.error or "unreadable frame"
                yield item, FrameResult.failed(Reason.BAD_IMAGE, message, path=item.path, frame=item.index, t=item.t)
                continue
            result = self.feed(item.image, t=item.t, index=item.index)
            result.path = item.path
            yield item, result

    def stream(self, source: Iterable[Frame] | Iterable[np.ndarray], max_frames: int | None = None) -> Iterator[FrameResult]:
        """Results for each frame of a source (see :mod:`spoofsdk.sources`), tracking faces across them.

        Starts a new stream (:meth:`reset`). A frame the source could not read yields an
        ``unknown`` result; a source that fails (camera unplugged, truncated video) raises
        :class:`~spoofsdk.errors.SourceError` after the frames it delivered.
        """
        for _, result in self.stream_frames(source, max_frames):
            yield result

    def __repr__(self) -> str:
        detector = getattr(self.detector, "name", type(self.detector).__name__)
        sources = self.model.source if len(self.models) == 1 else [m.source for m in self.models]
        return f"LivenessChecker(model={sources!r}, detector={detector!r}, threshold={self.threshold})"


def _template(grey: np.ndarray, box: Sequence[float], factor: float) -> np.ndarray | None:
    """The face patch to follow; None (detect next frame) when it is tiny or not wholly inside the frame."""
    x0, y0 = int(round(box[0] * factor)), int(round(box[1] * factor))
    x1, y1 = int(round((box[0] + box[2]) * factor)), int(round((box[1] + box[3]) * factor))
    if x0 < 0 or y0 < 0 or x1 > grey.shape[1] or y1 > grey.shape[0] or x1 - x0 < 4 or y1 - y0 < 4:
        return None
    return grey[y0:y1, x0:x1].copy()
