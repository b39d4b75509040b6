"""Training augmentations in OpenCV/numpy (no torchvision), driven by a recipe's ``[augment]`` table.

Every random draw comes from a ``numpy.random.Generator`` passed in by the caller, which the
dataset seeds from (seed, epoch, index): the same recipe gives the same images in any
number of worker processes.

Three groups, applied in this order to a BGR uint8 crop:

1. geometry: random resized crop, horizontal flip, rotation/scale/shift/shear (one affine),
   perspective;
2. colour: brightness, contrast, saturation, hue, gamma (exposure), colour cast (white
   balance), grayscale;
3. capture: the camera/pipeline variation that must not become a class cue. gc535 live
   crops are grainier and darker than its clean attacks, so sensor noise, blur (focus and
   motion), down-and-up resampling and JPEG re-encoding are applied to both classes alike,
   with enough probability that "noise means live" stops paying off.

Between 2 and 3, optionally, **cue matching** (``cue_match_p``): the crop's brightness, contrast,
saturation and sharpness (the statistics of :mod:`.cues`) are set to targets drawn uniformly from
class-independent ranges. A matched crop carries no label information in those four numbers,
whose direction flips between our domains (live is the brighter, more saturated, sharper class on
some cameras and the darker, duller, blurrier one on others, gc535 against most webcams): the
model has to find the attack elsewhere.

Also between 2 and 3, optionally, **a dim room** (``lowlight_p``, :func:`dim`): exposure cut until
the crop's grey mean falls to a level drawn from ``lowlight_level``, then the dark-frame noise of a
webcam's raised gain. lestari15's faces average a grey level of 37-42 where
every other domain's lie between 80 and 155: the colour jitter above rarely reaches it.

Random erasing works on the normalised tensor afterwards (:func:`random_erasing`).
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import cv2
import numpy as np

from .cues import crop_sharpness

__all__ = ["Augmenter", "dim", "match_cues", "random_erasing"]

DEFAULTS: dict[str, Any] = {
    "hflip": 0.5,
    "resized_crop_p": 0.0,  # random resized crop: probability and area range
    "resized_crop_scale": [0.9, 1.0],
    "affine_p": 0.0,  # one affine: rotation (deg), scale range, shift (fraction), shear (deg)
    "rotation": 0.0,
    "scale": [1.0, 1.0],
    "shift": 0.0,
    "shear": 0.0,
    "perspective_p": 0.0,
    "perspective": 0.1,
    "brightness": 0.0,  # +-fraction
    "contrast": 0.0,
    "saturation": 0.0,
    "hue": 0.0,  # +-fraction of a full turn
    "gamma_p": 0.0,
    "gamma": [0.7, 1.4],
    "color_cast_p": 0.0,
    "color_cast": 0.1,  # +-per-channel gain
    "grayscale_p": 0.0,
    "blur_p": 0.0,
    "blur_sigma": [0.3, 1.5],
    "motion_blur_p": 0.0,
    "resample_p": 0.0,  # down-and-up resampling (lower camera resolution)
    "resample": [0.4, 0.9],
    "noise_p": 0.0,  # additive Gaussian sensor noise, sigma in 8-bit levels
    "noise_sigma": [2.0, 10.0],
    "jpeg_p": 0.0,
    "jpeg_quality": [30, 95],
    # cue matching: probability, then the target ranges (the 5-95th percentiles of every domain's
    # training crops at 128 px, pooled; grey mean and std, mean HSV saturation, log(1 + var Laplacian))
    "cue_match_p": 0.0,
    "cue_brightness": [50.0, 175.0],
    "cue_contrast": [22.0, 75.0],
    "cue_saturation": [30.0, 135.0],
    "cue_sharpness": [3.0, 6.5],
    # a dim room: probability, target grey mean (8-bit levels), dark-frame noise sigma (8-bit levels)
    "lowlight_p": 0.0,
    "lowlight_level": [22.0, 60.0],
    "lowlight_noise": [1.0, 4.0],
    "erasing_p": 0.0,
    "erasing_area": [0.02, 0.2],
}


def _uniform(rng: np.random.Generator, r) -> float:
    lo, hi = (float(r[0]), float(r[1])) if isinstance(r, (list, tuple)) else (-float(r), float(r))
    return float(rng.uniform(lo, hi)) if hi > lo else lo


class Augmenter:
    def __init__(self, config: Mapping[str, Any] | None = None):
        unknown = set(config or {}) - set(DEFAULTS)
        if unknown:
            raise ValueError(f"unknown augmentation keys: {', '.join(sorted(unknown))}; known: {', '.join(DEFAULTS)}")
        self.cfg = {**DEFAULTS, **(config or {})}

    # --- geometry ---------------------------------------------------------------------
    def _geometry(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        c = self.cfg
        h, w = img.shape[:2]
        if rng.random() < c["resized_crop_p"]:
            area = _uniform(rng, c["resized_crop_scale"])
            side = max(8, int(round(math.sqrt(area) * min(h, w))))
            y0 = int(rng.integers(0, h - side + 1))
            x0 = int(rng.integers(0, w - side + 1))
            img = cv2.resize(img[y0 : y0 + side, x0 : x0 + side], (w, h), interpolation=cv2.INTER_LINEAR)
        if rng.random() < c["hflip"]:
            img = img[:, ::-1]
        if rng.random() < c["affine_p"]:
            angle = _uniform(rng, c["rotation"])
            scale = _uniform(rng, c["scale"])
            m = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), angle, scale)
            shear = math.tan(math.radians(_uniform(rng, c["shear"])))
            m[0, 1] += shear * m[0, 0]
            m[0, 2] -= shear * m[0, 0] * h / 2.0
            m[0, 2] += _uniform(rng, c["shift"]) * w
            m[1, 2] += _uniform(rng, c["shift"]) * h
            img = cv2.warpAffine(np.ascontiguousarray(img), m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        if rng.random() < c["perspective_p"]:
            d = float(c["perspective"]) * min(h, w)
            src = np.float32([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]])
            dst = src + rng.uniform(-d, d, size=(4, 2)).astype(np.float32)
            m = cv2.getPerspectiveTransform(src, dst)
            img = cv2.warpPerspective(np.ascontiguousarray(img), m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
        return np.ascontiguousarray(img)

    # --- colour -----------------------------------------------------------------------
    def _colour(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        c = self.cfg
        x = img.astype(np.float32)
        ops = []
        if c["brightness"]:
            ops.append("b")
        if c["contrast"]:
            ops.append("c")
        if c["saturation"] or c["hue"]:
            ops.append("sh")
        for i in rng.permutation(len(ops)):
            op = ops[i]
            if op == "b":
                x *= 1.0 + _uniform(rng, c["brightness"])
            elif op == "c":
                mean = float((x @ np.float32([0.114, 0.587, 0.299])).mean())
                x = (x - mean) * (1.0 + _uniform(rng, c["contrast"])) + mean
            else:
                hsv = cv2.cvtColor(np.clip(x, 0, 255).astype(np.uint8), cv2.COLOR_BGR2HSV).astype(np.float32)
                if c["hue"]:
                    hsv[..., 0] = (hsv[..., 0] + _uniform(rng, c["hue"]) * 180.0) % 180.0
                if c["saturation"]:
                    hsv[..., 1] *= 1.0 + _uniform(rng, c["saturation"])
                x = cv2.cvtColor(np.clip(hsv, 0, [179, 255, 255]).astype(np.uint8), cv2.COLOR_HSV2BGR).astype(np.float32)
        if rng.random() < c["gamma_p"]:
            g = _uniform(rng, c["gamma"])
            x = 255.0 * np.power(np.clip(x, 0, 255) / 255.0, g)
        if rng.random() < c["color_cast_p"]:
            x *= 1.0 + rng.uniform(-c["color_cast"], c["color_cast"], size=3).astype(np.float32)
        x = np.clip(x, 0, 255).astype(np.uint8)
        if rng.random() < c["grayscale_p"]:
            x = cv2.cvtColor(cv2.cvtColor(x, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
        return x

    # --- capture ----------------------------------------------------------------------
    def _capture(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        c = self.cfg
        h, w = img.shape[:2]
        if rng.random() < c["blur_p"]:
            img = cv2.GaussianBlur(img, (0, 0), _uniform(rng, c["blur_sigma"]))
        if rng.random() < c["motion_blur_p"]:
            k = int(rng.integers(3, 8))
            kernel = np.zeros((k, k), np.float32)
            kernel[k // 2, :] = 1.0 / k
            kernel = cv2.warpAffine(kernel, cv2.getRotationMatrix2D((k / 2 - 0.5, k / 2 - 0.5), float(rng.uniform(0, 180)), 1.0), (k, k))
            kernel /= max(kernel.sum(), 1e-6)
            img = cv2.filter2D(img, -1, kernel)
        if rng.random() < c["resample_p"]:
            f = _uniform(rng, c["resample"])
            small = cv2.resize(img, (max(8, int(w * f)), max(8, int(h * f))), interpolation=cv2.INTER_AREA)
            img = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR if rng.random() < 0.5 else cv2.INTER_CUBIC)
        if rng.random() < c["noise_p"]:
            sigma = _uniform(rng, c["noise_sigma"])
            noise = rng.normal(0.0, sigma, size=img.shape if rng.random() < 0.7 else (h, w, 1)).astype(np.float32)
            img = np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)
        if rng.random() < c["jpeg_p"]:
            q = int(round(_uniform(rng, c["jpeg_quality"])))
            ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, q])
            if ok:
                img = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        return img

    def __call__(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Augment one BGR uint8 crop; returns a new BGR uint8 image of the same size."""
        c = self.cfg
        img = self._geometry(img, rng)
        img = self._colour(img, rng)
        # Drawn only when enabled, so recipes without it keep their random streams (and published figures).
        if c["cue_match_p"] > 0 and rng.random() < c["cue_match_p"]:
            targets = [_uniform(rng, c[k]) for k in ("cue_brightness", "cue_contrast", "cue_saturation", "cue_sharpness")]
            img = match_cues(img, *targets)
        if c["lowlight_p"] > 0 and rng.random() < c["lowlight_p"]:  # drawn only when enabled, as above
            img = dim(img, _uniform(rng, c["lowlight_level"]), _uniform(rng, c["lowlight_noise"]), rng)
        return np.ascontiguousarray(self._capture(img, rng))

    def erase(self, tensor: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return random_erasing(tensor, rng, self.cfg["erasing_p"], self.cfg["erasing_area"])


# Blur sigmas and unsharp-mask amounts tried when matching sharpness: the closest result is kept.
_BLUR_SIGMAS = (0.3, 0.45, 0.6, 0.75, 0.9, 1.1, 1.3, 1.6, 2.0, 2.6, 3.4)
_SHARPEN_AMOUNTS = (0.2, 0.4, 0.6, 0.8, 1.0, 1.3, 1.6, 2.0, 2.5, 3.2, 4.0, 5.0, 6.5)


def _grey_affine(img: np.ndarray, brightness: float, contrast: float) -> np.ndarray:
    """One affine map of all three channels that sets the grey mean and std (hue kept)."""
    grey = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float32)
    gain = contrast / max(float(grey.std()), 1.0)
    return np.clip((img.astype(np.float32) - float(grey.mean())) * gain + brightness, 0, 255).astype(np.uint8)


def dim(img: np.ndarray, level: float, noise_sigma: float, rng: np.random.Generator) -> np.ndarray:
    """A BGR uint8 crop as a dim room would give it: grey mean ``level``, with dark-frame noise.

    Less light is a gain on linear light; through the sRGB power curve that is the same factor on
    every 8-bit value, so the crop is scaled until its grey mean is ``level`` (a crop already at
    or below it keeps its exposure). Then per-channel Gaussian noise of ``noise_sigma`` levels,
    the read noise a webcam's auto-gain lifts in a dark room, and 8-bit rounding, which crushes
    the darkest shades together.
    """
    out = img.astype(np.float32)
    mean = float((out @ np.float32([0.114, 0.587, 0.299])).mean())
    if mean > level:
        out *= level / mean
    if noise_sigma > 0:
        out += rng.normal(0.0, noise_sigma, size=out.shape).astype(np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def match_cues(img: np.ndarray, brightness: float, contrast: float, saturation: float, sharpness: float) -> np.ndarray:
    """Bring a BGR uint8 crop's :func:`.cues.crop_statistics` close to the given targets.

    Grey mean and std first (one affine map of the three channels), then sharpness (the closest of
    a few Gaussian blurs or unsharp masks; the mean and std are set again, which moves sharpness
    little), then saturation by blending each pixel with its grey value, which leaves the grey level
    as it is. Clipping and the discrete blur steps leave the result near, not on, the targets; what
    matters is that the targets do not depend on the class.
    """
    x = _grey_affine(img, brightness, contrast)
    if sharpness < crop_sharpness(x):
        candidates = [cv2.GaussianBlur(x, (0, 0), s) for s in _BLUR_SIGMAS]
    else:
        f = x.astype(np.float32)
        detail = f - cv2.GaussianBlur(f, (0, 0), 1.0)
        candidates = [np.clip(f + a * detail, 0, 255).astype(np.uint8) for a in _SHARPEN_AMOUNTS]
    candidates.append(x)
    x = _grey_affine(min(candidates, key=lambda c: abs(crop_sharpness(c) - sharpness)), brightness, contrast)

    # Saturation grows monotonically with the chroma gain k in x' = grey + k (x - grey): bisect k.
    f = x.astype(np.float32)
    grey = cv2.cvtColor(x, cv2.COLOR_BGR2GRAY).astype(np.float32)[..., None]
    lo, hi = 0.0, 4.0
    for _ in range(8):
        k = 0.5 * (lo + hi)
        y = np.clip(grey + k * (f - grey), 0, 255).astype(np.uint8)
        if cv2.cvtColor(y, cv2.COLOR_BGR2HSV)[..., 1].mean() < saturation:
            lo = k
        else:
            hi = k
    return np.clip(grey + 0.5 * (lo + hi) * (f - grey), 0, 255).astype(np.uint8)


def random_erasing(chw: np.ndarray, rng: np.random.Generator, p: float, area=(0.02, 0.2), ratio=(0.3, 3.3)) -> np.ndarray:
    """Erase one random rectangle of a normalised CHW float tensor with random values (occlusion)."""
    if p <= 0 or rng.random() >= p:
        return chw
    _, h, w = chw.shape
    for _ in range(10):
        a = _uniform(rng, area) * h * w
        r = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        eh, ew = int(round(math.sqrt(a * r))), int(round(math.sqrt(a / r)))
        if 0 < eh < h and 0 < ew < w:
            y, x = int(rng.integers(0, h - eh + 1)), int(rng.integers(0, w - ew + 1))
            chw = chw.copy()
            chw[:, y : y + eh, x : x + ew] = rng.normal(size=(chw.shape[0], eh, ew)).astype(chw.dtype)
            return chw
    return chw
