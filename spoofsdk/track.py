"""Face tracks across frames, and the temporal decision of each track.

In a stream, one frame's score is weak evidence: a printed photo moved in front of the
camera can score high for a frame or two. So each face is followed over time
(:class:`IoUTracker` matches boxes by intersection-over-union) and each :class:`FaceTrack`
turns its per-frame scores into a decision:

- the scores are smoothed by an exponential moving average (EMA);
- ``real`` needs enough consistent evidence: at least ``min_frames`` scored frames in a row
  at or above the threshold, spanning at least ``min_seconds``, *and* the EMA above the
  threshold plus a margin;
- once ``real``, the track stays real until the EMA falls below the threshold minus the
  margin (hysteresis: no flicker around the threshold), or a frame scores below the threshold,
  or no frame has reached the threshold plus the margin for ``min_frames`` scored frames *and*
  ``min_seconds`` (the evidence it took to earn ``real``): the hysteresis bridges a dip, never a
  face whose own frames no longer earn ``real`` (a photo held up in place of a live face, scoring
  just above the threshold, would otherwise ride on the live face's history);
- a frame refused by a quality gate (``unknown``) is not evidence: it neither adds to the
  streak nor moves the EMA, and that frame is reported as ``unknown`` with the gate's reason;
- a score below the threshold resets the streak, so the evidence must be consistent;
- a frame the model could not score (an error, a non-finite output) ends the streak and a ``real``
  decision (:meth:`FaceTrack.discard_evidence`): the face must earn ``real`` again;
- a track missed by the detector on a frame and found again keeps its history, but its next
  ``real`` needs a frame at the ``real`` level after the gap (the face that comes back may be a
  photo put in its place; a live face that scores well is real again on its first frame back);
- a track not seen for its *gap* is forgotten; a face that comes back starts a new track and
  must earn ``real`` again. The gap is ``forget_after`` seconds, or ``gap_frames`` times the
  source's real frame interval when frames arrive slower than that (a slow board, ``--every N``,
  a 1 fps IP camera): a fixed gap shorter than the interval would drop every track between two
  frames and no face could ever turn ``real``. Widening the gap does not weaken the decision:
  a frame scored below the threshold still turns the track ``spoof`` at once.

Between full detections, :func:`follow_box` moves a track's box by template matching on a
small grey copy of the frame, which costs a fraction of a detection.
"""
from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Sequence

import cv2
import numpy as np

from .results import REAL, SPOOF, UNKNOWN, Reason

__all__ = ["SmoothingConfig", "FaceTrack", "IoUTracker", "iou", "follow_box"]

log = logging.getLogger(__name__)

Box = tuple[float, float, float, float]
INTERVAL_WINDOW = 15  # frame intervals the median runs over: robust to one stall, follows a change in a second or two


@dataclass(frozen=True)
class SmoothingConfig:
    """How a track's per-frame scores become its decision. See the module docstring."""

    alpha: float = 0.4
    """EMA weight of the newest score (1.0 = no smoothing)."""
    margin: float = 0.05
    """Hysteresis half-width around the threshold."""
    min_frames: int = 5
    """Scored frames in a row at or above the threshold before a track may turn ``real``."""
    min_seconds: float = 0.3
    """...and the time those frames must span."""
    forget_after: float = 0.5
    """Seconds unseen after which a track is dropped (at least; see ``gap_frames``)."""
    gap_frames: float = 3.0
    """The gap also covers this many frame intervals of the source (0: fixed ``forget_after``)."""
    iou_threshold: float = 0.3
    """Minimum IoU for a detection to continue a track."""

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {self.alpha}")
        if not 0.0 <= self.margin < 0.5:
            raise ValueError(f"margin must be in [0, 0.5), got {self.margin}")
        if self.min_frames < 1 or self.min_seconds < 0 or self.forget_after <= 0 or self.gap_frames < 0:
            raise ValueError("min_frames must be >= 1, min_seconds >= 0, forget_after > 0, gap_frames >= 0")


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two ``(x, y, w, h)`` boxes."""
    ax1, ay1, bx1, by1 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    iw = max(0.0, min(ax1, bx1) - max(a[0], b[0]))
    ih = max(0.0, min(ay1, by1) - max(a[1], b[1]))
    inter = iw * ih
    union = a[2] * a[3] + b[2] * b[3] - inter
    return float(inter / union) if union > 0 else 0.0


@dataclass
class FaceTrack:
    """One face followed over time, with its smoothed score and decision."""

    id: int
    box: Box
    first_seen: float
    last_seen: float
    hits: int = 1
    ema: float | None = None
    state: str = UNKNOWN
    streak: int = 0
    streak_start: float | None = None
    since_on: int | None = None
    """Scored frames since the last one at or above the ``real`` level (0: this one); None: none yet."""
    last_on_t: float | None = None
    """Time of that frame."""
    template: np.ndarray | None = field(default=None, repr=False)
    """Grey patch of the face on the small tracking frame, for :func:`follow_box`."""

    def discard_evidence(self) -> None:
        """After a frame the model could not score: the streak and a ``real`` decision end.

        The EMA stays: it holds the track's history of low scores too, which an error must not wash out.
        """
        self.streak, self.streak_start = 0, None
        if self.state == REAL:
            self.state = UNKNOWN

    def resume_after_gap(self) -> None:
        """The track is found again after frames without it: the face may not be the one that left.

        The EMA and the streak stay (they hold low scores too), but the last frame at the ``real``
        level was before the gap: ``real`` needs a new one.
        """
        self.since_on = self.last_on_t = None
        if self.state == REAL:
            self.state = UNKNOWN

    def observe(self, score: float | None, t: float, threshold: float, config: SmoothingConfig) -> tuple[str, str | None, str]:
        """Add one frame's evidence. ``score`` None means a quality gate refused the frame.

        Returns this frame's ``(label, reason, message)``.
        """
        if score is None:
            return UNKNOWN, None, ""  # the caller reports the gate's own reason
        score = float(score)
        self.ema = score if self.ema is None else config.alpha * score + (1.0 - config.alpha) * self.ema
        if score >= threshold:
            if self.streak == 0:
                self.streak_start = t
            self.streak += 1
        else:
            self.streak, self.streak_start = 0, None
        on = min(threshold + config.margin, (threshold + 1.0) / 2.0)
        off = max(threshold - config.margin, threshold / 2.0)
        if score >= on:
            self.since_on, self.last_on_t = 0, t
        elif self.since_on is not None:
            self.since_on += 1
        # The face's own recent frames must reach the `real` level now and then: the EMA alone would
        # let a photo swapped in for a live face, scoring between the threshold and that level, ride
        # on the live face's history for as long as it stays there. "Recent" spans the evidence that
        # earns `real` (min_frames and min_seconds), so a live face's short dip does not flicker.
        recent = self.since_on is not None and (
            self.since_on < config.min_frames or (self.last_on_t is not None and t - self.last_on_t < config.min_seconds)
        )
        if self.state == REAL:
            # Hysteresis keeps a live face from flickering on EMA noise, but a frame whose own
            # score is below the threshold is never reported real: the face may have been swapped
            # for a photo inside the same box (fail closed; it must earn `real` again).
            if self.ema < off or score < threshold:
                self.state = SPOOF
            elif not recent:
                self.state = UNKNOWN
        elif (
            self.ema >= on
            and recent
            and self.streak >= config.min_frames
            and self.streak_start is not None
            and t - self.streak_start >= config.min_seconds
        ):
            self.state = REAL
        elif self.ema < threshold or score < threshold:
            self.state = SPOOF
        else:
            self.state = UNKNOWN
        if self.state == UNKNOWN:
            span = 0.0 if self.streak_start is None else t - self.streak_start
            if self.streak < config.min_frames or span < config.min_seconds:
                message = (f"collecting evidence: {self.streak}/{config.min_frames} frames, "
                           f"{span:.2f}/{config.min_seconds:.2f} s above threshold")
            elif not recent:
                message = (f"collecting evidence: no frame scored {on:.3f} or more in the last {config.min_frames} frames "
                           f"and {config.min_seconds:.2f} s")
            else:
                message = f"collecting evidence: smoothed score {self.ema:.3f}, {on:.3f} needed"
            return UNKNOWN, Reason.COLLECTING_EVIDENCE, message
        return self.state, None, ""


class IoUTracker:
    """Greedy IoU matching of detections to live tracks; tracks unseen for :attr:`gap` seconds are dropped."""

    def __init__(self, config: SmoothingConfig | None = None) -> None:
        self.config = config or SmoothingConfig()
        self.tracks: list[FaceTrack] = []
        self._next_id = 1
        self._intervals: deque[float] = deque(maxlen=INTERVAL_WINDOW)
        self._last_frame_t: float | None = None
        self._last_update_t: float | None = None
        self.slow_source_warned = False

    def reset(self) -> None:
        self.tracks.clear()
        self._next_id = 1
        self._intervals.clear()
        self._last_frame_t = None
        self._last_update_t = None
        self.slow_source_warned = False

    @property
    def frame_interval(self) -> float | None:
        """The source's frame interval in seconds (median of the recent ones); None before two frames."""
        return float(np.median(self._intervals)) if self._intervals else None

    @property
    def gap(self) -> float:
        """Seconds a track may go unseen: ``forget_after``, widened to ``gap_frames`` frame intervals on slow sources."""
        interval = self.frame_interval
        if interval is None or self.config.gap_frames <= 0:
            return self.config.forget_after
        return max(self.config.forget_after, self.config.gap_frames * interval)

    def tick(self, t: float) -> None:
        """Note that a frame arrived at ``t`` (every processed frame, detected or followed).

        A time earlier than the last frame's (a restarted clock, a file source looping, timestamps from
        another source) ends every track: their evidence was counted on the old clock, and a face
        would otherwise come back on the new one already ``real``, with no gap ever measured.
        """
        if self._last_frame_t is not None and t < self._last_frame_t:
            if self.tracks:
                log.warning("t=%.3f s comes before the last frame's %.3f s: the clock went back; every face track starts again",
                            t, self._last_frame_t)
            self.tracks.clear()
            self._intervals.clear()
            self._last_update_t = None
        if self._last_frame_t is not None and t > self._last_frame_t:
            self._intervals.append(t - self._last_frame_t)
        self._last_frame_t = t
        interval = self.frame_interval
        if interval is not None and interval > self.config.forget_after and not self.slow_source_warned:
            self.slow_source_warned = True
            if self.config.gap_frames > 0:
                log.warning(
                    "frames arrive every %.2f s, slower than the tracker's %.2f s gap: tracks are kept for %.2f s "
                    "(%g frame intervals) instead; a face needs %d scored frames (%.1f s here) to turn real",
                    interval, self.config.forget_after, self.gap, self.config.gap_frames,
                    self.config.min_frames, (self.config.min_frames - 1) * interval,
                )
            else:
                log.warning(
                    "frames arrive every %.2f s, slower than the tracker's %.2f s gap (gap_frames=0): every track "
                    "is dropped between frames and no face can turn real; raise forget_after (--track-gap) above %.2f s",
                    interval, self.config.forget_after, interval,
                )

    def forget(self, t: float) -> None:
        """Drop tracks not seen for more than :attr:`gap` seconds before ``t``."""
        gap = self.gap
        kept = [tr for tr in self.tracks if t - tr.last_seen <= gap]
        if len(kept) != len(self.tracks) and log.isEnabledFor(logging.DEBUG):
            gone = sorted({tr.id for tr in self.tracks} - {tr.id for tr in kept})
            log.debug("t=%.2f: forgot track(s) %s, unseen for more than %.2f s", t, gone, gap)
        self.tracks = kept

    def update(self, boxes: Sequence[Box], t: float) -> list[FaceTrack]:
        """Assign each box to a track (continuing one or starting a new one); return them in the order of ``boxes``."""
        self.forget(t)
        # A track matched now but not at the previous update was missed in between (frames between two
        # updates are followed by template matching only while every track is found, which updates
        # last_seen): see FaceTrack.resume_after_gap.
        missed_before = self._last_update_t if self._last_update_t is not None and self._last_update_t < t else None
        self._last_update_t = t
        pairs = sorted(
            ((iou(tr.box, b), ti, bi) for ti, tr in enumerate(self.tracks) for bi, b in enumerate(boxes)),
            reverse=True,
        )
        assigned: dict[int, FaceTrack] = {}
        used_tracks: set[int] = set()
        for overlap, ti, bi in pairs:
            if overlap < self.config.iou_threshold:
                break
            if ti in used_tracks or bi in assigned:
                continue
            used_tracks.add(ti)
            assigned[bi] = self.tracks[ti]
        out = []
        for bi, box in enumerate(boxes):
            track = assigned.get(bi)
            if track is None:
                track = FaceTrack(id=self._next_id, box=tuple(box), first_seen=t, last_seen=t)  # type: ignore[arg-type]
                log.debug("t=%.2f: new track %d at %s", t, track.id, tuple(round(v) for v in box))
                self._next_id += 1
                self.tracks.append(track)
            else:
                if missed_before is not None and track.last_seen < missed_before:
                    track.resume_after_gap()
                track.box = tuple(box)  # type: ignore[assignment]
                track.last_seen = t
                track.hits += 1
            out.append(track)
        return out


def follow_box(grey: np.ndarray, template: np.ndarray, box: Box, factor: float, min_match: float = 0.6) -> Box | None:
    """Find ``template`` (a grey patch cut at ``box`` on the previous small frame) near ``box`` in ``grey``.

    ``grey`` is the current frame downscaled by ``factor``; ``box`` is in full-frame pixels.
    Returns the moved box (same size) in full-frame pixels, or None when the best match is
    weaker than ``min_match`` (normalised correlation): the track is lost and the caller
    should run a full detection.
    """
    th, tw = template.shape[:2]
    if th < 4 or tw < 4:
        return None
    x, y = box[0] * factor, box[1] * factor
    # Search a window of one template size around the last position: faces move little between frames.
    sx0, sy0 = max(0, int(x - tw)), max(0, int(y - th))
    sx1, sy1 = min(grey.shape[1], int(x + 2 * tw)), min(grey.shape[0], int(y + 2 * th))
    window = grey[sy0:sy1, sx0:sx1]
    if window.shape[0] < th or window.shape[1] < tw:
        return None
    response = cv2.matchTemplate(window, template, cv2.TM_CCOEFF_NORMED)
    _, best, _, (mx, my) = cv2.minMaxLoc(response)
    if not np.isfinite(best) or best < min_match:
        return None
    return ((sx0 + mx) / factor, (sy0 + my) / factor, box[2], box[3])
