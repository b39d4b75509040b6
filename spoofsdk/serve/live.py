"""The live view's engine: one model loop over one source, any number of viewers.

The model loop reads the source once and runs the checker on every frame, whoever watches;
each result is published as the same JSON line ``spoofsdk run --json`` prints. While at least
one viewer is connected, an encoder thread draws the newest result on the newest frame and
JPEG-encodes it once for all of them; frames that arrive while it is busy are skipped, never
queued, so a slow viewer or a slow encoder cannot slow the model loop or make memory grow.
Viewers wait on a notification and always get the newest frame (a slow one skips frames).
A viewer arriving between frames gets the newest frame drawn at once, and a source that ends
has its last frame drawn even with nobody watching, so it can be shown afterwards.

Nothing that happens to a viewer reaches the model loop, and the model loop does not stop on
a bad frame (the checker reports it ``unknown``) nor on a failing source: it reports the
error in :meth:`LiveHub.status` and reopens the source after ``reopen_delay`` seconds
(a camera that was unplugged comes back; a finished video file restarts only with ``loop``).
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import cv2
import numpy as np

from ..results import FrameResult, draw_result
from ..sources import Frame

log = logging.getLogger("spoofsdk.serve")

__all__ = ["LiveHub", "EncodedFrame", "annotate"]

_BAR = (32, 32, 32)
_TEXT = (240, 240, 240)


@dataclass(frozen=True)
class EncodedFrame:
    seq: int
    """The model loop's frame counter this picture belongs to."""
    jpeg: bytes
    captured: float
    """Wall-clock time (``time.time()``) at which the source delivered the frame."""


def annotate(image: np.ndarray, result: FrameResult, model_name: str, fps: float) -> np.ndarray:
    """The live view's picture: boxes, label, score, reason/message per face, plus a bar with model and fps."""
    canvas = draw_result(image, result)
    for face in result.faces:
        if face.box is None or not face.message:
            continue
        x, y, w, h = face.box
        cv2.putText(canvas, face.message[:60], (x, y + h + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 200, 230), 1, cv2.LINE_AA)
    bar = f"{model_name}  {fps:4.1f} fps  frame {result.frame if result.frame is not None else '-'}  {result.label}"
    cv2.rectangle(canvas, (0, canvas.shape[0] - 22), (canvas.shape[1], canvas.shape[0]), _BAR, -1)
    cv2.putText(canvas, bar, (6, canvas.shape[0] - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.45, _TEXT, 1, cv2.LINE_AA)
    return canvas


class LiveHub:
    """Runs ``checker`` over the frames of ``open_source()`` in a thread and publishes results and pictures.

    Args:
        checker: a :class:`~spoofsdk.checker.LivenessChecker` (used by this hub's thread only).
        open_source: returns a fresh iterable of :class:`~spoofsdk.sources.Frame` (or arrays);
            called again to reopen after an error, or at the end with ``loop``.
        pace_fps: deliver at most this many frames per second (files play in real time rather
            than as fast as the model can go); None for live cameras, which pace themselves.
        loop: start the source again when it ends (a video file or image folder on repeat).
        jpeg_quality: JPEG quality of the stream (0..100).
        history: how many recent per-frame JSON events and decisions to keep.
        reopen_delay: seconds to wait before reopening a source that failed.
    """

    def __init__(
        self,
        checker: Any,
        open_source: Callable[[], Iterable[Any]],
        *,
        model_name: str | None = None,
        pace_fps: float | None = None,
        loop: bool = False,
        jpeg_quality: int = 80,
        history: int = 50,
        reopen_delay: float = 2.0,
    ) -> None:
        self.checker = checker
        self._open_source = open_source
        self.model_name = model_name or getattr(getattr(checker, "info", None), "name", "model")
        self.pace_fps = pace_fps
        self.loop = loop
        self.jpeg_quality = int(jpeg_quality)
        self.reopen_delay = float(reopen_delay)

        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._listeners: list[Callable[[], None]] = []

        # Model loop state (written by the model thread under _lock).
        self.frames = 0
        self.source_state = "starting"
        self.source_error: str | None = None
        self.source_restarts = 0
        self._frame_times: collections.deque[float] = collections.deque(maxlen=60)
        self._events: collections.deque[tuple[int, str]] = collections.deque(maxlen=history)
        self._decisions: collections.deque[dict[str, Any]] = collections.deque(maxlen=history)
        self._captured = 0.0
        self._next_at: float | None = None  # when the next paced frame is due (kept across a looping source's passes)

        # Encoder state.
        self._viewers = 0
        self._pending: tuple[int, np.ndarray, FrameResult, float] | None = None
        self._pending_cond = threading.Condition()
        self._picture: EncodedFrame | None = None
        self.encoded = 0
        # The newest frame that has an image (a bad frame has none), kept so that a viewer who
        # arrives between frames, or after the source ended, can have it drawn without waiting
        # for a next frame that may never come. One reference to a frame the loop already made.
        self._latest: tuple[int, np.ndarray, FrameResult, float] | None = None
        self._queued = 0  # highest seq handed to the encoder: no frame is drawn twice
        self._drawn = 0  # highest seq the encoder has finished with (drawn, or failed to draw)

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> "LiveHub":
        for target, name in ((self._model_loop, "spoofsdk-model-loop"), (self._encoder_loop, "spoofsdk-encoder")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        with self._pending_cond:
            self._pending_cond.notify_all()
        for thread in self._threads:
            thread.join(timeout)

    @property
    def running(self) -> bool:
        return bool(self._threads) and self._threads[0].is_alive()

    def add_listener(self, callback: Callable[[], None]) -> None:
        """``callback()`` is called (from the hub's threads) after each new result and each new picture."""
        self._listeners.append(callback)

    def _notify(self) -> None:
        for callback in list(self._listeners):
            try:
                callback()
            except Exception:  # a closed event loop must not stop the model loop
                log.debug("listener failed", exc_info=True)

    # -- viewers ----------------------------------------------------------------------------
    def viewer_joined(self) -> None:
        with self._pending_cond:
            self._viewers += 1
            self._queue_latest()

    def viewer_left(self) -> None:
        with self._pending_cond:
            self._viewers = max(0, self._viewers - 1)

    @property
    def viewers(self) -> int:
        return self._viewers

    # -- what viewers read ------------------------------------------------------------------
    @property
    def picture(self) -> EncodedFrame | None:
        return self._picture

    @property
    def settled(self) -> bool:
        """True once the source has ended for good and its last frame (if it had an image) has been drawn.

        Nothing newer will come: a viewer holding :attr:`picture` has the final one.
        """
        if self.source_state != "ended":
            return False
        latest = self._latest
        return latest is None or self._drawn >= latest[0]

    def events_after(self, seq: int) -> list[tuple[int, str]]:
        """Per-frame JSON events newer than ``seq`` (at most ``history`` of them)."""
        with self._lock:
            return [e for e in self._events if e[0] > seq]

    @property
    def last_seq(self) -> int:
        with self._lock:
            return self._events[-1][0] if self._events else 0

    def decisions(self) -> list[dict[str, Any]]:
        """Recent decisions, newest first: one entry per run of frames with the same label and reason."""
        with self._lock:
            return [{k: v for k, v in d.items() if k != "key"} for d in reversed(self._decisions)]

    def fps(self) -> float:
        with self._lock:
            times = list(self._frame_times)
        if len(times) < 2 or times[-1] <= times[0]:
            return 0.0
        return (len(times) - 1) / (times[-1] - times[0])

    def status(self) -> dict[str, Any]:
        return {
            "model": self.model_name,
            "frames": self.frames,
            "fps": round(self.fps(), 2),
            "viewers": self._viewers,
            "source": self.source_state,
            "source_error": self.source_error,
            "source_restarts": self.source_restarts,
            "encoded": self.encoded,
            "running": self.running,
        }

    # -- model loop -------------------------------------------------------------------------
    def _paced(self, source: Iterable[Any]) -> Iterator[Any]:
        # The clock carries over from the previous pass of a looping source: restarting it at each
        # reopen let the first frame of every pass through at once (3 looped images at --fps 10 ran at 15).
        next_at = self._next_at if self._next_at is not None else time.monotonic()
        for item in source:
            if self._stop.is_set():
                return
            if self.pace_fps:  # read every frame: the rate may be changed while running
                interval = 1.0 / self.pace_fps
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                # Never try to catch up more than one frame after a stall.
                next_at = max(next_at + interval, time.monotonic() - interval)
            else:
                next_at = time.monotonic()
            self._next_at = next_at
            self._captured = time.time()
            yield item

    def _model_loop(self) -> None:
        while not self._stop.is_set():
            source = None
            try:
                source = self._open_source()
                with self._lock:
                    self.source_state, self.source_error = "running", None
                for frame, result in self.checker.stream_frames(self._paced(source)):
                    self._publish(frame, result, self._captured)
                    if self._stop.is_set():
                        return
                if not self.loop:  # "ended" is final; a looping source is reopened at once and stays "running"
                    with self._lock:
                        self.source_state = "ended"
                    # Draw the last frame even if nobody watches now: /frame.jpg and later viewers
                    # show it, and no frame will come to trigger a drawing later.
                    with self._pending_cond:
                        self._queue_latest()
                    self._notify()
                    log.info("source ended; the server keeps serving the last frame")
                    return
            except Exception as e:  # a failing source (or anything else) must not end the live view
                log.warning("source failed: %s; reopening in %.1f s", e, self.reopen_delay)
                with self._lock:
                    self.source_state, self.source_error = "error", f"{type(e).__name__}: {e}"
                self._stop.wait(self.reopen_delay)
            finally:
                close = getattr(source, "close", None)
                if callable(close):
                    try:
                        close()
                    except Exception:
                        log.debug("closing the source failed", exc_info=True)
            with self._lock:
                self.source_restarts += 1
            self._notify()

    def _publish(self, frame: Frame, result: FrameResult, captured: float) -> None:
        line = result.to_json()
        with self._lock:
            self.frames += 1
            seq = self.frames
            self._frame_times.append(time.monotonic())
            self._events.append((seq, line))
            self._record_decision(seq, result)
        if frame.image is not None:
            with self._pending_cond:
                self._latest = (seq, frame.image, result, captured)
                if self._viewers:
                    self._queue_latest()
        self._notify()

    def _queue_latest(self) -> None:
        """Hand the newest frame to the encoder unless it already has it (call with ``_pending_cond`` held)."""
        latest = self._latest
        if latest is not None and latest[0] > self._queued:
            self._pending = latest
            self._queued = latest[0]
            self._pending_cond.notify()

    def _record_decision(self, seq: int, result: FrameResult) -> None:
        top = result.largest
        key = (result.label, result.reason, top.track_id if top else None)
        last = self._decisions[-1] if self._decisions else None
        if last is not None and last["key"] == key:
            last.update(frames=last["frames"] + 1, last_frame=result.frame, score=result.score, message=result.message)
            return
        self._decisions.append(
            {
                "key": key,
                "label": result.label,
                "reason": result.reason,
                "message": result.message,
                "score": result.score,
                "track_id": key[2],
                "first_frame": result.frame,
                "last_frame": result.frame,
                "frames": 1,
                "time": time.time(),
                "seq": seq,
            }
        )

    # -- encoder ----------------------------------------------------------------------------
    def _encoder_loop(self) -> None:
        params = [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality]
        while not self._stop.is_set():
            with self._pending_cond:
                self._pending_cond.wait_for(lambda: self._pending is not None or self._stop.is_set(), timeout=1.0)
                job, self._pending = self._pending, None
            if job is None:
                continue
            seq, image, result, captured = job
            try:
                canvas = annotate(image, result, self.model_name, self.fps())
                ok, buf = cv2.imencode(".jpg", canvas, params)
            except Exception:  # a frame that cannot be drawn is skipped; the next one is tried
                log.debug("encoding frame %d failed", seq, exc_info=True)
                ok = False
            if ok:
                self._picture = EncodedFrame(seq, buf.tobytes(), captured)
                self.encoded += 1
            # Set after the picture: whoever sees `settled` also sees the final picture. Also on a
            # failure, so that those waiting for this frame stop waiting.
            self._drawn = max(self._drawn, seq)
            self._notify()

