"""Every bad input gets a typed error or an `unknown` result with a clear message; none is labelled real."""
import os

import cv2
import numpy as np
import pytest

from spoofsdk import LivenessChecker
from spoofsdk.errors import ImageError, MetadataError, ModelError, SourceError
from spoofsdk.model import REQUIRED_KEYS, load_model
from spoofsdk.results import REAL, UNKNOWN, Reason
from spoofsdk.sources import LiveSource, VideoSource
from spoofsdk.track import SmoothingConfig

from conftest import build_tiny_model, sample_files, write_video


@pytest.fixture(scope="module")
def checker():
    # threshold near 0: anything scored would be real, so "not real" below means "not scored"
    return LivenessChecker(build_tiny_model(), threshold=1e-6)


@pytest.fixture(scope="module")
def frame(nuaa_dir):
    return cv2.imread(str(sample_files(nuaa_dir / "real", 1)[0]))


def test_missing_file(checker, tmp_path):
    with pytest.raises(ImageError, match="not found"):
        checker.check(tmp_path / "nope.jpg")


def test_text_file_named_jpg(checker, tmp_path):
    (tmp_path / "text.jpg").write_text("hello, not a JPEG")
    with pytest.raises(ImageError, match="not a readable image"):
        checker.check(tmp_path / "text.jpg")


def test_truncated_jpeg(checker, tmp_path, nuaa_dir):
    data = sample_files(nuaa_dir / "real", 1)[0].read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError, match="truncated"):
        checker.check(tmp_path / "cut.jpg")
    with pytest.raises(ImageError, match="truncated"):
        checker.check_face(tmp_path / "cut.jpg")


def test_directory_with_no_images(tmp_path):
    from spoofsdk.sources import ImageSource

    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(SourceError, match="no images"):
        ImageSource(tmp_path)


@pytest.mark.parametrize(
    "bad, message",
    [
        (None, "None"),
        (np.zeros((0, 0, 3), np.uint8), "empty"),
        (np.zeros((48, 64, 3), np.float32), "dtype"),
        (np.zeros((48, 64, 3), np.int32), "dtype"),
        (np.zeros((48, 64, 2), np.uint8), "shape"),
        ([[1, 2], [3, 4]], "numpy array"),
    ],
)
def test_bad_arrays(checker, bad, message):
    with pytest.raises(ImageError, match=message):
        checker.check(bad)
    with pytest.raises(ImageError, match=message):
        checker.check_face(bad)
    result = checker.feed(bad)  # in a stream: an unknown frame, not an exception
    assert result.label == UNKNOWN and result.reason == Reason.BAD_IMAGE and message in result.error


def test_one_channel_four_channel_and_16_bit(frame):
    checker = LivenessChecker(build_tiny_model())
    base = checker.check(frame)
    grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    for variant in (grey, grey[..., None]):
        result = checker.check(variant)
        assert result.faces and result.faces[0].score is not None  # converted, then scored
    bgra = cv2.cvtColor(frame, cv2.COLOR_BGR2BGRA)
    assert checker.check(bgra).score == base.score
    deep = frame.astype(np.uint16) * 257  # the same image in 16 bits
    assert checker.check(deep).score == base.score


def test_huge_image(checker):
    huge = np.zeros((8000, 8000, 3), np.uint8)
    result = checker.check(huge)  # detection runs on a downscaled copy: no face, no crash
    assert result.label == UNKNOWN and result.reason == Reason.NO_FACE and result.image_size == (8000, 8000)
    del huge
    limited = LivenessChecker(build_tiny_model(), max_image_pixels=1_000_000)
    with pytest.raises(ImageError, match="exceeds"):
        limited.check(np.zeros((2000, 2000, 3), np.uint8))


@pytest.mark.parametrize(
    "content, error",
    [
        (lambda d: d[: len(d) // 3], ModelError),  # truncated download
        (lambda d: os.urandom(2048), ModelError),  # random bytes
        (lambda d: b"<html>404 not found</html>", ModelError),  # text named .onnx
        (lambda d: b"", ModelError),
    ],
)
def test_corrupted_model_files(tmp_path, content, error):
    path = tmp_path / "model.onnx"
    path.write_bytes(content(build_tiny_model()))
    with pytest.raises(error):
        LivenessChecker(path)


def test_tampered_model_graph(tmp_path):
    # metadata intact but the graph bytes damaged: onnxruntime refuses it, typed as ModelError
    data = bytearray(build_tiny_model())
    start = data.find(b"Conv")
    data[start : start + 4] = b"Cxnv"
    path = tmp_path / "model.onnx"
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="cannot load"):
        LivenessChecker(path)


def test_onnx_without_metadata(tmp_path):
    path = tmp_path / "plain.onnx"
    path.write_bytes(build_tiny_model(drop_keys=tuple(REQUIRED_KEYS) + ("training_data",)))
    with pytest.raises(MetadataError, match="missing spoofsdk_format"):
        load_model(path)


def test_camera_index_that_cannot_be_opened():
    from spoofsdk.sources import CameraSource

    with pytest.raises(SourceError, match="cannot open camera 42"):
        CameraSource(42)


def test_camera_ending_mid_stream_in_the_checker(frame):
    n = {"count": 0}

    def read():
        n["count"] += 1
        return (True, frame) if n["count"] <= 3 else (False, None)

    checker = LivenessChecker(build_tiny_model())
    results = []
    with pytest.raises(SourceError, match="stopped delivering"):
        for result in checker.stream(LiveSource(read, "camera 0", latest_only=False, timeout=0.1)):
            results.append(result)
    assert len(results) == 3


def test_video_ending_mid_stream_in_the_checker(tmp_path, nuaa_dir):
    video = write_video(tmp_path / "v.avi", sorted((nuaa_dir / "real" / "0003").glob("*.jpg"))[:8])
    video.write_bytes(video.read_bytes()[: video.stat().st_size // 2])
    checker = LivenessChecker(build_tiny_model())
    results = []
    with pytest.raises(SourceError, match="ended mid-stream"):
        for result in checker.stream(VideoSource(video)):
            results.append(result)
    assert 0 < len(results) < 8


def test_nothing_is_real_by_mistake(frame):
    # A stream mixing good frames with bad ones, blurred, dark and faceless frames, with a
    # model that would call anything it scores real: only the good frames may build evidence.
    checker = LivenessChecker(build_tiny_model(), threshold=1e-6, smoothing=SmoothingConfig(min_frames=3, min_seconds=0))
    junk = [None, np.zeros((480, 640, 3), np.uint8), cv2.GaussianBlur(frame, (0, 0), 9), (frame * 0.1).astype(np.uint8),
            np.zeros((480, 640), np.float64), np.full((480, 640, 3), 255, np.uint8)]
    results = [checker.feed(image, t=i * 0.1) for i, image in enumerate(junk * 3)]
    assert all(r.label == UNKNOWN and all(f.label != REAL for f in r.faces) for r in results)
    good = [checker.feed(frame, t=2.0 + i * 0.1).label for i in range(3)]
    assert good == [UNKNOWN, UNKNOWN, REAL]
