"""spoofsdk_train.cues: per-domain AUC of plain image statistics, and the flips that make a model rank a domain backwards."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("spoofsdk_train", reason="the trainer (pip install -e ./trainer) is not installed")

from spoofsdk.metrics import roc_auc
from spoofsdk_train.augment import Augmenter, dim, match_cues
from spoofsdk_train.cues import STATISTICS, crop_statistics, cue_table, flips, format_cues
from spoofsdk_train.data import prepare

from conftest import require, sample_files


def _domain(root: Path, live_brightness: int, attack_brightness: int, n: int = 6) -> Path:
    """A tiny face-crop data set whose classes differ in brightness only: one grey grain pattern
    (no colour, so no saturation) added to a different level per class, nothing else."""
    grain = np.random.default_rng(0).normal(0, 6, (48, 48, 1))
    for label, level in (("real", live_brightness), ("attack", attack_brightness)):
        (root / label).mkdir(parents=True)
        img = np.repeat(np.clip(level + grain, 0, 255), 3, axis=2).astype(np.uint8)
        for i in range(n):
            cv2.imwrite(str(root / label / f"{i}.png"), img)
    return root


@pytest.fixture(scope="module")
def two_domains(tmp_path_factory) -> list[Path]:
    base = tmp_path_factory.mktemp("cues")
    bright_live = _domain(base / "raw" / "bright_live", 180, 90)
    dark_live = _domain(base / "raw" / "dark_live", 70, 160)
    return [prepare(d, base / "cache", size=32, faces="crop", progress=False).parent for d in (bright_live, dark_live)]


def test_brightness_cue_and_its_flip_are_found(two_domains):
    rows = cue_table(two_domains, size=32)
    by = {r["domain"]: r for r in rows}
    assert by["bright_live"]["real"] == by["bright_live"]["attack"] == 6
    assert by["bright_live"]["brightness"] == 1.0 and by["dark_live"]["brightness"] == 0.0
    assert flips(rows) == ["brightness"]
    text = format_cues(rows)
    assert "**1.00**" in text and "**0.00**" in text and "flips" in text and "brightness." in text


def test_one_class_domain_has_no_auc_and_bad_crops_are_refused(two_domains, tmp_path):
    rows = cue_table(two_domains[:1], size=32, splits=["train"])
    items = json.loads((two_domains[0] / "manifest.json").read_text())["items"]
    train = [it for it in items if it["split"] == "train"]
    assert 0 < len(train) < len(items)
    assert (rows[0]["real"], rows[0]["attack"]) == (sum(it["label"] == 1 for it in train), sum(it["label"] == 0 for it in train))
    only_live = _domain(tmp_path / "raw" / "only_live", 120, 120)
    for f in (only_live / "attack").iterdir():
        f.unlink()
    (only_live / "attack").rmdir()
    row = cue_table([prepare(only_live, tmp_path / "cache", size=32, faces="crop", progress=False).parent])[0]
    assert row["attack"] == 0 and all(row[name] is None for name in STATISTICS)
    with pytest.raises(ValueError, match="BGR uint8"):
        crop_statistics(np.zeros((8, 8), np.uint8))


def test_cli_writes_the_table_and_json(two_domains, tmp_path, capsys):
    from spoofsdk_train.cli import main

    out = tmp_path / "cues.json"
    assert main(["cues", *map(str, two_domains), "--size", "32", "--json", str(out)]) == 0
    assert "| bright_live | 6 / 6 |" in capsys.readouterr().out
    assert [r["domain"] for r in json.loads(out.read_text())] == ["bright_live", "dark_live"]


# --- cue matching (augment.cue_match_p): the same four statistics, set to class-independent targets ---

def _two_class_crops(n: int = 16) -> tuple[list[np.ndarray], np.ndarray]:
    """Live crops bright, colourful and sharp; attacks dark, dull and blurred: every statistic a perfect cue."""
    rng = np.random.default_rng(1)
    images, labels = [], []
    for label in (1, 0):
        for _ in range(n):
            texture = cv2.resize(rng.uniform(0, 255, (16, 16, 3)).astype(np.float32), (64, 64), interpolation=cv2.INTER_CUBIC)
            texture += rng.normal(0, 12, texture.shape)
            grey = texture.mean(axis=2, keepdims=True)
            if label:
                img = 150 + 1.4 * (texture - 128) + 0.2 * (grey - 128)
            else:
                img = cv2.GaussianBlur(70 + 0.5 * (grey - 128) + 0.1 * (texture - grey), (0, 0), 1.5)
            images.append(np.clip(img, 0, 255).astype(np.uint8))
            labels.append(label)
    return images, np.array(labels)


def test_cue_matching_takes_the_label_out_of_every_statistic():
    images, labels = _two_class_crops()
    before = np.array([crop_statistics(img) for img in images])
    aug = Augmenter({"hflip": 0.0, "cue_match_p": 1.0})
    after = np.array([crop_statistics(aug(img, np.random.default_rng(i))) for i, img in enumerate(images)])
    for j, name in enumerate(STATISTICS):
        assert roc_auc(labels, before[:, j]) == 1.0, name  # the premise: a perfect cue before
        assert 0.25 <= roc_auc(labels, after[:, j]) <= 0.75, name  # chance-level after (32 crops)


def test_cue_matching_is_reproducible_and_off_by_default_without_touching_the_random_stream():
    images, _ = _two_class_crops(2)
    base = {"hflip": 0.5, "blur_p": 0.5, "noise_p": 0.5, "jpeg_p": 0.5}
    plain = Augmenter(base)(images[0], np.random.default_rng(3))
    assert np.array_equal(plain, Augmenter({**base, "cue_match_p": 0.0})(images[0], np.random.default_rng(3)))
    on = Augmenter({**base, "cue_match_p": 1.0})
    a, b = on(images[0], np.random.default_rng(3)), on(images[0], np.random.default_rng(3))
    assert np.array_equal(a, b) and a.shape == images[0].shape and a.dtype == np.uint8
    assert not np.array_equal(a, plain)


def test_cue_matching_reaches_its_targets_on_real_crops(data_dir):
    webcam = require(data_dir / "webcam", "webcam face crops")
    crops = [cv2.resize(cv2.imread(str(f)), (128, 128), interpolation=cv2.INTER_AREA) for f in sample_files(webcam, 12)]
    targets = [(60, 30, 40, 3.5), (120, 45, 80, 4.8), (165, 70, 120, 6.2)]
    errors = np.array([crop_statistics(match_cues(c, *t)) - np.array(t) for c in crops for t in targets])
    median = np.median(np.abs(errors), axis=0)
    assert median[0] <= 3 and median[1] <= 3 and median[2] <= 8 and median[3] <= 0.3, median
    assert np.percentile(np.abs(errors[:, 3]), 90) <= 0.6  # sharpness: a blur/sharpen step apart at worst, mostly


def test_dim_reaches_its_level_keeps_dark_crops_and_is_seeded(data_dir):
    webcam = require(data_dir / "webcam", "webcam face crops")
    crops = [cv2.resize(cv2.imread(str(f)), (128, 128), interpolation=cv2.INTER_AREA) for f in sample_files(webcam, 8)]
    for crop in crops:
        for level in (25.0, 45.0):
            out = dim(crop, level, 2.0, np.random.default_rng(0))
            assert out.shape == crop.shape and out.dtype == np.uint8
            expected = min(level, crop_statistics(crop)[0])  # a crop darker than the level keeps its exposure
            assert abs(crop_statistics(out)[0] - expected) <= 1.5  # grey mean (statistic 0), noise and rounding aside
            assert np.array_equal(out, dim(crop, level, 2.0, np.random.default_rng(0)))
        dark = dim(crop, 25.0, 0.0, np.random.default_rng(0))  # an exposure cut: every value by one factor
        bright = crop.astype(np.float32) > 40
        ratio = dark[bright] / crop[bright].astype(np.float32)
        assert np.percentile(np.abs(ratio - np.median(ratio)), 95) < 0.03
    night = (crops[0] * 0.1).astype(np.uint8)  # already darker than the level: exposure kept, noise added
    kept = dim(night, 60.0, 0.0, np.random.default_rng(0))
    assert np.abs(kept.astype(int) - night.astype(int)).max() <= 1


def test_dim_is_off_by_default_without_touching_the_random_stream():
    images, _ = _two_class_crops(2)
    base = {"hflip": 0.5, "blur_p": 0.5, "noise_p": 0.5, "jpeg_p": 0.5}
    plain = Augmenter(base)(images[0], np.random.default_rng(3))
    assert np.array_equal(plain, Augmenter({**base, "lowlight_p": 0.0})(images[0], np.random.default_rng(3)))
    on = Augmenter({**base, "lowlight_p": 1.0, "lowlight_level": [30.0, 30.0]})
    a = on(images[0], np.random.default_rng(3))
    assert np.array_equal(a, on(images[0], np.random.default_rng(3))) and a.dtype == np.uint8
    assert cv2.cvtColor(a, cv2.COLOR_BGR2GRAY).mean() < cv2.cvtColor(plain, cv2.COLOR_BGR2GRAY).mean() - 20
