"""Attack synthesis from live crops, and domain-style mixing (numpy/OpenCV, no torch).

A model that has seen the attacks of two datasets learns those datasets; to learn what a
*presentation* does to a face it also needs attacks made from faces it has seen live. This
module turns a live BGR uint8 crop into a plausible screen replay or print attack, and mixes
the low-level "style" (colour statistics, illumination) of crops from different domains
without touching their labels.

- **Screen replay** (:meth:`AttackSynthesizer.replay`): the face is shown on a display and
  filmed again. The content is resampled onto the display's pixel grid and back (pixelation,
  slight rescale), the display's tone curve applies (gamma, gamut compression towards grey,
  raised black level, cool white point), the screen may be slightly out of focus, and every
  display pixel emits through vertical R, G and B sub-pixel stripes separated by a black
  matrix. That sub-pixel grid, at a random pitch and angle, is evaluated at the camera's
  pixel centres, so its harmonics above the camera's Nyquist frequency alias into moiré
  (coloured bands for the per-channel stripes, luminance bands for the black matrix), as a
  real recapture does. Glossy screens add glare (soft specular blobs or streaks) and the
  display's bezel can enter the crop as a dark band along one side.
- **Print** (:meth:`AttackSynthesizer.print_attack`): the face is printed and photographed.
  Ink on paper has a reduced dynamic range (paper white, ink black), lower saturation and
  contrast, dot gain and a paper-coloured cast; tones are rendered as CMY dots on rotated
  clustered-dot screens (15°, 75°, 0°) or as an ordered (Bayer) dither, softened by the
  camera; the paper adds fibre texture and the bend of a hand-held sheet adds shading.
- **Style mixing** (:meth:`AttackSynthesizer.style_mix`): the low-frequency Fourier amplitude
  of a reference crop from another domain replaces (blends into) the crop's own (FDA, Yang &
  Soatto 2020), or the crop's per-channel mean/std in CIE Lab are moved to the reference's.
  Both keep the face's structure (phase / normalised values), so the label is preserved.

Every random draw comes from the ``numpy.random.Generator`` passed in: the same generator
state gives the same image. Outputs have the input's shape and dtype (HxWx3 uint8).

Recipe section ``[synth]`` (all keys optional; unknown keys are an error; the defaults turn
everything off, so a recipe without ``[synth]`` trains exactly as before):

==================== ================= =========================================================
key                  default           meaning
==================== ================= =========================================================
``p_synth``          0.0               probability that an eligible crop is turned into an attack
``apply_to``         ``"real_only"``   which crops are eligible: ``real_only`` (live crops become
                                       attacks, label 1 -> 0; attacks untouched),
                                       ``attack_only`` (attacks get extra replay/print artefacts,
                                       label stays 0; live crops untouched), ``both``
``p_replay``         0.5               relative weight of screen replay among the kinds
``p_print``          0.5               relative weight of print among the kinds
``p_style_mix``      0.0               probability of style mixing (both classes, label kept),
                                       only when the caller passes a reference crop
``style_method``     ``"both"``        ``fda``, ``lab`` or ``both`` (one of the two at random)
``style_strength``   [0.3, 1.0]        blend between the crop's own style (0) and the ref's (1)
``fda_beta``         [0.005, 0.03]     FDA: half-size of the swapped low-frequency window, as a
                                       fraction of the crop's shorter side
``replay_p_moire``   0.8               probability that the sub-pixel grid shows (else a soft
                                       recapture: tone, glare, bezel only)
``replay_pitch``     [0.4, 1.6]        display pixel pitch in crop pixels
``replay_angle``     20.0              +- rotation of the display grid (degrees)
``replay_moire``     [0.03, 0.25]      modulation depth of the sub-pixel grid's fundamental
``replay_fill``      [0.6, 0.9]        sub-pixel stripe width / third of a pixel
``replay_resample``  [1.0, 1.8]        content shown at 1/f of the crop's resolution (pixelation)
``replay_gamma``     [0.75, 1.35]      display/camera tone curve exponent
``replay_gamut``     [0.6, 0.92]       saturation kept (gamut compression towards luma)
``replay_black``     [0.02, 0.12]      raised black level (fraction of full scale)
``replay_white``     [0.82, 1.0]       white level
``replay_exposure``  [0.9, 1.4]        camera exposure gain on the bright screen (clips highlights)
``replay_cast``      0.06              +- per-channel gain, biased towards a cool (blue) white
``replay_defocus``   [0.0, 1.0]        Gaussian defocus sigma (crop pixels; below 0.3 none)
``p_glare``          0.5               probability of specular glare
``glare_strength``   [0.15, 0.7]       peak glare intensity
``p_bezel``          0.3               probability of a bezel band on one side
``bezel_width``      [0.03, 0.15]      bezel band width, fraction of the crop side
``print_p_halftone`` 0.7               halftone dot screens (else ordered dither)
``print_pitch``      [1.8, 3.5]        halftone cell size in crop pixels
``print_halftone``   [0.05, 0.35]      blend of the halftoned image into the continuous tone
``print_saturation`` [0.45, 0.85]      saturation kept
``print_black``      [0.06, 0.2]       ink black level
``print_white``      [0.75, 0.95]      paper white level
``print_gamma``      [0.9, 1.3]        dot gain (exponent > 1 darkens mid-tones)
``print_cast``       0.08              paper/ink colour cast (warm bias)
``print_texture``    [0.01, 0.04]      paper texture amplitude (multiplicative)
``print_shading``    0.12              +- illumination ramp over the sheet (bent paper)
``print_blur``       [0.3, 0.9]        camera blur sigma on the print
``print_p_glare``    0.2               probability of glare on glossy photo paper
==================== ================= =========================================================

Ranges are ``[lo, hi]`` drawn uniformly; a single number ``a`` means ``[-a, a]``.

Use in a dataset (before the ordinary augmentations, which then act on both classes alike)::

    synth = AttackSynthesizer(recipe.get("synth", {}))
    # A crop from another domain for style mixing; drawn only when mixing is on, so that a
    # recipe without [synth] takes no extra draws (maybe_synthesize takes none either then).
    j = pick_reference(crops.sets, i, rng) if synth.cfg.p_style_mix > 0 else None
    image, label = maybe_synthesize(image, label, rng, synth, ref=None if j is None else crops.images[j])

Run ``python -m spoofsdk_train.synth DATA_DIR --out /tmp/sheet.png`` to see a contact sheet.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import click
import cv2
import numpy as np

from spoofsdk.clitools import Command

__all__ = ["REAL", "ATTACK", "SynthConfig", "AttackSynthesizer", "maybe_synthesize", "pick_reference", "fda_mix", "lab_stats_mix", "contact_sheet"]

REAL, ATTACK = 1, 0  # the trainer's labels (data.py: 1 real, 0 attack)
APPLY_TO = ("real_only", "attack_only", "both")
STYLE_METHODS = ("fda", "lab", "both")
KINDS = ("replay", "print")

Range = tuple[float, float]


@dataclass(frozen=True)
class SynthConfig:
    """The ``[synth]`` recipe section (see the module docstring for every key)."""

    p_synth: float = 0.0
    apply_to: str = "real_only"
    p_replay: float = 0.5
    p_print: float = 0.5
    p_style_mix: float = 0.0
    style_method: str = "both"
    style_strength: Range = (0.3, 1.0)
    fda_beta: Range = (0.005, 0.03)
    replay_p_moire: float = 0.8
    replay_pitch: Range = (0.4, 1.6)
    replay_angle: Range = (-20.0, 20.0)
    replay_moire: Range = (0.03, 0.25)
    replay_fill: Range = (0.6, 0.9)
    replay_resample: Range = (1.0, 1.8)
    replay_gamma: Range = (0.75, 1.35)
    replay_gamut: Range = (0.6, 0.92)
    replay_black: Range = (0.02, 0.12)
    replay_white: Range = (0.82, 1.0)
    replay_exposure: Range = (0.9, 1.4)
    replay_cast: Range = (-0.06, 0.06)
    replay_defocus: Range = (0.0, 1.0)
    p_glare: float = 0.5
    glare_strength: Range = (0.15, 0.7)
    p_bezel: float = 0.3
    bezel_width: Range = (0.03, 0.15)
    print_p_halftone: float = 0.7
    print_pitch: Range = (1.8, 3.5)
    print_halftone: Range = (0.05, 0.35)
    print_saturation: Range = (0.45, 0.85)
    print_black: Range = (0.06, 0.2)
    print_white: Range = (0.75, 0.95)
    print_gamma: Range = (0.9, 1.3)
    print_cast: Range = (-0.08, 0.08)
    print_texture: Range = (0.01, 0.04)
    print_shading: Range = (-0.12, 0.12)
    print_blur: Range = (0.3, 0.9)
    print_p_glare: float = 0.2

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.type == "Range" or isinstance(v, (list, tuple)):
                lo, hi = _as_range(v, f.name)
                if f.name.startswith("p_") or "_p_" in f.name or not all(math.isfinite(x) for x in (lo, hi)):
                    raise ValueError(f"synth.{f.name}: bad range {v!r}")
                object.__setattr__(self, f.name, (lo, hi))
            elif f.name.startswith("p_") or "_p_" in f.name:
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= float(v) <= 1.0:
                    raise ValueError(f"synth.{f.name} must be a probability in [0, 1], got {v!r}")
                object.__setattr__(self, f.name, float(v))
        if self.apply_to not in APPLY_TO:
            raise ValueError(f"synth.apply_to must be one of {APPLY_TO}, got {self.apply_to!r}")
        if self.style_method not in STYLE_METHODS:
            raise ValueError(f"synth.style_method must be one of {STYLE_METHODS}, got {self.style_method!r}")
        if self.p_synth > 0 and self.p_replay + self.p_print <= 0:
            raise ValueError("synth.p_synth > 0 needs p_replay or p_print > 0")
        if self.replay_pitch[0] <= 0 or self.print_pitch[0] <= 0 or self.replay_resample[0] < 1.0:
            raise ValueError("synth: pitches must be > 0 and replay_resample >= 1")
        if self.replay_moire[0] < 0 or self.replay_moire[1] > 1 or not 0 <= self.style_strength[0] <= self.style_strength[1] <= 1:
            raise ValueError("synth: replay_moire and style_strength must lie in [0, 1]")

    @classmethod
    def from_mapping(cls, section: Mapping[str, Any] | None) -> "SynthConfig":
        """Build from a recipe's ``[synth]`` table; unknown keys are an error (typos must not pass silently)."""
        section = dict(section or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(section) - known
        if unknown:
            raise ValueError(f"unknown synth keys: {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
        return cls(**section)


def _as_range(v, name: str) -> Range:
    if isinstance(v, (list, tuple)):
        if len(v) != 2:
            raise ValueError(f"synth.{name}: a range is [lo, hi], got {v!r}")
        lo, hi = float(v[0]), float(v[1])
    else:
        lo, hi = -abs(float(v)), abs(float(v))
    if lo > hi:
        raise ValueError(f"synth.{name}: lo > hi in {v!r}")
    return lo, hi


def _u(rng: np.random.Generator, r: Range) -> float:
    # Always one draw, also for a fixed range: changing one range never shifts the other draws.
    return float(rng.uniform(r[0], r[1]))


def _check_image(img: np.ndarray, what: str = "image") -> None:
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"{what} must be an HxWx3 uint8 BGR array, got {getattr(img, 'dtype', type(img))} {getattr(img, 'shape', '')}")
    if img.shape[0] < 4 or img.shape[1] < 4:
        raise ValueError(f"{what} is too small: {img.shape}")


def _to_u8(x: np.ndarray) -> np.ndarray:
    # Float images here are in [0, 1]; NaN cannot arise (no division by data), but clip guards the range.
    return np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)


_LUMA_BGR = np.float32([0.114, 0.587, 0.299])


def _luma(x: np.ndarray) -> np.ndarray:
    return (x @ _LUMA_BGR)[..., None]


def _wave(h: int, w: int, fx: float, fy: float, phase: float) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of 2*pi*(fx*x + fy*y) + phase at the pixel centres, from 1-D outer products (cheap)."""
    ax = 2 * np.pi * fx * np.arange(w) + phase
    ay = 2 * np.pi * fy * np.arange(h)
    cx, sx = np.cos(ax).astype(np.float32), np.sin(ax).astype(np.float32)
    cy, sy = np.cos(ay).astype(np.float32)[:, None], np.sin(ay).astype(np.float32)[:, None]
    return cy * cx - sy * sx, sy * cx + cy * sx


def _gaussian_blob_map(h: int, w: int, rng: np.random.Generator, strength: float, streak: bool) -> np.ndarray:
    """A soft specular highlight (ellipse or elongated streak), drawn at low resolution and upsampled."""
    sh, sw = max(4, h // 4), max(4, w // 4)
    cy, cx = rng.uniform(-0.2, 1.2), rng.uniform(-0.2, 1.2)
    if streak:
        ry, rx = rng.uniform(0.02, 0.08), rng.uniform(0.3, 1.0)
    else:
        ry, rx = rng.uniform(0.04, 0.35), rng.uniform(0.04, 0.4)
    ang = rng.uniform(0, np.pi)
    yy = (np.arange(sh, dtype=np.float32)[:, None] + 0.5) / sh - cy
    xx = (np.arange(sw, dtype=np.float32)[None, :] + 0.5) / sw - cx
    c, s = math.cos(ang), math.sin(ang)
    u, v = (xx * c + yy * s) / rx, (-xx * s + yy * c) / ry
    # Small reflections of a lamp or window have a saturated core (gain above 1 before the
    # clip); large ones are soft veils.
    core = rng.uniform(1.0, 3.0) if max(rx, ry) < 0.15 else rng.uniform(0.3, 0.7) if streak else 1.0
    g = np.minimum(strength * core * np.exp(-0.5 * (u * u + v * v)), 1.0)
    return cv2.resize(g.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)


class AttackSynthesizer:
    """Synthesises screen replay and print attacks from live crops; mixes domain styles.

    ``config``: a :class:`SynthConfig`, a recipe's ``[synth]`` mapping, or None (defaults).
    Calling the object picks a kind (replay or print, weighted by ``p_replay``/``p_print``)
    and returns the attack image; :meth:`synthesize` also returns the kind.
    """

    def __init__(self, config: SynthConfig | Mapping[str, Any] | None = None):
        self.cfg = config if isinstance(config, SynthConfig) else SynthConfig.from_mapping(config)

    # --- entry points -----------------------------------------------------------------
    def __call__(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self.synthesize(img, rng)[0]

    def synthesize(self, img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        """One synthetic attack from ``img`` (BGR uint8); returns (image, kind)."""
        c = self.cfg
        total = c.p_replay + c.p_print
        if total <= 0:
            raise ValueError("synth: p_replay and p_print are both 0; no attack kind to synthesise")
        kind = "replay" if rng.random() * total < c.p_replay else "print"
        return (self.replay(img, rng) if kind == "replay" else self.print_attack(img, rng)), kind

    # --- screen replay ----------------------------------------------------------------
    def replay(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A screen replay of ``img``: display resampling, tone, defocus, sub-pixel moiré, glare, bezel."""
        _check_image(img)
        c = self.cfg
        h, w = img.shape[:2]
        f = _u(rng, c.replay_resample)
        if f > 1.05:  # the content as the display shows it: fewer pixels than the crop
            small = cv2.resize(img, (max(4, round(w / f)), max(4, round(h / f))), interpolation=cv2.INTER_AREA)
            img = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
        x = img.astype(np.float32) * np.float32(1 / 255)

        # Display tone: gamut compressed towards luma, gamma, raised black, white level, cool cast.
        y = _luma(x)
        x = y + (x - y) * np.float32(_u(rng, c.replay_gamut))
        np.clip(x, 0.0, 1.0, out=x)
        x **= np.float32(_u(rng, c.replay_gamma))
        black, white = _u(rng, c.replay_black), _u(rng, c.replay_white)
        gains = 1.0 + rng.uniform(c.replay_cast[0], c.replay_cast[1], size=3)
        gains[0] += abs(c.replay_cast[1]) * 0.5  # displays run blue (6500-9000 K white points)
        x = x * np.float32((white - black) * gains / gains.max()) + np.float32(black)
        x *= np.float32(_u(rng, c.replay_exposure))  # auto-exposure on a bright screen: highlights clip
        np.minimum(x, 1.0, out=x)

        sigma = _u(rng, c.replay_defocus)
        if sigma >= 0.3:
            x = cv2.GaussianBlur(x, (0, 0), sigma)

        if rng.random() < c.replay_p_moire:
            x = x * self._subpixel_mask(h, w, rng)
        if rng.random() < c.p_glare:
            x = self._glare(x, rng)
        if rng.random() < c.p_bezel:
            x = self._bezel(x, rng)
        return _to_u8(x)

    def _subpixel_mask(self, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
        """Per-channel transmission of an RGB-stripe display grid, sampled at the camera pixels (mean 1).

        Each display pixel has three vertical stripes (R, G, B from left to right) of width
        ``fill/3`` and a black-matrix gap between rows. Their Fourier series (three stripe and
        two row harmonics, attenuated by the lens) are evaluated at integer pixel positions, so
        any harmonic above 0.5 cycles/pixel aliases into the low-frequency beat a camera records.
        """
        c = self.cfg
        pitch = _u(rng, c.replay_pitch)
        theta = math.radians(_u(rng, c.replay_angle))
        depth = _u(rng, c.replay_moire)
        fill = _u(rng, c.replay_fill)
        row_fill = float(rng.uniform(0.75, 0.95))
        phase_s, phase_t = rng.uniform(0, 2 * np.pi, size=2)
        optic = float(rng.uniform(0.1, 0.35))  # lens blur sigma (pixels): shapes the harmonics before sampling
        # The sensor's own aliasing (Bayer mosaic, fill factor) is unknown, so ``depth`` sets the
        # fundamental's modulation and the lens only sets the higher harmonics relative to it.
        w_stripe, w_rows = float(rng.uniform(0.5, 1.0)), float(rng.uniform(0.3, 1.0))
        cs, sn = math.cos(theta) / pitch, math.sin(theta) / pitch

        def mtf(f: float) -> float:
            return math.exp(-2 * (math.pi * optic * f) ** 2)

        # Channel ch's stripes are those of channel 0 shifted by a third of a pixel per step; as
        # Re(e^{i(a - psi)}) = cos a cos psi + sin a sin psi, each harmonic's cos and sin serve all three.
        stripe = np.zeros((3, h, w), np.float32)
        for k in (1, 2, 3):
            cos, sin = _wave(h, w, k * cs, k * sn, k * phase_s)
            amp = w_stripe * np.sinc(k * fill / 3.0) * mtf(k / pitch) / (np.sinc(fill / 3.0) * mtf(1 / pitch))
            for ch in range(3):  # BGR channel ch is the stripe centred at (2 - ch + 0.5)/3 of the pixel (R leftmost)
                psi = 2 * np.pi * k * (2 - ch + 0.5) / 3.0
                stripe[ch] += np.float32(amp * math.cos(psi)) * cos + np.float32(amp * math.sin(psi)) * sin
        rows = np.zeros((h, w), np.float32)
        for k in (1, 2):
            amp = w_rows * np.sinc(k * row_fill) * mtf(k / pitch) / (np.sinc(row_fill) * mtf(1 / pitch))
            rows += np.float32(amp) * _wave(h, w, -k * sn, k * cs, k * phase_t)[0]
        mask = 1.0 + np.float32(depth) * stripe
        mask *= 1.0 + np.float32(depth) * rows
        np.maximum(mask, 0.0, out=mask)
        mask /= mask.mean(axis=(1, 2), keepdims=True) + np.float32(1e-6)
        return cv2.merge(list(mask))

    def _glare(self, x: np.ndarray, rng: np.random.Generator, strength: Range | None = None) -> np.ndarray:
        h, w = x.shape[:2]
        s = _u(rng, strength or self.cfg.glare_strength)
        g = _gaussian_blob_map(h, w, rng, s, streak=bool(rng.random() < 0.4))
        if rng.random() < 0.3:  # a second, weaker reflection
            g += _gaussian_blob_map(h, w, rng, 0.5 * s, streak=bool(rng.random() < 0.4))
        tint = np.float32(1.0 - rng.uniform(0.0, 0.08, size=3))
        g = np.minimum(g, 1.0)[..., None]
        return x + g * (tint - x)  # "screen" blend towards the light source's colour

    def _bezel(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A dark bezel band along one side (slightly tilted), with the room beyond it sometimes."""
        side = int(rng.integers(4))
        out = x.copy()
        # A view of ``out`` in which the band is on the left; writing into it writes into ``out``.
        view = (out, out[:, ::-1], out.transpose(1, 0, 2), out[::-1].transpose(1, 0, 2))[side]
        n_along, n_across = view.shape[:2]
        width = _u(rng, self.cfg.bezel_width) * n_across
        tilt = math.tan(math.radians(rng.uniform(-6, 6)))
        m = min(n_across, int(math.ceil(width + abs(tilt) * n_along / 2 + 4)))
        along = np.arange(n_along, dtype=np.float32)[:, None] - n_along / 2
        d = np.arange(m, dtype=np.float32)[None, :] - np.float32(width) - np.float32(tilt) * along  # < 0: bezel
        alpha = np.clip(0.5 - d, 0.0, 1.0)[..., None]  # anti-aliased edge
        level = rng.uniform(0.02, 0.15)
        bezel = np.float32(level * (1.0 + rng.uniform(-0.1, 0.1, size=3)))
        edge = np.exp(-0.5 * (d / 0.8) ** 2)[..., None] * np.float32(rng.uniform(0.0, 0.25))  # its lit inner edge
        strip = view[:, :m] * (1.0 - alpha) + alpha * bezel + edge
        if rng.random() < 0.5:  # the bezel's outer edge is in the crop: the room or hand beyond it
            beta = np.clip(0.5 - (d + np.float32(width * rng.uniform(0.3, 0.7))), 0.0, 1.0)[..., None]
            room = np.float32(rng.uniform(0.15, 0.7) * (1.0 + rng.uniform(-0.15, 0.15, size=3)))
            strip = strip * (1.0 - beta) + beta * room
        view[:, :m] = strip
        return out

    # --- print ------------------------------------------------------------------------
    def print_attack(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A printed photo of ``img``: ink/paper tone, halftone or dither, paper texture, shading, blur."""
        _check_image(img)
        c = self.cfg
        h, w = img.shape[:2]
        x = img.astype(np.float32) * np.float32(1 / 255)
        y = _luma(x)
        x = y + (x - y) * np.float32(_u(rng, c.print_saturation))
        np.clip(x, 0.0, 1.0, out=x)
        x **= np.float32(_u(rng, c.print_gamma))

        # Halftone on the ink coverage (C, M, Y = 1 - R, G, B), blended into the continuous tone.
        alpha = _u(rng, c.print_halftone)
        ink = 1.0 - x
        soft = float(rng.uniform(0.12, 0.3))
        if rng.random() < c.print_p_halftone:
            screen = self._dot_screens(h, w, rng)
        else:
            screen = self._bayer_screen(h, w, rng)
        dots = np.clip((ink - screen) / soft + 0.5, 0.0, 1.0)
        x = (1.0 - alpha) * x + alpha * (1.0 - dots)

        # Paper and ink: reduced dynamic range and a colour cast (warm paper by default).
        black, white = _u(rng, c.print_black), _u(rng, c.print_white)
        gains = 1.0 + rng.uniform(c.print_cast[0], c.print_cast[1], size=3)
        gains[0] -= abs(c.print_cast[1]) * 0.5  # less blue: paper and lamps are warm
        x = x * np.float32((white - black) * gains / gains.max()) + np.float32(black)

        # Paper texture (fibres: anisotropic low-res noise) and the bend of a hand-held sheet.
        amp = _u(rng, c.print_texture)
        th, tw = max(4, h // 3), max(4, w // 3)
        tex = rng.standard_normal((th, tw)).astype(np.float32)
        tex = cv2.GaussianBlur(tex, (0, 0), sigmaX=float(rng.uniform(0.6, 2.0)), sigmaY=float(rng.uniform(0.3, 0.8)))
        tex *= np.float32(amp / (tex.std() + 1e-6))
        tex = cv2.resize(tex, (w, h), interpolation=cv2.INTER_CUBIC)
        ang = rng.uniform(0, 2 * np.pi)
        ramp_x = (np.arange(w, dtype=np.float32) / max(w - 1, 1) - 0.5) * np.float32(math.cos(ang))
        ramp_y = (np.arange(h, dtype=np.float32) / max(h - 1, 1) - 0.5) * np.float32(math.sin(ang))
        shade = 1.0 + np.float32(_u(rng, c.print_shading)) * 2.0 * (ramp_y[:, None] + ramp_x[None, :])
        x = x * (shade + tex)[..., None]

        if rng.random() < c.print_p_glare:
            x = self._glare(x, rng, (0.1, 0.35))
        sigma = _u(rng, c.print_blur)
        if sigma >= 0.3:
            x = cv2.GaussianBlur(x, (0, 0), sigma)
        return _to_u8(x)

    def _dot_screens(self, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
        """Clustered-dot thresholds in [0, 1] per channel: Y 0°, M 75°, C 15° (BGR order), plus a common rotation."""
        pitch = _u(rng, self.cfg.print_pitch)
        base = rng.uniform(0, 90)
        out = np.empty((h, w, 3), np.float32)
        for ch, ang in enumerate((0.0, 75.0, 15.0)):
            t = math.radians(base + ang)
            cs, sn = math.cos(t) / pitch, math.sin(t) / pitch
            ph = rng.uniform(0, 2 * np.pi, size=2)
            a = _wave(h, w, cs, sn, ph[0])[0]
            b = _wave(h, w, -sn, cs, ph[1])[0]
            out[..., ch] = 0.5 - 0.25 * (a + b)  # low at the dot centres: ink grows from there
        return out

    def _bayer_screen(self, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
        """Ordered-dither thresholds: a 4x4 or 8x8 Bayer matrix, tiled at 1-2 pixels per cell."""
        b = np.array([[0, 2], [3, 1]], np.float32)
        n = 4 if rng.random() < 0.5 else 8
        while b.shape[0] < n:
            b = np.block([[4 * b, 4 * b + 2], [4 * b + 3, 4 * b + 1]])
        b = (b + 0.5) / (n * n)
        cell = int(rng.integers(1, 3))
        b = np.kron(b, np.ones((cell, cell), np.float32))
        oy, ox = rng.integers(0, b.shape[0], size=2)
        tile = np.tile(b, (h // b.shape[0] + 2, w // b.shape[1] + 2))[oy : oy + h, ox : ox + w]
        return np.repeat(tile[..., None], 3, axis=2)

    # --- domain-style mixing ----------------------------------------------------------
    def style_mix(self, img: np.ndarray, ref: np.ndarray, rng: np.random.Generator, strength: float | None = None) -> np.ndarray:
        """``img`` in the style of ``ref`` (a crop from another domain), by FDA or Lab statistics.

        ``strength`` in [0, 1] blends between the crop's own style (0) and the reference's (1);
        None draws it from ``style_strength``. The method follows ``style_method``.
        """
        _check_image(img)
        _check_image(ref, "reference")
        c = self.cfg
        s = _u(rng, c.style_strength) if strength is None else float(strength)
        if not 0.0 <= s <= 1.0:
            raise ValueError(f"style strength must be in [0, 1], got {strength!r}")
        method = c.style_method if c.style_method != "both" else ("fda" if rng.random() < 0.5 else "lab")
        if method == "fda":
            return fda_mix(img, ref, s, _u(rng, c.fda_beta))
        return lab_stats_mix(img, ref, s)


def fda_mix(img: np.ndarray, ref: np.ndarray, strength: float, beta: float) -> np.ndarray:
    """Fourier domain adaptation: blend the low-frequency amplitude of ``ref`` into ``img``, phase kept.

    The window is |ky|, |kx| <= beta * min(H, W) (at least 1) around DC, i.e. the illumination
    and colour layout; higher frequencies (the face's texture, and any attack cue) are untouched.
    """
    h, w = img.shape[:2]
    if ref.shape[:2] != (h, w):
        ref = cv2.resize(ref, (w, h), interpolation=cv2.INTER_AREA)
    b = min(max(1, int(beta * min(h, w))), (min(h, w) - 1) // 2)
    rows = np.r_[0 : b + 1, h - b : h]
    cols = np.r_[0 : b + 1, w - b : w]
    out = np.empty((h, w, 3), np.float32)
    for ch in range(3):
        f = cv2.dft(np.ascontiguousarray(img[..., ch], dtype=np.float32), flags=cv2.DFT_COMPLEX_OUTPUT)
        fr = cv2.dft(np.ascontiguousarray(ref[..., ch], dtype=np.float32), flags=cv2.DFT_COMPLEX_OUTPUT)
        win = f[np.ix_(rows, cols)]
        amp = np.sqrt((win * win).sum(-1, keepdims=True))
        amp_ref = np.sqrt((fr[np.ix_(rows, cols)] ** 2).sum(-1, keepdims=True))
        # Conjugate-symmetric window and scale, so the inverse stays real.
        f[np.ix_(rows, cols)] = win * (((1.0 - strength) * amp + strength * amp_ref) / np.maximum(amp, 1e-3))
        out[..., ch] = cv2.idft(f, flags=cv2.DFT_REAL_OUTPUT | cv2.DFT_SCALE)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def lab_stats_mix(img: np.ndarray, ref: np.ndarray, strength: float) -> np.ndarray:
    """Move ``img``'s per-channel mean and std in CIE Lab towards ``ref``'s (Reinhard colour transfer)."""
    lab = cv2.cvtColor(img.astype(np.float32) * np.float32(1 / 255), cv2.COLOR_BGR2Lab)
    lab_ref = cv2.cvtColor(ref.astype(np.float32) * np.float32(1 / 255), cv2.COLOR_BGR2Lab)
    mu, sd = (v.ravel() for v in cv2.meanStdDev(lab))
    mu_r, sd_r = (v.ravel() for v in cv2.meanStdDev(lab_ref))
    # Bound the contrast change: a flat reference (or crop) must not blow the face up or flatten it.
    ratio = np.clip(sd_r / np.maximum(sd, 1e-3), 1 / 3, 3.0)
    gain = np.float32(1.0 + strength * (ratio - 1.0))
    offset = np.float32(strength * (mu_r - mu * ratio))
    lab = lab * gain + offset  # = lab + strength * ((lab - mu) * ratio + mu_r - lab)
    return _to_u8(cv2.cvtColor(lab, cv2.COLOR_Lab2BGR))


def maybe_synthesize(
    image: np.ndarray,
    label: int,
    rng: np.random.Generator,
    cfg: AttackSynthesizer | SynthConfig | Mapping[str, Any] | None,
    ref: np.ndarray | None = None,
) -> tuple[np.ndarray, int]:
    """The dataset hook: maybe turn a crop into a synthetic attack, maybe mix its style with ``ref``.

    - A live crop (label 1) eligible under ``apply_to`` (``real_only`` or ``both``) becomes a
      replay/print attack with probability ``p_synth`` and is relabelled 0.
    - An attack (label 0) is changed only if ``apply_to`` is ``attack_only`` or ``both``
      (extra artefacts, still label 0); otherwise it is returned as it came.
    - With a reference crop (from another domain), style mixing applies to either class with
      probability ``p_style_mix``; the label is kept.
    Crops that nothing applies to are returned as the same object, unchanged.
    """
    synth = cfg if isinstance(cfg, AttackSynthesizer) else AttackSynthesizer(cfg)
    c = synth.cfg
    label = int(label)
    if label not in (REAL, ATTACK):
        raise ValueError(f"label must be {REAL} (real) or {ATTACK} (attack), got {label}")
    eligible = c.apply_to == "both" or (c.apply_to == "real_only" and label == REAL) or (c.apply_to == "attack_only" and label == ATTACK)
    if eligible and c.p_synth > 0 and rng.random() < c.p_synth:
        image = synth(image, rng)
        label = ATTACK
    if ref is not None and c.p_style_mix > 0 and rng.random() < c.p_style_mix:
        image = synth.style_mix(image, ref, rng)
    return image, label


def pick_reference(domains: Sequence[str], i: int, rng: np.random.Generator, tries: int = 16) -> int | None:
    """Index of a random crop from another domain than crop ``i`` (for :func:`maybe_synthesize`'s ``ref``).

    ``domains``: one domain name per crop (e.g. the CropSet's ``sets``). Rejection sampling, so
    it costs a few draws whatever the size; None when no other domain turns up (one domain only).
    """
    n = len(domains)
    for _ in range(tries):
        j = int(rng.integers(n))
        if domains[j] != domains[i]:
            return j
    return None


def contact_sheet(crops: list[np.ndarray], synth: AttackSynthesizer, seed: int = 0, size: int = 128, refs: list[np.ndarray] | None = None) -> np.ndarray:
    """A BGR sheet: one row per crop: original, 3 replays, 3 prints (and 2 style mixes when ``refs``)."""
    rows = []
    for i, crop in enumerate(crops):
        crop = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
        rng = np.random.default_rng([seed, i])
        tiles = [crop] + [synth.replay(crop, rng) for _ in range(3)] + [synth.print_attack(crop, rng) for _ in range(3)]
        if refs:
            for j in range(2):
                ref = cv2.resize(refs[(i + j) % len(refs)], (size, size), interpolation=cv2.INTER_AREA)
                tiles.append(synth.style_mix(crop, ref, rng))
        rows.append(np.concatenate(tiles, axis=1))
    return np.concatenate(rows, axis=0)


@click.command(cls=Command, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("data", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("/tmp/synth_sheet.png"), show_default=True)
@click.option("--n", type=click.IntRange(min=1), default=8, show_default=True, help="Live crops on the sheet.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--size", type=click.IntRange(min=16), default=128, show_default=True)
def cli(data: Path, out: Path, n: int, seed: int, size: int) -> None:
    """Contact sheet of synthetic attacks from live crops (for eyes, not for the repository).

    DATA: a folder with live class folders somewhere below it (e.g. .../data/webcam).
    """
    from spoofsdk import folders

    files = [p for p in folders.image_files(data) if folders.label_of(p.parent.name) == 1]
    if not files:
        raise click.ClickException(f"no live images (class folders {', '.join(sorted(folders.REAL_NAMES))}) under {data}")
    pick = np.random.default_rng(seed).choice(len(files), size=min(n * 2, len(files)), replace=False)
    images = [folders.read_image(files[i]) for i in pick]
    sheet = contact_sheet(images[:n], AttackSynthesizer(), seed, size, refs=images[n:] or None)
    cv2.imwrite(str(out), sheet)
    click.echo(str(out))


def _main(argv: list[str] | None = None) -> int:
    from spoofsdk.clitools import run_main

    return run_main(cli, argv, prog_name="python -m spoofsdk_train.synth")


if __name__ == "__main__":
    raise SystemExit(_main())
