"""Metadata extensions: output 'logitsN' (several spoof classes), 'crop_policy', and ensembles in the checker.

Old files (no crop_policy key, logits2/logit1) must load and round-trip unchanged.
"""
import numpy as np
import onnxruntime as ort
import pytest

from spoofsdk import LivenessChecker
from spoofsdk.crop import crop_face, fit_face_crop, to_tensor
from spoofsdk.detect import Detection
from spoofsdk.errors import MetadataError, ModelError
from spoofsdk.model import load_model, parse_metadata, read_metadata_props

from conftest import build_tiny_model


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _raw(model_bytes, batch):
    sess = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": batch})[0].astype(np.float64)


CROPS = [np.random.default_rng(i).integers(0, 256, size=(64, 64, 3), dtype=np.uint8) for i in range(4)]


def test_old_files_default_to_pad_and_round_trip_unchanged():
    data = build_tiny_model()
    props = read_metadata_props(data)
    assert "crop_policy" not in props
    info = load_model(data).info
    assert info.crop_policy == "pad"
    assert info.to_props() == props


@pytest.mark.parametrize("order, real", [("spoof,real,spoof", [1]), ("real,real,spoof", [0, 1]), ("spoof,spoof,real", [2])])
def test_logitsN_sums_the_real_classes_of_the_softmax(order, real):
    data = build_tiny_model(output="logitsN", metadata={"class_order": order})
    m = load_model(data)
    assert m.info.output == "logitsN" and m.info.class_order == tuple(order.split(","))
    batch = to_tensor(CROPS, "RGB", (0.5,) * 3, (0.5,) * 3)
    expected = _softmax(_raw(data, batch))[:, real].sum(axis=1)
    np.testing.assert_allclose(m.score_crops(CROPS), expected, atol=1e-9)
    assert len(set(np.round(expected, 6))) == len(CROPS)  # the score depends on the image


@pytest.mark.parametrize("order", ["spoof,spoof,spoof", "real,real,real", "spoof,live,spoof", "real"])
def test_logitsN_class_order_must_name_real_and_spoof(order):
    props = read_metadata_props(build_tiny_model(output="logitsN"))
    with pytest.raises(MetadataError, match="class_order"):
        parse_metadata({**props, "class_order": order})


def test_output_count_must_match_class_order():
    with pytest.raises(ModelError, match="3 values"):
        load_model(build_tiny_model(output="logitsN", metadata={"class_order": "spoof,real"}))
    with pytest.raises(ModelError, match="2 values"):
        load_model(build_tiny_model(output="logits2", metadata={"output": "logitsN", "class_order": "spoof,real,spoof"}))


def test_crop_policy_is_read_validated_and_written_back():
    m = load_model(build_tiny_model(metadata={"crop_policy": "shift_cap"}))
    assert m.info.crop_policy == "shift_cap" and "crop_policy" not in m.info.extra
    assert m.info.to_props()["crop_policy"] == "shift_cap"
    props = read_metadata_props(build_tiny_model())
    with pytest.raises(MetadataError, match="crop_policy"):
        parse_metadata({**props, "crop_policy": "mirror"})


class FixedDetector:
    def __init__(self, box):
        self.box = box

    def detect(self, frame):
        return [Detection(box=self.box, score=0.9)]


def test_checker_ensemble_crops_each_model_by_its_metadata_and_averages():
    frame = np.random.default_rng(7).integers(0, 256, size=(300, 400, 3), dtype=np.uint8)
    box = (100.0, 80.0, 90.0, 110.0)
    a = build_tiny_model(input_size=64, metadata={"crop_scale": "1.5", "threshold": "0.3"}, seed=1)
    b = build_tiny_model(input_size=48, output="logitsN", seed=2,
                         metadata={"crop_scale": "2.7", "crop_policy": "shift_cap", "color_order": "BGR", "mean": "0,0,0",
                                   "std": ",".join([repr(1 / 255)] * 3), "threshold": "0.5"})
    checker = LivenessChecker([a, b], detector=FixedDetector(box), quality=False)
    assert checker.threshold == pytest.approx(0.4)
    ma, mb = load_model(a), load_model(b)
    crop_a = crop_face(frame, box, 1.5, 64).image
    crop_b = crop_face(frame, box, 2.7, 48, policy="shift_cap").image
    expected = (ma.score_crops([crop_a])[0] + mb.score_crops([crop_b])[0]) / 2
    face = checker.check(frame).faces[0]
    assert face.score == pytest.approx(expected, abs=1e-9)
    # each model alone differs from the mean: both really took part
    assert abs(ma.score_crops([crop_a])[0] - expected) > 1e-6 and abs(mb.score_crops([crop_b])[0] - expected) > 1e-6
    # an already-cropped face: each model fits it by its own policy
    tight = frame[80:190, 100:190]
    expected_fit = (ma.score_crops([fit_face_crop(tight, 64)])[0] + mb.score_crops([fit_face_crop(tight, 48, "shift_cap")])[0]) / 2
    assert checker.check_face(tight).score == pytest.approx(expected_fit, abs=1e-9)
    with pytest.raises(ValueError, match="empty"):
        LivenessChecker([], detector=FixedDetector(box))


def test_single_model_checker_is_unchanged():
    frame = np.random.default_rng(3).integers(0, 256, size=(300, 400, 3), dtype=np.uint8)
    box = (100.0, 80.0, 90.0, 110.0)
    data = build_tiny_model(metadata={"threshold": "0.3"})
    checker = LivenessChecker(data, detector=FixedDetector(box), quality=False)
    assert checker.threshold == 0.3 and checker.models == [checker.model]
    expected = load_model(data).score_crops([crop_face(frame, box, 1.5, 64).image])[0]
    assert checker.check(frame).faces[0].score == pytest.approx(expected, abs=1e-9)
