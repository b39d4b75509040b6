"""MiniFASNet (Minivision, Apache-2.0): our module loads the two published checkpoints strictly.

Checkpoint tests read ``../shared/models/minifasnet`` (or $SPOOFSDK_MINIFASNET_DIR); without it they
skip with the reason, except under CI=true, where they fail.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="the trainer (pip install -e ./trainer, with torch) is not installed")

import torch

from conftest import require, sample_files
from spoofsdk_train.models import build_model, count_params, get_spec
from spoofsdk_train.models.minifasnet import (
    CHECKPOINTS,
    checkpoint_path,
    classifier_state_dict,
    load_minifasnet,
    minifasnet_dir,
    minifasnet_pair_p_live,
    minifasnet_pair_probs,
)


@pytest.fixture(scope="session")
def minifasnet_folder() -> Path:
    return require(minifasnet_dir(), "MiniFASNet checkpoints")


@pytest.mark.slow
@pytest.mark.parametrize("name,params", [("minifasnet_v2", 434_560), ("minifasnet_v1se", 433_586)])
def test_architecture_shapes_without_weights(name, params):
    model = build_model(name).eval()
    assert count_params(model) == params
    # The last depthwise conv spans the whole 5x5 stride-16 map of an 80x80 input.
    assert model.conv_6_dw.conv.kernel_size == (5, 5)
    assert get_spec(name).output == "logitsN" and get_spec(name).class_order == ("spoof", "real", "spoof")
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 80, 80)).shape == (2, 3)


def test_classifier_state_dict_strips_prefix_and_sets_aside_the_ft_generator():
    raw = {"module.conv1.conv.weight": torch.zeros(1), "module.FTGenerator.ft.0.weight": torch.zeros(1), "prob.weight": torch.ones(1)}
    assert set(classifier_state_dict(raw)) == {"conv1.conv.weight", "prob.weight"}


@pytest.mark.parametrize("name", list(CHECKPOINTS))
def test_checkpoint_loads_strictly(minifasnet_folder, name):
    raw = torch.load(checkpoint_path(name), map_location="cpu", weights_only=True)
    assert all(k.startswith("module.") for k in raw)
    model = build_model(name)
    # strict=True raises on any missing or unexpected key or shape mismatch.
    model.load_state_dict(classifier_state_dict(raw), strict=True)
    loaded = load_minifasnet(name)
    assert not loaded.training
    assert torch.equal(loaded.prob.weight, raw["module.prob.weight"])
    assert load_minifasnet(checkpoint_path(name)).prob.weight.shape == (3, 128)


@pytest.mark.slow
def test_pair_p_live_is_the_mean_of_the_two_softmaxes(minifasnet_folder):
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, size=(3, 80, 80, 3), dtype=np.uint8)
    v2, v1se = load_minifasnet("minifasnet_v2"), load_minifasnet("minifasnet_v1se")
    x = torch.from_numpy(crops.transpose(0, 3, 1, 2).astype(np.float32))
    with torch.no_grad():
        expected = ((torch.softmax(v2(x), 1) + torch.softmax(v1se(x), 1)) / 2)[:, 1].numpy()
    got = minifasnet_pair_p_live(crops)
    assert got.shape == (3,)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    probs = minifasnet_pair_probs(crops, batch_size=2)  # two batches
    assert probs.shape == (3, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(probs[:, 1], expected, atol=1e-6)
    np.testing.assert_allclose(minifasnet_pair_p_live(crops, models=[v2]), torch.softmax(v2(x), 1)[:, 1].detach().numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="80x80"):
        minifasnet_pair_p_live(np.zeros((1, 64, 64, 3), np.uint8))


# --- export: the runtime preprocesses as the authors do, and agrees with torch -------------------
@pytest.fixture(scope="module")
def exported(minifasnet_folder, tmp_path_factory):
    from spoofsdk_train.minifasnet_reference import export_minifasnet_pair

    return export_minifasnet_pair(tmp_path_factory.mktemp("minifasnet"))


def _real_crops(data_dir, n=24):
    from spoofsdk.crop import fit_face_crop
    from spoofsdk.sources import read_image

    files = sample_files(data_dir / "webcam", n)
    return np.stack([fit_face_crop(read_image(f), 80, "shift_cap") for f in files])


@pytest.mark.slow
def test_exported_metadata_names_the_authors_preprocessing(exported):
    from spoofsdk.model import load_model

    for path, scale in zip(exported, (2.7, 4.0)):
        info = load_model(path).info
        assert (info.input_size, info.color_order, info.crop_scale, info.crop_policy) == (80, "BGR", scale, "shift_cap")
        assert info.mean == (0.0, 0.0, 0.0) and info.std == pytest.approx((1 / 255,) * 3)
        assert (info.output, info.class_order) == ("logitsN", ("spoof", "real", "spoof"))
        assert "Apache-2.0" in info.extra["license"] and "Minivision" in info.extra["license"]


def test_to_tensor_feeds_unnormalised_0_255_pixels():
    from spoofsdk.crop import to_tensor

    crops = np.random.default_rng(0).integers(0, 256, size=(2, 80, 80, 3), dtype=np.uint8)
    batch = to_tensor(crops, "BGR", (0.0,) * 3, (1 / 255,) * 3)
    np.testing.assert_allclose(batch, crops.transpose(0, 3, 1, 2).astype(np.float32), atol=1e-4)


@pytest.mark.slow
def test_exported_onnx_and_torch_agree_on_real_crops(exported, data_dir):
    from spoofsdk.model import load_model

    crops = _real_crops(data_dir)
    for path, name in zip(exported, CHECKPOINTS):
        torch_p = minifasnet_pair_p_live(crops, models=[load_minifasnet(name)])
        onnx_p = load_model(path).score_crops(list(crops))
        np.testing.assert_allclose(onnx_p, torch_p, atol=1e-4)
        assert np.ptp(onnx_p) > 0.1  # real faces and attacks get different scores
    pair = np.mean([load_model(p).score_crops(list(crops)) for p in exported], axis=0)
    np.testing.assert_allclose(pair, minifasnet_pair_p_live(crops), atol=1e-4)


@pytest.mark.slow
def test_checker_scores_a_frame_with_the_pair_as_the_authors_would(exported, nuaa_dir, yunet_path):
    import cv2

    from spoofsdk import LivenessChecker
    from spoofsdk.crop import shift_cap_region
    from spoofsdk.detect import YuNetDetector

    frame = cv2.imread(str(sample_files(nuaa_dir / "real", 1)[0]))
    detector = YuNetDetector(yunet_path)
    box = detector.detect(frame)[0].box
    checker = LivenessChecker(list(exported), detector=detector, quality=False)
    face = checker.check(frame).faces[0]
    # by hand: each model's own rectangle, stretched to 80x80, fed to our torch module
    expected = []
    for name, scale in (("minifasnet_v2", 2.7), ("minifasnet_v1se", 4.0)):
        (x0, y0, x1, y1), _ = shift_cap_region(frame.shape, box, scale)
        crop = cv2.resize(frame[y0:y1, x0:x1], (80, 80))
        expected.append(minifasnet_pair_p_live(crop[None], models=[load_minifasnet(name)])[0])
    assert face.score == pytest.approx(np.mean(expected), abs=1e-4)
    assert checker.threshold == 0.5


# --- online distillation: the teacher scores the student's own normalised batch ---------------------
@pytest.mark.parametrize("color_order,mean,std", [("RGB", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)), ("BGR", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
def test_pair_teacher_on_a_student_batch_equals_the_pair_on_the_crops(minifasnet_folder, data_dir, color_order, mean, std):
    """Undoing the student's normalisation and colour order gives the authors' input: same P(live)."""
    import cv2

    from spoofsdk.crop import to_tensor
    from spoofsdk_train.models.minifasnet import PairTeacher

    crops = _real_crops(data_dir, n=8)  # 80 x 80 BGR
    teacher = PairTeacher(color_order, mean, std)
    got = teacher(torch.from_numpy(to_tensor(crops, color_order, mean, std))).numpy()
    np.testing.assert_allclose(got, minifasnet_pair_p_live(crops), atol=1e-5)
    assert got.min() < 0.5 < got.max()  # real crops of both kinds, not a constant
    # A 128-px student batch is resized to 80 like OpenCV's INTER_LINEAR does for cached crops: the same
    # pixels within 1 grey level (OpenCV rounds to uint8 with fixed-point weights), and the pair, fed
    # unnormalised 0..255 pixels, moves by up to 0.016 for that (measured); a wrong colour order or
    # normalisation moves it by tenths.
    big = np.stack([cv2.resize(c, (128, 128), interpolation=cv2.INTER_CUBIC) for c in crops])
    small = np.stack([cv2.resize(c, (80, 80), interpolation=cv2.INTER_LINEAR) for c in big])
    got_big = teacher(torch.from_numpy(to_tensor(big, color_order, mean, std))).numpy()
    np.testing.assert_allclose(got_big, minifasnet_pair_p_live(small), atol=0.03)
    swapped = PairTeacher("BGR" if color_order == "RGB" else "RGB", mean, std, models=(teacher.pair[0], teacher.pair[1]))
    assert np.abs(swapped(torch.from_numpy(to_tensor(big, color_order, mean, std))).numpy() - minifasnet_pair_p_live(small)).max() > 0.05
    teacher.train()
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    with pytest.raises(ValueError, match="colour order"):
        PairTeacher("YUV", mean, std, models=(teacher.pair[0], teacher.pair[1]))
