"""spoofsdk_train.data: layouts, subject-disjoint splits, the manifest, and crops made with the runtime's crop_face."""
from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

from conftest import sample_files

pytest.importorskip("spoofsdk_train", reason="the trainer (pip install -e ./trainer) is not installed")

from spoofsdk_train.data import assign_splits, load_crops, prepare, read_manifest, resplit_random, scan, split_random, split_subjects
from spoofsdk_train.synthetic import make_synthetic


@pytest.mark.parametrize(
    "layout, expected",
    [
        ("class_subject", "class_subject"),
        ("class_flat", "class_flat"),
        ("split_class", "split_class"),
        ("split_class_identity", "split_class_identity"),
    ],
)
def test_scan_recognises_layouts(tmp_path, layout, expected):
    root = make_synthetic(tmp_path / layout, layout, n_subjects=6, per_subject=2, size=24)
    found, samples = scan(root)
    assert found == expected
    assert len(samples) == 6 * 2 * 2
    assert {s.label for s in samples} == {0, 1}
    if expected in ("class_subject", "split_class_identity"):
        assert all(s.subject for s in samples)
    else:
        assert all(s.subject is None for s in samples)
    if expected.startswith("split"):
        assert {s.split for s in samples} <= {"train", "val", "test"}


def test_unknown_layout_is_refused(tmp_path):
    (tmp_path / "cats").mkdir()
    cv2.imwrite(str(tmp_path / "cats" / "a.jpg"), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="unknown layout"):
        scan(tmp_path)


def test_subject_split_is_disjoint_deterministic_and_has_both_classes():
    subjects = {f"{i:04d}": {0, 1} for i in range(1, 17)}
    subjects["0013"] = {1}
    subjects["0016"] = {0}
    a = split_subjects(subjects, (0.7, 0.15, 0.15), seed=42)
    b = split_subjects(subjects, (0.7, 0.15, 0.15), seed=42)
    assert a == b
    assert [len(a[k]) for k in ("train", "val", "test")] == [11, 2, 3]  # 16 subjects, largest remainder
    all_ = a["train"] + a["val"] + a["test"]
    assert sorted(all_) == sorted(subjects) and len(set(all_)) == 16
    for held in a["val"] + a["test"]:
        assert subjects[held] == {0, 1}
    assert split_subjects(subjects, (0.7, 0.15, 0.15), seed=1) != a


def test_random_split_is_stratified():
    labels = [1] * 100 + [0] * 60
    out = split_random(labels, (0.85, 0.15, 0.0), seed=3)
    assert out == split_random(labels, (0.85, 0.15, 0.0), seed=3)
    assert sum(1 for l, s in zip(labels, out) if s == "val" and l == 1) == 15
    assert sum(1 for l, s in zip(labels, out) if s == "val" and l == 0) == 9
    assert "test" not in out


def test_existing_test_split_stays_and_val_is_carved_from_train(tmp_path):
    root = make_synthetic(tmp_path / "d", "split_class_identity", n_subjects=9, per_subject=2, size=16)
    _, samples = scan(root)
    splits, info = assign_splits(samples, val_fraction=0.34, seed=0)
    for s, sp in zip(samples, splits):
        if s.split == "test":
            assert sp == "test"
        else:
            assert sp in ("train", "val")
    # identities known: val carved by identity, never by frame
    by = {}
    for s, sp in zip(samples, splits):
        by.setdefault(s.subject, set()).add(sp)
    assert all(len(v) == 1 for v in by.values())
    assert "val" in set(splits)


@pytest.mark.data
def test_nuaa_split_is_subject_disjoint(nuaa_dir):
    layout, samples = scan(nuaa_dir)
    assert layout == "class_subject"
    splits, info = assign_splits(samples, seed=42)
    assert info["method"] == "subject-disjoint"
    subjects = info["subjects"]
    assert not set(subjects["train"]) & set(subjects["val"])
    assert not set(subjects["train"]) & set(subjects["test"])
    assert not set(subjects["val"]) & set(subjects["test"])
    where = {}
    for s, sp in zip(samples, splits):
        where.setdefault(s.subject, set()).add(sp)
    assert all(len(v) == 1 for v in where.values()), "a subject's frames straddle two splits"
    for sp in ("val", "test"):
        labels = {s.label for s, x in zip(samples, splits) if x == sp}
        assert labels == {0, 1}


@pytest.mark.data
def test_gc535_keeps_its_test_and_carves_val(gc535_dir):
    layout, samples = scan(gc535_dir)
    assert layout == "split_class"
    splits, info = assign_splits(samples, val_fraction=0.15, seed=42)
    for s, sp in zip(samples, splits):
        assert (sp == "test") == (s.split == "test")
    n_train = sum(1 for s in samples if s.split == "train")
    n_val = splits.count("val")
    assert abs(n_val / n_train - 0.15) < 0.01


def test_prepare_crops_and_manifest_synthetic(tmp_path):
    root = make_synthetic(tmp_path / "syn", "class_subject", n_subjects=6, per_subject=2, size=40)
    path = prepare(root, tmp_path / "cache", crop_scale=1.5, size=32, faces="crop", progress=False)
    m = read_manifest(path)
    assert m["layout"] == "class_subject" and m["crop"]["faces"] == "crop" and m["crop"]["size"] == 32
    assert m["n_items"] == 24 and not m["skipped"]
    subj = m["split"]["subjects"]
    assert sorted(subj["train"] + subj["val"] + subj["test"]) == [f"{i:04d}" for i in range(6)]
    for it in m["items"]:
        assert it["subject"] in subj[it["split"]]
        assert it["class"] == ("real" if it["label"] else "attack")
    crops = load_crops([path], "train")
    assert crops.images.shape[1:] == (32, 32, 3) and crops.images.dtype == np.uint8
    assert len(crops) == sum(1 for it in m["items"] if it["split"] == "train")


def test_resplit_random_ignores_subjects_and_reuses_the_crops(tmp_path):
    """The random 70/15/15 split (for comparison with random-split figures): stratified by class, subjects
    straddle splits, the same crops are read back, nothing is copied, and the seed fixes it."""
    root = make_synthetic(tmp_path / "syn", "class_subject", n_subjects=10, per_subject=10, size=40)
    src = prepare(root, tmp_path / "cache", size=32, faces="crop", progress=False)
    path = resplit_random(src.parent, tmp_path / "random", seed=3)
    m, orig = read_manifest(path), read_manifest(src)
    assert m["dataset"] == orig["dataset"] and m["n_items"] == orig["n_items"] == 200
    assert "random" in m["split"]["method"] and m["split"]["seed"] == 3
    assert not list((tmp_path / "random").rglob("*.png"))
    for cls, label in (("real", 1), ("attack", 0)):  # 100 per class -> 70 / 15 / 15 each
        assert [m["counts"][sp][cls] for sp in ("train", "val", "test")] == [70, 15, 15]
        assert sum(1 for it in m["items"] if it["label"] == label) == 100
    subjects = {sp: {it["subject"] for it in m["items"] if it["split"] == sp} for sp in ("train", "test")}
    assert subjects["train"] & subjects["test"]  # what the subject-disjoint split never allows
    by_source = {it["source"]: it for it in orig["items"]}
    for split in ("train", "test"):
        crops = load_crops([path], split)
        assert len(crops) == sum(1 for it in m["items"] if it["split"] == split)
        items = [it for it in m["items"] if it["split"] == split]
        for img, it, label in zip(crops.images, items, crops.labels):
            ref = load_crops([{**orig, "items": [by_source[it["source"]]]}], by_source[it["source"]]["split"]).images[0]
            assert np.array_equal(img, ref) and label == it["label"] == by_source[it["source"]]["label"]
    again = read_manifest(resplit_random(src.parent, tmp_path / "again", seed=3))
    assert [it["split"] for it in again["items"]] == [it["split"] for it in m["items"]]
    other = read_manifest(resplit_random(src.parent, tmp_path / "other", seed=4))
    assert [it["split"] for it in other["items"]] != [it["split"] for it in m["items"]]


@pytest.mark.data
def test_prepare_nuaa_slice_uses_runtime_detector_and_crop(tmp_path, nuaa_dir, yunet_path):
    from spoofsdk.crop import crop_face

    files = sample_files(nuaa_dir / "real", 3) + sample_files(nuaa_dir / "attack", 3)
    root = tmp_path / "nuaa"
    for f in files:  # a tiny copy in the layout of the original (temporary, outside the repository)
        dst = root / f.relative_to(nuaa_dir)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, dst)
    path = prepare(root, tmp_path / "cache", crop_scale=1.5, size=64, faces="auto", detector_model=yunet_path, progress=False)
    m = json.loads(path.read_text())
    assert m["crop"]["faces"] == "detect" and m["crop"]["crop_scale"] == 1.5
    assert m["n_items"] + len(m["skipped"]) == 6 and m["n_items"] >= 5
    it = m["items"][0]
    frame = cv2.imread(str(root / it["source"]))
    expected = crop_face(frame, it["box"], 1.5, 64).image
    got = cv2.imread(str(path.parent / it["file"]))
    # the stored box is rounded to 0.1 px: allow a tiny difference
    assert got.shape == (64, 64, 3)
    assert np.abs(got.astype(int) - expected.astype(int)).mean() < 3.0
