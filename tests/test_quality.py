"""Quality gates fire on synthetic small / blurred / dark / overexposed / cut faces, and can be configured."""
import cv2
import numpy as np
import pytest

from spoofsdk import LivenessChecker
from spoofsdk.detect import HaarDetector
from spoofsdk.quality import QualityConfig, assess, measure, quality_config
from spoofsdk.results import UNKNOWN, Reason

from conftest import build_tiny_model, sample_files


@pytest.fixture(scope="module")
def face(nuaa_dir):
    frame = cv2.imread(str(sample_files(nuaa_dir / "real", 1)[0]))
    return frame, HaarDetector().detect(frame)[0].box


def _reason(frame, box, config=QualityConfig()):
    return assess(measure(frame, box), config).reason


def test_a_normal_face_passes(face):
    frame, box = face
    report = assess(measure(frame, box), QualityConfig())
    assert report.ok, report.message
    assert set(report.figures) == {"face_px", "sharpness", "brightness", "clipped", "border_cut", "landmarks_outside", "padded"}
    assert report.figures["face_px"] == pytest.approx(min(box[2], box[3]))


def test_blur(face):
    frame, box = face
    blurred = cv2.GaussianBlur(frame, (0, 0), 8)
    assert measure(blurred, box)["sharpness"] < measure(frame, box)["sharpness"] / 10
    assert _reason(blurred, box) == Reason.TOO_BLURRY


def test_dark_and_overexposed(face):
    frame, box = face
    assert _reason((frame * 0.15).astype(np.uint8), box) == Reason.TOO_DARK
    assert _reason(cv2.convertScaleAbs(frame, alpha=3.0, beta=80), box) == Reason.OVEREXPOSED


def test_small(face):
    frame, box = face
    small = cv2.resize(frame, None, fx=0.25, fy=0.25, interpolation=cv2.INTER_AREA)
    report = assess(measure(small, [v * 0.25 for v in box]), QualityConfig())
    assert report.reason == Reason.FACE_TOO_SMALL and "move closer" in report.message


def test_cut_by_border(face):
    frame, box = face
    x, y, w, h = box
    cut = (-w / 2, y, w, h)  # half of the face box outside the left edge
    assert measure(frame, cut)["border_cut"] == pytest.approx(0.5)
    assert _reason(frame, cut) == Reason.CUT_BY_BORDER
    assert assess({**measure(frame, box), "padded": 0.6}, QualityConfig()).reason == Reason.CUT_BY_BORDER


def test_gates_are_configurable(face):
    frame, box = face
    dark = (frame * 0.15).astype(np.uint8)
    assert _reason(dark, box, QualityConfig(min_brightness=None)) != Reason.TOO_DARK
    assert _reason(dark, box, QualityConfig.off()) is None
    assert quality_config({"min_face_px": 500}).min_face_px == 500
    assert quality_config(False) == QualityConfig.off() and quality_config(None) == QualityConfig()
    with pytest.raises(ValueError, match="unknown quality gate"):
        quality_config({"min_face": 3})


def test_checker_never_scores_a_gated_face(face):
    frame, box = face
    checker = LivenessChecker(build_tiny_model(), quality={"min_face_px": 1000})
    result = checker.check(frame)
    assert result.faces and all(f.label == UNKNOWN and f.score is None for f in result.faces)
    assert result.label == UNKNOWN and result.reason == Reason.FACE_TOO_SMALL and result.score is None
    blurred = LivenessChecker(build_tiny_model()).check(cv2.GaussianBlur(frame, (0, 0), 8))
    assert all(f.label != "real" for f in blurred.faces)


# --- issue 12 item 4: faces that fill the frame are scored; only cut faces are refused --------------
def _tight(frame, box, margin):
    """The frame cut to the face box grown by ``margin`` on each side (a phone held close, a tight crop)."""
    x, y, w, h = box
    x0, y0 = max(0, int(x - margin * w)), max(0, int(y - margin * h))
    return np.ascontiguousarray(frame[y0 : int(y + h + margin * h), x0 : int(x + w + margin * w)])


def test_a_face_filling_the_frame_is_scored_on_its_models_own_crop(face):
    from spoofsdk.detect import YuNetDetector

    frame, _ = face
    box = YuNetDetector().detect(frame)[0].box
    close = _tight(frame, box, 0.08)
    checker = LivenessChecker(build_tiny_model())
    result = checker.check(close)
    (top,) = result.faces
    assert top.score is not None and top.reason is None, top.message
    assert top.quality["padded"] > QualityConfig().max_padded  # padded as the model was trained (policy pad)
    assert top.quality["landmarks_outside"] == 0 and top.quality["face_inside"] == 1.0
    (model_crop,) = [checker.model.crop_face(close, top.box)]
    assert model_crop.padded_fraction == pytest.approx(top.quality["padded"], abs=0.02)


def test_a_face_cut_by_the_border_is_still_refused(face):
    from spoofsdk.detect import YuNetDetector

    frame, _ = face
    box = YuNetDetector().detect(frame)[0].box
    x, y, w, h = box
    half = np.ascontiguousarray(frame[:, int(x + 0.55 * w) :])  # the left half of the face is gone
    result = LivenessChecker(build_tiny_model()).check(half)
    assert all(f.score is None for f in result.faces)
    if result.faces:
        assert result.faces[0].reason == Reason.CUT_BY_BORDER


def test_landmarks_outside_the_frame_mean_a_cut_face(face):
    frame, box = face
    marks = [(10.0, 10.0), (-5.0, 20.0), (30.0, 30.0), (20.0, 40.0), (25.0, 40.0)]
    figures = measure(frame, box, 0.0, marks)
    assert figures["landmarks_outside"] == 1
    report = assess(figures, QualityConfig())
    assert report.reason == Reason.CUT_BY_BORDER and "landmarks" in report.message
    assert assess(figures, QualityConfig(max_landmarks_outside=None)).ok


def test_most_webcam_close_ups_are_scored(data_dir):
    # Before issue 12, YuNet refused 6,759 of the 7,453 webcam close-ups as cut_by_border and scored 27.
    from conftest import require

    root = require(data_dir / "webcam", "webcam data")
    files = sorted(root.rglob("*.jpg"))[::300]
    checker = LivenessChecker(build_tiny_model())
    results = [checker.check(f) for f in files]
    scored = sum(r.score is not None for r in results)
    cut = sum(r.reason == Reason.CUT_BY_BORDER for r in results)
    assert len(files) >= 20 and scored >= 0.7 * len(files) and cut <= 0.1 * len(files)
