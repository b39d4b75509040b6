"""spoofsdk.folders: one vocabulary and one set of layouts for every labelled image folder."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from spoofsdk import folders
from spoofsdk.errors import SourceError


def _image(path: Path, side: int = 32) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((side, side, 3), 128, np.uint8))
    return path


@pytest.mark.parametrize("name, label", [("real", 1), ("Live", 1), ("living", 1), ("bonafide", 1), ("genuine", 1),
                                         ("attack", 0), ("FAKE", 0), ("spoof", 0), ("print", 0), ("replay", 0),
                                         ("subject01", None), ("train", None)])
def test_class_vocabulary(name, label):
    assert folders.label_of(name) == label


@pytest.mark.parametrize("files, layout, splits, subjects", [
    (["real/s1/a.jpg", "real/s2/b.png", "attack/s1/c.jpg"], "class_subject", {None}, {"s1", "s2"}),
    (["live/a.jpg", "fake/b.jpg"], "class_flat", {None}, {None}),
    (["train/real/a.jpg", "train/spoof/b.jpg", "testing/real/c.jpg", "testing/attack/d.jpg"], "split_class", {"train", "test"}, {None}),
    (["train/real/id1/a.jpg", "test/attack/id2/b.jpg"], "split_class_identity", {"train", "test"}, {"id1", "id2"}),
])
def test_layouts(tmp_path, files, layout, splits, subjects):
    for f in files:
        _image(tmp_path / f)
    (tmp_path / "real" / "notes.txt").parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "real" / "notes.txt").write_text("not an image")
    found, images = folders.scan(tmp_path)
    assert found == layout and len(images) == len(files)
    assert {i.split for i in images} == splits and {i.subject for i in images} == subjects
    for i in images:
        assert i.label == folders.label_from_path(tmp_path / i.source, tmp_path)


def test_unknown_layouts_are_typed_errors(tmp_path):
    _image(tmp_path / "photos" / "a.jpg")
    with pytest.raises(folders.FolderError, match="unknown layout"):
        folders.scan(tmp_path)
    with pytest.raises(SourceError, match="not found"):
        folders.scan(tmp_path / "missing")
    with pytest.raises(ValueError, match="attack"):  # FolderError is a SourceError and a ValueError
        folders.class_folders(tmp_path / "photos" / "..")


def test_class_folders_need_both_classes(tmp_path):
    _image(tmp_path / "live" / "a.jpg")
    with pytest.raises(folders.FolderError, match="attack"):
        folders.class_folders(tmp_path)
    _image(tmp_path / "fake" / "b.jpg")
    assert [(p.name, label) for p, label in folders.class_folders(tmp_path)] == [("fake", 0), ("live", 1)]


def test_label_from_path_and_image_files(tmp_path):
    a = _image(tmp_path / "cam" / "real" / "x" / "a.jpg")
    b = _image(tmp_path / "cam" / "unsorted" / "b.png")
    assert folders.image_files(tmp_path) == [a, b]
    assert folders.label_from_path(a, tmp_path) == 1 and folders.label_from_path(b, tmp_path) is None
    assert folders.label_from_path(tmp_path / "real.jpg", tmp_path) is None  # a file name is not a class folder


def test_crops_versus_frames():
    assert folders.is_face_crop(np.zeros((256, 200, 3), np.uint8))
    assert not folders.is_face_crop(np.zeros((240, 320, 3), np.uint8))
