"""spoofsdk_train.synth: synthetic replay/print attacks and style mixing, on real face crops."""
from __future__ import annotations

import tomllib

import cv2
import numpy as np
import pytest

from conftest import require, sample_files

pytest.importorskip("spoofsdk_train", reason="the trainer (pip install -e ./trainer) is not installed")

from spoofsdk_train.synth import ATTACK, REAL, AttackSynthesizer, SynthConfig, fda_mix, lab_stats_mix, maybe_synthesize, pick_reference

SIZE = 128


def _load(files) -> list[np.ndarray]:
    out = []
    for f in files:
        img = cv2.imread(str(f), cv2.IMREAD_COLOR)
        assert img is not None, f
        out.append(cv2.resize(img, (SIZE, SIZE), interpolation=cv2.INTER_AREA))
    return out


@pytest.fixture(scope="module")
def live_crops(data_dir) -> list[np.ndarray]:
    """Live crops from several webcam sources (one per source, so lighting and cameras differ)."""
    webcam = require(data_dir / "webcam", "webcam face crops")
    sources = sorted(d for d in webcam.iterdir() if (d / "real").is_dir())
    return _load([sample_files(s / "real", 1)[0] for s in sources[:8]])


@pytest.fixture(scope="module")
def attack_crop(data_dir) -> np.ndarray:
    webcam = require(data_dir / "webcam", "webcam face crops")
    return _load(sample_files(webcam / "jtboing" / "attack", 1))[0]


@pytest.fixture(scope="module")
def other_domain(gc535_dir) -> list[np.ndarray]:
    """Reference crops from another domain (gc535's office camera) for style mixing."""
    return _load(sample_files(gc535_dir / "train" / "real", 3))


def _luma(img: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float32)


def _kinds(synth: AttackSynthesizer, ref: np.ndarray):
    return {
        "replay": synth.replay,
        "print": synth.print_attack,
        "call": synth,
        "style_mix": lambda img, rng: synth.style_mix(img, ref, rng),
    }


@pytest.mark.parametrize("kind", ["replay", "print", "call", "style_mix"])
def test_transforms_are_deterministic_and_keep_shape_and_dtype(live_crops, other_domain, kind):
    fn = _kinds(AttackSynthesizer(), other_domain[0])[kind]
    for i, img in enumerate(live_crops):
        before = img.copy()
        a = fn(img, np.random.default_rng([7, i]))
        b = fn(img, np.random.default_rng([7, i]))
        c = fn(img, np.random.default_rng([8, i]))
        np.testing.assert_array_equal(img, before)  # the input is never modified in place
        assert a.shape == img.shape and a.dtype == np.uint8
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c), f"{kind}: another seed gave the same image"


@pytest.mark.parametrize("kind", ["replay", "print", "call", "style_mix"])
def test_transforms_change_the_crop_but_keep_the_face(live_crops, other_domain, kind):
    fn = _kinds(AttackSynthesizer(), other_domain[1])[kind]
    m = slice(SIZE // 5, SIZE - SIZE // 5)  # the middle: a bezel may cover a side
    corr = []
    for i, img in enumerate(live_crops):
        for seed in range(3):
            out = fn(img, np.random.default_rng([1, i, seed]))
            assert np.abs(out.astype(np.int16) - img).mean() > 2.0, f"{kind}: crop {i} hardly changed"
            assert 5.0 < out.mean() < 250.0 and out.std() > 5.0, f"{kind}: crop {i} washed out or flat"
            small_in = cv2.resize(_luma(img)[m, m], (12, 12), interpolation=cv2.INTER_AREA).ravel()
            small_out = cv2.resize(_luma(out)[m, m], (12, 12), interpolation=cv2.INTER_AREA).ravel()
            corr.append(np.corrcoef(small_in, small_out)[0, 1])
    # The face's layout survives: coarse luminance still follows the input's. (Glare or strong
    # moire on a low-contrast face may hide it in a few draws, as they do in real replays.)
    corr = np.asarray(corr)
    assert np.median(corr) > 0.85 and (corr > 0.5).mean() > 0.8, np.round(corr, 2)


def test_non_square_crops_and_extreme_inputs(live_crops):
    synth = AttackSynthesizer({"p_glare": 1.0, "p_bezel": 1.0, "print_p_glare": 1.0})
    rect = cv2.resize(live_crops[0], (96, 150))
    flat = [np.zeros((40, 40, 3), np.uint8), np.full((40, 40, 3), 255, np.uint8), np.full((8, 8, 3), 128, np.uint8)]
    for img in [rect, live_crops[1][:, ::-1], *flat]:  # also a flipped (negative-stride) view
        for seed in range(5):
            rng = np.random.default_rng(seed)
            for out in (synth.replay(img, rng), synth.print_attack(img, rng), synth.style_mix(img, rect, rng), synth.style_mix(rect, img, rng)):
                assert out.shape[2] == 3 and out.dtype == np.uint8
            assert synth.replay(img, rng).shape == img.shape and synth.print_attack(img, rng).shape == img.shape


def test_bad_inputs_are_typed_errors(live_crops):
    synth = AttackSynthesizer()
    rng = np.random.default_rng(0)
    for bad in (live_crops[0].astype(np.float32), live_crops[0][..., 0], np.zeros((2, 2, 3), np.uint8), None):
        with pytest.raises(ValueError):
            synth.replay(bad, rng)
        with pytest.raises(ValueError):
            synth.print_attack(bad, rng)
    with pytest.raises(ValueError):
        synth.style_mix(live_crops[0], live_crops[1], rng, strength=1.5)
    with pytest.raises(ValueError):
        maybe_synthesize(live_crops[0], 2, rng, {})


def _spectrum(img: np.ndarray) -> np.ndarray:
    x = img.astype(np.float32)
    x -= x.mean(axis=(0, 1))
    return (np.abs(np.fft.fft2(x, axes=(0, 1))) ** 2).sum(-1)


def test_replay_adds_periodic_energy_in_the_moire_band(live_crops):
    # Same draws with and without the sub-pixel grid (every range always takes one draw), so
    # the difference is the grid alone; glare, bezel and clipping are off to keep it clean.
    base = {"replay_p_moire": 1.0, "replay_moire": [0.15, 0.3], "p_glare": 0.0, "p_bezel": 0.0, "replay_exposure": [1.0, 1.0]}
    with_grid, without = AttackSynthesizer(base), AttackSynthesizer({**base, "replay_moire": [0.0, 0.0]})
    f = np.fft.fftfreq(SIZE)
    band = np.hypot(f[:, None], f[None, :]) > 0.03  # everything but the illumination
    ratios = []
    for i, img in enumerate(live_crops):
        for seed in range(3):
            a = with_grid.replay(img, np.random.default_rng([i, seed]))
            b = without.replay(img, np.random.default_rng([i, seed]))
            ratios.append(_spectrum(a)[band].sum() / _spectrum(b)[band].sum())
            diff = _spectrum(a.astype(np.float32) - b)
            top = np.sort(diff.ravel())[::-1]
            # A grid, not noise: 1 % of the frequency bins hold most of what it adds.
            assert top[: top.size // 100].sum() > 0.6 * top.sum()
    assert min(ratios) > 1.05, ratios
    assert np.median(ratios) > 1.3, ratios


def test_print_reduces_dynamic_range_and_saturation(live_crops):
    synth = AttackSynthesizer()

    def tone_range(img):  # of the tones, not of the halftone texture: blurred, robust percentiles
        y = cv2.GaussianBlur(_luma(img), (0, 0), 2.0)
        return np.percentile(y, 99) - np.percentile(y, 1), np.percentile(y, 1), np.percentile(y, 99)

    def chroma(img):
        lab = cv2.cvtColor(img, cv2.COLOR_BGR2Lab).astype(np.float32)
        return np.hypot(lab[..., 1] - 128, lab[..., 2] - 128).mean()

    ratios, chroma_ratios = [], []
    for i, img in enumerate(live_crops):
        y = _luma(img)
        lo, hi = np.percentile(y, 1), np.percentile(y, 99)
        full = np.clip((img.astype(np.float32) - lo) * 255.0 / (hi - lo), 0, 255).astype(np.uint8)  # full-range scene
        for seed in range(3):
            out = synth.print_attack(full, np.random.default_rng([i, seed]))
            r_out, black, white = tone_range(out)
            ratios.append(r_out / tone_range(full)[0])
            assert black > 8.0, "ink never reaches the camera's black"
            assert white < 250.0, "paper never reaches the camera's white"
            chroma_ratios.append(chroma(out) / max(chroma(full), 1e-3))
    assert max(ratios) < 0.95 and np.mean(ratios) < 0.85, ratios
    assert np.median(chroma_ratios) < 0.9, chroma_ratios


def test_style_mix_moves_towards_the_reference(live_crops, other_domain):
    for method in ("fda", "lab"):
        synth = AttackSynthesizer({"style_method": method})
        for i, img in enumerate(live_crops):
            ref = other_domain[i % len(other_domain)]
            lab_in = cv2.cvtColor(img, cv2.COLOR_BGR2Lab).reshape(-1, 3).astype(np.float32).mean(0)
            lab_ref = cv2.cvtColor(ref, cv2.COLOR_BGR2Lab).reshape(-1, 3).astype(np.float32).mean(0)
            out = synth.style_mix(img, ref, np.random.default_rng(i), strength=1.0)
            lab_out = cv2.cvtColor(out, cv2.COLOR_BGR2Lab).reshape(-1, 3).astype(np.float32).mean(0)
            before, after = np.linalg.norm(lab_in - lab_ref), np.linalg.norm(lab_out - lab_ref)
            assert after < 0.5 * before + 3.0, (method, i, before, after)
            # Strength 0 is the identity (up to rounding).
            same = synth.style_mix(img, ref, np.random.default_rng(i), strength=0.0)
            assert np.abs(same.astype(np.int16) - img).max() <= 1


def test_style_mix_keeps_the_texture(live_crops, other_domain):
    def high_pass(img):
        y = _luma(img)
        return y - cv2.GaussianBlur(y, (0, 0), 3.0)

    for i, img in enumerate(live_crops):
        ref = other_domain[i % len(other_domain)]
        for out in (fda_mix(img, ref, 1.0, 0.03), lab_stats_mix(img, ref, 1.0)):
            assert out.shape == img.shape and out.dtype == np.uint8
            ok = (out > 0) & (out < 255)  # clipped pixels lose texture by definition
            ok = ok.all(-1)
            assert ok.mean() > 0.5
            # Fine detail (where an attack's cues live) is kept: only its gain may change (Lab std).
            assert np.corrcoef(high_pass(img)[ok], high_pass(out)[ok])[0, 1] > 0.9


# --- the dataset hook -------------------------------------------------------------------
def test_hook_default_recipe_touches_nothing(live_crops, attack_crop, other_domain):
    for seed in range(20):
        for img, label in ((live_crops[0], REAL), (attack_crop, ATTACK)):
            out, lab = maybe_synthesize(img, label, np.random.default_rng(seed), {}, ref=other_domain[0])
            assert out is img and lab == label


@pytest.mark.parametrize(
    "apply_to, live_changes, attack_changes",
    [("real_only", True, False), ("attack_only", False, True), ("both", True, True)],
)
def test_hook_relabels_only_as_configured(live_crops, attack_crop, apply_to, live_changes, attack_changes):
    synth = AttackSynthesizer({"p_synth": 1.0, "apply_to": apply_to})
    for seed in range(5):
        out, lab = maybe_synthesize(live_crops[seed], REAL, np.random.default_rng(seed), synth)
        if live_changes:
            assert lab == ATTACK and not np.array_equal(out, live_crops[seed])
        else:
            assert lab == REAL and out is live_crops[seed]
        out, lab = maybe_synthesize(attack_crop, ATTACK, np.random.default_rng(seed), synth)
        assert lab == ATTACK  # an attack never becomes live
        if attack_changes:
            assert not np.array_equal(out, attack_crop)
        else:
            assert out is attack_crop


def test_hook_probability_and_determinism(live_crops):
    cfg = SynthConfig(p_synth=0.3)
    labels = [maybe_synthesize(live_crops[i % 4], REAL, np.random.default_rng([3, i]), cfg)[1] for i in range(300)]
    frac = labels.count(ATTACK) / len(labels)
    assert 0.2 < frac < 0.4, frac  # binomial(300, 0.3): sd 0.026
    a = maybe_synthesize(live_crops[0], REAL, np.random.default_rng(11), cfg)
    b = maybe_synthesize(live_crops[0], REAL, np.random.default_rng(11), cfg)
    assert a[1] == b[1] and np.array_equal(a[0], b[0])


def test_hook_style_mix_keeps_labels_for_both_classes(live_crops, attack_crop, other_domain):
    synth = AttackSynthesizer({"p_style_mix": 1.0})  # p_synth stays 0: no relabelling at all
    for img, label in ((live_crops[2], REAL), (attack_crop, ATTACK)):
        out, lab = maybe_synthesize(img, label, np.random.default_rng(0), synth, ref=other_domain[0])
        assert lab == label and out.shape == img.shape and not np.array_equal(out, img)
        out, lab = maybe_synthesize(img, label, np.random.default_rng(0), synth, ref=None)  # no reference: no mixing
        assert out is img and lab == label


def test_pick_reference_comes_from_another_domain():
    domains = ["nuaa"] * 50 + ["gc535"] * 30 + ["webcam/jtboing"] * 20
    rng = np.random.default_rng(0)
    for i in (0, 49, 50, 99):
        picks = [pick_reference(domains, i, rng) for _ in range(50)]
        assert all(p is not None and domains[p] != domains[i] for p in picks)
        assert len({domains[p] for p in picks}) == 2  # both other domains turn up
    assert pick_reference(["nuaa"] * 10, 3, rng) is None


# --- configuration ----------------------------------------------------------------------
def test_config_from_a_recipe_section():
    section = tomllib.loads(
        """
        [synth]
        p_synth = 0.25
        apply_to = "both"
        p_print = 0.0
        replay_angle = 10.0
        replay_pitch = [0.8, 1.2]
        """
    )["synth"]
    cfg = SynthConfig.from_mapping(section)
    assert cfg.p_synth == 0.25 and cfg.apply_to == "both"
    assert cfg.replay_angle == (-10.0, 10.0) and cfg.replay_pitch == (0.8, 1.2)
    kinds = {AttackSynthesizer(cfg).synthesize(np.full((32, 32, 3), 100, np.uint8), np.random.default_rng(s))[1] for s in range(10)}
    assert kinds == {"replay"}


@pytest.mark.parametrize(
    "section",
    [
        {"p_sinth": 0.5},  # typo
        {"p_synth": 1.5},
        {"p_synth": [0.1, 0.2]},
        {"apply_to": "everything"},
        {"style_method": "cyclegan"},
        {"replay_pitch": [2.0, 1.0]},
        {"replay_pitch": [0.0, 1.0]},
        {"replay_moire": [0.1, 2.0]},
        {"style_strength": [0.5, 1.5]},
        {"p_synth": 0.5, "p_replay": 0.0, "p_print": 0.0},
    ],
)
def test_bad_config_is_refused(section):
    with pytest.raises(ValueError):
        SynthConfig.from_mapping(section)


def test_hook_takes_no_draws_when_off(live_crops):
    # A recipe without [synth] must leave the augmentation stream exactly as it was.
    rng = np.random.default_rng(5)
    maybe_synthesize(live_crops[0], REAL, rng, {}, ref=live_crops[1])
    assert rng.random() == np.random.default_rng(5).random()
