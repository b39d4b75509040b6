"""The face-crop preprocessor: the one place where a face box becomes a model input.

The trainer imports :func:`crop_face` and :func:`to_tensor` from here, so the crops a model
is trained on and the crops it sees at run time come from the same code. The policy:

1. Take a square around the face box: side = ``scale`` x the longer side of the box,
   centred on the box. Context around the face (paper edges, screen bezels, hands,
   moire on the background) is part of what a presentation attack detector looks at.
2. Shift the square so that it stays inside the frame where it fits.
3. Where it cannot fit (the square is larger than the frame), pad with black and say how
   much of the crop is padding, so quality gates can refuse crops that are mostly padding.
4. Resize to the model's input size (area interpolation when shrinking, linear when
   enlarging).

That is crop policy ``pad``, the default. A model's metadata may name another policy
(``crop_policy``), so that a model trained elsewhere sees exactly the crops its authors made:

- ``shift_cap`` (Minivision's MiniFASNet): a *rectangle* of ``scale`` x the box's width and
  height around the box centre, the scale first capped so that the rectangle fits in the
  frame (``min((H-1)/h, (W-1)/w, scale)``), then shifted inside the frame (never padded),
  corners truncated to integers, and the rectangle resized to the input size with linear
  interpolation (so the face is stretched like in their training). An image that is already
  a face crop is resized whole.

:func:`to_tensor` then applies the colour order and normalisation named in the model's
metadata and returns an NCHW float32 batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from .errors import ImageError

__all__ = [
    "CROP_POLICIES",
    "FaceCrop",
    "crop_face",
    "crop_region",
    "shift_cap_region",
    "resize_square",
    "center_square",
    "fit_face_crop",
    "to_tensor",
    "as_bgr_uint8",
]

# 'pad': square, shifted inside the frame, padded with black where larger than the frame (ours).
# 'shift_cap': rectangle scaled from the box, scale capped to fit, shifted, never padded (MiniFASNet's).
CROP_POLICIES = ("pad", "shift_cap")


@dataclass(frozen=True)
class FaceCrop:
    """A face crop and where it came from."""

    image: np.ndarray
    """BGR uint8, ``size`` x ``size`` x 3."""
    region: tuple[int, int, int, int]
    """The cut in frame coordinates, ``(x0, y0, x1, y1)``, end exclusive: a square that may extend past
    the frame if padded (policy ``pad``), or a rectangle inside the frame (policy ``shift_cap``)."""
    shifted: bool
    """True when the square was moved off the face centre to stay inside the frame."""
    padded_fraction: float
    """Share of the crop's area that lies outside the frame and was filled with black (0..1)."""


def as_bgr_uint8(image: np.ndarray) -> np.ndarray:
    """Validate an image array and return it as contiguous HxWx3 BGR uint8.

    Accepts uint8 or uint16 (scaled down), grey (HxW or HxWx1), BGR and BGRA. Anything
    else raises :class:`ImageError` with the reason.
    """
    if image is None:
        raise ImageError("image is None")
    if not isinstance(image, np.ndarray):
        raise ImageError(f"image must be a numpy array, got {type(image).__name__}")
    if image.size == 0:
        raise ImageError(f"image is empty (shape {image.shape})")
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise ImageError(f"image dtype must be uint8 or uint16, got {image.dtype}")
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        image = cv2.cvtColor(image.reshape(image.shape[0], image.shape[1]), cv2.COLOR_GRAY2BGR)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    elif not (image.ndim == 3 and image.shape[2] == 3):
        raise ImageError(f"image must be HxW, HxWx1, HxWx3 or HxWx4, got shape {image.shape}")
    return np.ascontiguousarray(image)


def overlaps_frame(box: Sequence[float], frame_shape: Sequence[int]) -> bool:
    """True when face ``box`` = ``(x, y, w, h)`` shares at least some area with a frame of ``frame_shape``.
    A box wholly outside holds no face of the frame (a detector's error): it is dropped or refused, never cropped."""
    x, y, w, h = (float(v) for v in box)
    return x < int(frame_shape[1]) and y < int(frame_shape[0]) and x + w > 0 and y + h > 0


def _checked_box(box: Sequence[float], scale: float, frame_shape: Sequence[int]) -> tuple[float, float, float, float]:
    """``box`` as floats. ImageError: a box without positive finite size, or wholly outside the frame
    (a detector's error: shifting the crop in would score a patch the box never held); ValueError: a bad scale."""
    x, y, w, h = (float(v) for v in box)
    if not (w > 0 and h > 0) or not np.isfinite([x, y, w, h, x + w, y + h]).all():
        raise ImageError(f"face box must have positive finite size, got {tuple(box)}")
    if not scale > 0:
        raise ValueError(f"crop scale must be positive, got {scale}")
    if not overlaps_frame((x, y, w, h), frame_shape):
        raise ImageError(f"face box {tuple(box)} lies outside the {int(frame_shape[1])}x{int(frame_shape[0])} frame")
    return x, y, w, h


def crop_region(
    frame_shape: Sequence[int], box: Sequence[float], scale: float
) -> tuple[tuple[int, int, int, int], bool]:
    """The square crop region for a face box ``(x, y, w, h)`` in a frame of ``frame_shape``.

    Returns ``((x0, y0, x1, y1), shifted)``. The square may extend past the frame only
    along an axis where it is larger than the frame.
    """
    x, y, w, h = _checked_box(box, scale, frame_shape)
    frame_h, frame_w = int(frame_shape[0]), int(frame_shape[1])
    side = max(1, int(round(max(w, h) * scale)))
    cx, cy = x + w / 2.0, y + h / 2.0
    x0 = int(round(cx - side / 2.0))
    y0 = int(round(cy - side / 2.0))
    # Along each axis, move the square as little as possible so that it stays inside the
    # frame where it fits, and covers the whole frame (padding only the excess) where not.
    nx0 = min(max(x0, min(0, frame_w - side)), max(0, frame_w - side))
    ny0 = min(max(y0, min(0, frame_h - side)), max(0, frame_h - side))
    shifted = (nx0, ny0) != (x0, y0)
    return (nx0, ny0, nx0 + side, ny0 + side), shifted


def shift_cap_region(
    frame_shape: Sequence[int], box: Sequence[float], scale: float
) -> tuple[tuple[int, int, int, int], bool]:
    """The ``shift_cap`` crop region for a face box ``(x, y, w, h)``: ``((x0, y0, x1, y1), shifted)``, end exclusive.

    Mirrors Minivision's ``CropImage._get_new_box`` (Silent-Face-Anti-Spoofing, Apache-2.0):
    the scale is capped so that the scaled box fits in the frame, the box is shifted inside
    the frame (its far edge at most at pixel ``W-1``/``H-1``), corners are truncated to
    integers and the cut includes its far corner pixel.
    """
    x, y, w, h = _checked_box(box, scale, frame_shape)
    frame_h, frame_w = int(frame_shape[0]), int(frame_shape[1])
    scale = min((frame_h - 1) / h, (frame_w - 1) / w, float(scale))
    cx, cy = x + w / 2.0, y + h / 2.0
    x0, x1 = cx - w * scale / 2.0, cx + w * scale / 2.0
    y0, y1 = cy - h * scale / 2.0, cy + h * scale / 2.0
    shifted = False
    if x0 < 0:
        x0, x1, shifted = 0.0, x1 - x0, True
    if y0 < 0:
        y0, y1, shifted = 0.0, y1 - y0, True
    if x1 > frame_w - 1:
        x0, x1, shifted = x0 - (x1 - frame_w + 1), float(frame_w - 1), True
    if y1 > frame_h - 1:
        y0, y1, shifted = y0 - (y1 - frame_h + 1), float(frame_h - 1), True
    # The cap keeps both corners inside [0, W-1] x [0, H-1]; max() only guards float rounding.
    return (max(0, int(x0)), max(0, int(y0)), int(x1) + 1, int(y1) + 1), shifted


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """Resize a square (or near-square) image to ``size`` x ``size``: area when shrinking, linear when enlarging."""
    h, w = image.shape[:2]
    if (h, w) == (size, size):
        return image
    interpolation = cv2.INTER_AREA if max(h, w) > size else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interpolation)


def center_square(image: np.ndarray) -> np.ndarray:
    """The centre square of an image (a tight face crop taller than wide loses a little top and bottom)."""
    h, w = image.shape[:2]
    side = min(h, w)
    y0, x0 = (h - side) // 2, (w - side) // 2
    return image[y0 : y0 + side, x0 : x0 + side]


def fit_face_crop(image: np.ndarray, size: int, policy: str = "pad") -> np.ndarray:
    """An image that is already a tight face crop -> model input.

    Policy ``pad``: its centre square, resized. There is no context around such a crop to add,
    and squashing a non-square crop would distort the face: the trainer prepares crop data
    sets (gc535) with this same function. Policy ``shift_cap``: the whole image resized with
    linear interpolation, as MiniFASNet's own crop of a box covering the image would be.
    """
    image = as_bgr_uint8(image)
    if policy == "shift_cap":
        return np.ascontiguousarray(cv2.resize(image, (int(size), int(size)), interpolation=cv2.INTER_LINEAR))
    _check_policy(policy)
    return np.ascontiguousarray(resize_square(center_square(image), int(size)))


def _check_policy(policy: str) -> None:
    if policy not in CROP_POLICIES:
        raise ValueError(f"crop policy must be one of {CROP_POLICIES}, got {policy!r}")


MAX_BOX_TO_FRAME = 2.0  # see crop_face: the largest face box, as a multiple of the frame's longer side


def crop_face(frame: np.ndarray, box: Sequence[float], scale: float, size: int, policy: str = "pad") -> FaceCrop:
    """Cut the face crop for ``box`` = ``(x, y, w, h)`` out of a BGR frame and resize it.

    ``scale`` is the model's crop scale (side of the square / longer side of the box; for
    ``shift_cap``, crop side / box side on each axis), ``size`` its input side in pixels and
    ``policy`` its crop policy (:data:`CROP_POLICIES`). See the module docstring.
    """
    frame = as_bgr_uint8(frame)
    if int(size) < 8:
        raise ValueError(f"crop size must be at least 8 px, got {size}")
    _check_policy(policy)
    frame_h, frame_w = frame.shape[:2]
    # A face box more than twice the frame's longer side is no face this frame holds (a detector's garbage
    # on a degenerate frame, e.g. one pixel row): refused, before padding allocates a crop of that size.
    if max(float(box[2]), float(box[3])) > MAX_BOX_TO_FRAME * max(frame_h, frame_w):
        raise ImageError(f"face box {tuple(box)} is larger than {MAX_BOX_TO_FRAME:g}x the {frame_w}x{frame_h} frame")
    if policy == "shift_cap":
        (x0, y0, x1, y1), shifted = shift_cap_region(frame.shape, box, scale)
        image = cv2.resize(frame[y0:y1, x0:x1], (int(size), int(size)), interpolation=cv2.INTER_LINEAR)
        return FaceCrop(image=np.ascontiguousarray(image), region=(x0, y0, x1, y1), shifted=shifted, padded_fraction=0.0)
    (x0, y0, x1, y1), shifted = crop_region(frame.shape, box, scale)
    side = x1 - x0
    pad_left, pad_top = max(0, -x0), max(0, -y0)
    pad_right, pad_bottom = max(0, x1 - frame_w), max(0, y1 - frame_h)
    inside = frame[max(y0, 0) : min(y1, frame_h), max(x0, 0) : min(x1, frame_w)]  # never empty: the box overlaps the frame
    padded_fraction = 0.0
    if pad_left or pad_top or pad_right or pad_bottom:
        inside = cv2.copyMakeBorder(
            inside, pad_top, pad_bottom, pad_left, pad_right, cv2.BORDER_CONSTANT, value=(0, 0, 0)
        )
        padded_fraction = 1.0 - (side - pad_left - pad_right) * (side - pad_top - pad_bottom) / float(side * side)
    return FaceCrop(
        image=np.ascontiguousarray(resize_square(inside, int(size))),
        region=(x0, y0, x1, y1),
        shifted=shifted,
        padded_fraction=float(padded_fraction),
    )


def to_tensor(
    crops: Sequence[np.ndarray] | np.ndarray,
    color_order: str,
    mean: Sequence[float],
    std: Sequence[float],
) -> np.ndarray:
    """Stack BGR uint8 crops (all the model's input size) into a normalised NCHW float32 batch.

    ``mean`` and ``std`` are per channel in the model's colour order, on pixels scaled to [0, 1].
    """
    batch = np.asarray(crops if isinstance(crops, np.ndarray) and crops.ndim == 4 else np.stack(list(crops)))
    if batch.ndim != 4 or batch.shape[-1] != 3 or batch.dtype != np.uint8:
        raise ImageError(f"crops must be NxHxWx3 uint8, got {batch.shape} {batch.dtype}")
    if color_order.upper() == "RGB":
        batch = batch[..., ::-1]
    elif color_order.upper() != "BGR":
        raise ValueError(f"colour order must be RGB or BGR, got {color_order!r}")
    scale = np.float32(1.0 / 255.0)
    mean_arr = np.asarray(mean, dtype=np.float32).reshape(1, 3, 1, 1)
    inv_std = (1.0 / np.asarray(std, dtype=np.float32)).reshape(1, 3, 1, 1)
    tensor = batch.transpose(0, 3, 1, 2).astype(np.float32) * scale
    return np.ascontiguousarray((tensor - mean_arr) * inv_std, dtype=np.float32)
