"""Every bad input gets a typed error or an `unknown` result with a clear message; none is labelled real."""
import os

import cv2
import numpy as np
import pytest

from spoofsdk import LivenessChecker
from spoofsdk.errors import ImageError, MetadataError, ModelError, SourceError
from spoofsdk.model import REQUIRED_KEYS, load_model
from spoofsdk.results import REAL, UNKNOWN, Reason
from spoofsdk.sources import ImageSource, LiveSource, VideoSource
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


def _textured(shape=(240, 320, 3)) -> np.ndarray:
    """A picture with detail everywhere (gradients and noise): no band of it is flat."""
    rng = np.random.default_rng(1)
    h, w = shape[:2]
    ramp = np.add.outer(np.arange(h), np.arange(w)) * 255 // (h + w)
    image = np.dstack([ramp, ramp[::-1], ramp[:, ::-1]])[..., : shape[2]] if len(shape) == 3 else ramp
    return np.clip(image + rng.integers(-30, 30, image.shape), 0, 255).astype(np.uint8)


def _jpeg(image: np.ndarray, *params: int) -> bytes:
    return cv2.imencode(".jpg", image, list(params))[1].tobytes()


def _with_exif_thumbnail(jpeg: bytes) -> bytes:
    """``jpeg`` with an APP1 EXIF segment holding a thumbnail, a whole JPEG (SOI..EOI) of its own."""
    import struct

    thumb = _jpeg(np.full((8, 8, 3), 90, np.uint8))
    ifd0 = struct.pack(">HI", 0, 14)  # no entries; IFD1 (the thumbnail's) at 14
    ifd1 = struct.pack(">H", 2) + struct.pack(">HHII", 0x201, 4, 1, 44) + struct.pack(">HHII", 0x202, 4, 1, len(thumb)) + b"\0" * 4
    body = b"Exif\0\0" + b"MM\0*" + struct.pack(">I", 8) + ifd0 + ifd1 + thumb
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body + jpeg[2:]


def test_jpeg_with_data_after_its_end_marker(tmp_path):
    # Motion photos and camera trailers append data after FF D9; the end-of-file check refused
    # them as truncated. The end marker must follow the image data, wherever the file ends.
    from spoofsdk.sources import decode_image, read_image

    trailer = b"MotionPhoto_Data" + bytes(range(256)) * 64  # holds FF bytes, but no FF D9
    for params in ((), (cv2.IMWRITE_JPEG_PROGRESSIVE, 1)):
        jpeg = _jpeg(_textured(), *params)
        expected = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        (tmp_path / "motion.jpg").write_bytes(jpeg + trailer)
        assert np.array_equal(read_image(tmp_path / "motion.jpg"), expected), params
        exif = _with_exif_thumbnail(jpeg)
        assert np.array_equal(decode_image(exif + trailer), expected), params
        # The thumbnail's own EOI, inside APP1 before the scan, does not make a cut image whole.
        for cut in (exif[: len(exif) * 2 // 3], exif[: len(exif) * 2 // 3] + trailer):
            with pytest.raises(ImageError, match="truncated JPEG"):
                decode_image(cut)
    # Stray bytes between two segments: libjpeg skips to the next marker with a warning and decodes the
    # image, and so does the header walk (a review found them refused after the walk went past SOF).
    sos = jpeg.find(b"\xff\xda")
    assert np.array_equal(decode_image(jpeg[:sos] + b"\x13\x37" + jpeg[sos:]), expected)
    with pytest.raises(ImageError, match="truncated JPEG .*ends inside a marker segment"):
        decode_image(jpeg[:sos] + b"\xff\xe5\xff\xff")


def _with_orientation(jpeg: bytes, orientation: int) -> bytes:
    """``jpeg`` with an APP1 EXIF segment whose orientation tag cv2.imdecode applies."""
    import struct

    ifd0 = struct.pack(">H", 1) + struct.pack(">HHIHH", 0x112, 3, 1, orientation, 0) + b"\0" * 4
    body = b"Exif\0\0" + b"MM\0*" + struct.pack(">I", 8) + ifd0
    return jpeg[:2] + b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body + jpeg[2:]


CUT_JPEGS = {  # kept 30 % of the data, then put the end marker back
    "colour_420": lambda: _jpeg(_textured()),
    "colour_444": lambda: _jpeg(_textured(), cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444),
    "greyscale": lambda: _jpeg(_textured((240, 320))),
    "restart_markers": lambda: _jpeg(_textured(), cv2.IMWRITE_JPEG_RST_INTERVAL, 4),
    "progressive": lambda: _jpeg(_textured(), cv2.IMWRITE_JPEG_PROGRESSIVE, 1),
    "exif_rotated_180": lambda: _with_orientation(_jpeg(_textured()), 3),  # the grey lands at the top
    "exif_rotated_90": lambda: _with_orientation(_jpeg(_textured()), 6),  # ... on the left
    "exif_rotated_270": lambda: _with_orientation(_jpeg(_textured()), 8),  # ... on the right
}


@pytest.mark.parametrize("name", sorted(CUT_JPEGS))
def test_cut_jpeg_ending_with_its_end_marker(checker, tmp_path, name):
    # The end-marker check passed a JPEG cut short that ends in FF D9 all the same; libjpeg filled
    # the missing rows with grey (128) and the picture was scored.
    from spoofsdk.sources import decode_image, read_image

    jpeg = CUT_JPEGS[name]()
    decode_image(jpeg)  # whole, it is a good picture
    if name == "progressive":  # a progressive JPEG cut after its first scan is blurred, not grey: cut in it
        cut = jpeg[: jpeg.find(b"\xff\xda") + 200] + b"\xff\xd9"
    else:
        cut = jpeg[: len(jpeg) * 3 // 10] + b"\xff\xd9"
    path = tmp_path / f"{name}.jpg"
    path.write_bytes(cut)
    message = r"corrupt or truncated JPEG: the decoder filled the last \d+ rows with grey \(128, 128, 128\)"
    with pytest.raises(ImageError, match=message):
        read_image(path)
    with pytest.raises(ImageError, match=message):
        checker.check_face(path)
    (frame,) = list(ImageSource(path))
    assert frame.image is None and "truncated" in frame.error
    # Exact grey at a picture's edge short of an MCU row is the picture's own: here 4 rows and 4
    # columns, the content of the last, partial blocks, which decode to exactly 128.
    edge = _textured((244, 324, 3))
    edge[-4:], edge[:, -4:] = 128, 128
    decoded = decode_image(_jpeg(edge, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444))
    assert (decoded[-4:] == 128).all() and (decoded[:, -4:] == 128).all()
    # Grey bands where the decoder does not write last are the picture's own: an upright JPEG (no EXIF
    # orientation) with 40 rows of exact grey at its top and 24 columns at its left decodes.
    banded = _textured((240, 320, 3))
    banded[:40], banded[:, :24] = 128, 128
    decoded = decode_image(_jpeg(banded, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444))
    assert (decoded[:40] == 128).all() and (decoded[:, :24] == 128).all()


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


# --- named bad-input classes (issue 12): image files -------------------------------------------------
def _png(width: int, height: int, body: bytes = b"") -> bytes:
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))  # noqa: E731
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + body


def _encoded(ext: str, shape=(40, 50, 3)) -> bytes:
    return cv2.imencode(ext, np.full(shape, 120, np.uint8))[1].tobytes()


def _patched_jpeg_size(width: int, height: int) -> bytes:
    data = bytearray(_encoded(".jpg"))
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def _patched(ext: str, offset: int, value: bytes) -> bytes:
    data = bytearray(_encoded(ext))
    data[offset : offset + len(value)] = value
    return bytes(data)


def _tiff_bomb() -> bytes:
    import struct

    entries = [(256, 4, 1, 200000), (257, 4, 1, 200000), (258, 3, 1, 8), (262, 3, 1, 1)]
    ifd = struct.pack("<H", len(entries)) + b"".join(struct.pack("<HHII", *e) for e in entries) + b"\0\0\0\0"
    return b"II*\x00" + struct.pack("<I", 8) + ifd


BAD_IMAGE_FILES = {
    "empty_file": lambda: b"",
    "text_named_jpg": lambda: b"hello, not a JPEG",
    "html_error_page": lambda: b"<html><body>404 Not Found</body></html>",
    "random_bytes": lambda: np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
    "zip_archive": lambda: b"PK\x03\x04" + b"\0" * 60,
    "gif_image": lambda: b"GIF89a\x10\x00\x10\x00\x00\x00\x00;",
    "png_bomb_header": lambda: _png(100000, 100000),
    "png_zero_size": lambda: _png(0, 0),
    "png_header_only": lambda: _png(32, 32),
    "png_corrupted_data": lambda: _encoded(".png")[:40] + b"\xde\xad\xbe\xef" * 8 + _encoded(".png")[72:],
    "png_signature_only": lambda: b"\x89PNG\r\n\x1a\n",
    "jpeg_bomb_header": lambda: _patched_jpeg_size(65000, 65000),
    "jpeg_zero_size": lambda: _patched_jpeg_size(0, 0),
    "jpeg_markers_only": lambda: b"\xff\xd8\xff\xd9",
    "jpeg_garbage_after_soi": lambda: b"\xff\xd8" + b"\x13\x37" * 200 + b"\xff\xd9",
    "jpeg_truncated": lambda: _encoded(".jpg")[:120],
    "bmp_bomb_header": lambda: _patched(".bmp", 18, (90000).to_bytes(4, "little") + (90000).to_bytes(4, "little")),
    "bmp_truncated": lambda: _encoded(".bmp")[:60],
    "webp_bomb_header": lambda: b"RIFF\x20\x00\x00\x00WEBPVP8X\x0a\x00\x00\x00\x00\x00\x00\x00\xff\xff\xff\xff\xff\xff",
    "webp_truncated": lambda: _encoded(".webp")[:20],
    "tiff_bomb_header": _tiff_bomb,
    "tiff_truncated": lambda: _encoded(".tiff")[:12],
    "pnm_bomb_header": lambda: b"P6\n100000 100000\n255\n" + b"\0" * 64,
    "pnm_garbage_header": lambda: b"P6\nabc def\n255\n" + b"\0" * 64,
    "pnm_truncated": lambda: b"P6\n64 64\n255\n" + b"\0" * 100,
}


@pytest.mark.parametrize("name", sorted(BAD_IMAGE_FILES))
def test_bad_image_files(checker, tmp_path, name):
    path = tmp_path / f"{name}.jpg"
    path.write_bytes(BAD_IMAGE_FILES[name]())
    with pytest.raises(ImageError):
        checker.check(path)
    with pytest.raises(ImageError):
        checker.check_face(path)
    (frame,) = list(ImageSource(path))  # in a stream: a frame with the error, never an exception
    assert frame.image is None and frame.error


def test_decompression_bomb_in_a_batch_is_one_bad_line(tmp_path, nuaa_dir):
    # Issue 12 item 19: a 74-byte PNG claiming 100000x100000 px raised cv2.error and ended the batch.
    from click.testing import CliRunner

    from spoofsdk.cli import main

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png(100000, 100000))
    assert len(bomb.read_bytes()) < 100
    a, b = sample_files(nuaa_dir / "real", 2)
    model = tmp_path / "tiny.onnx"
    model.write_bytes(build_tiny_model())
    result = CliRunner().invoke(main, ["run", "--json", "-m", str(model), str(a), str(bomb), str(b)])
    lines = [__import__("json").loads(line) for line in result.stdout.splitlines()]
    assert [line.get("path") for line in lines] == [str(a), str(bomb), str(b)]
    assert lines[1]["reason"] == "bad_image" and "100000x100000" in lines[1]["error"]
    assert lines[2]["faces"] and result.exit_code == 1 and "Traceback" not in result.output


def test_size_limit_applies_before_decoding(tmp_path):
    path = tmp_path / "big.png"
    cv2.imwrite(str(path), np.zeros((300, 400, 3), np.uint8))
    with pytest.raises(ImageError, match="over the limit of 100000 pixels"):
        LivenessChecker(build_tiny_model(), max_image_pixels=100_000).check(path)
    assert LivenessChecker(build_tiny_model(), max_image_pixels=120_000).check(path).reason == Reason.NO_FACE


# --- arrays of odd dtype / shape / layout --------------------------------------------------------------
BAD_ARRAYS = {
    "bool_array": lambda: np.zeros((48, 64, 3), bool),
    "float16_array": lambda: np.zeros((48, 64, 3), np.float16),
    "float64_with_nan": lambda: np.full((48, 64, 3), np.nan),
    "complex_array": lambda: np.zeros((48, 64, 3), np.complex64),
    "object_array": lambda: np.empty((48, 64, 3), object),
    "int8_array": lambda: np.zeros((48, 64, 3), np.int8),
    "five_channels": lambda: np.zeros((48, 64, 5), np.uint8),
    "batch_of_images": lambda: np.zeros((2, 48, 64, 3), np.uint8),
    "one_dimensional": lambda: np.zeros(100, np.uint8),
    "zero_width": lambda: np.zeros((48, 0, 3), np.uint8),
    "scalar_array": lambda: np.array(7, np.uint8),
    "path_string_to_feed": lambda: "photo.jpg",
    "bytes_object": lambda: b"\xff\xd8\xff\xd9",
}


@pytest.mark.parametrize("name", sorted(BAD_ARRAYS))
def test_bad_array_kinds(checker, name):
    bad = BAD_ARRAYS[name]()
    if not isinstance(bad, str):
        with pytest.raises(ImageError):
            checker.check(bad)
        with pytest.raises(ImageError):
            checker.check_face(bad)
    result = checker.feed(bad)
    assert result.label == UNKNOWN and result.reason == Reason.BAD_IMAGE and result.error


@pytest.mark.parametrize(
    "name, make",
    [
        ("one_pixel", lambda f: f[:1, :1]),
        ("one_row", lambda f: f[:1]),
        ("strided_view", lambda f: f[::2, ::3]),
        ("negative_strides", lambda f: f[::-1, ::-1]),
        ("fortran_order", lambda f: np.asfortranarray(f)),
        ("read_only", lambda f: np.frombuffer(f.tobytes(), np.uint8).reshape(f.shape)),
        ("channel_first", lambda f: np.ascontiguousarray(f.transpose(2, 0, 1))),
    ],
)
def test_odd_array_layouts_never_crash(checker, frame, name, make):
    image = make(frame)
    try:
        result = checker.check(image)
    except ImageError:
        return
    assert result.label in ("unknown", "spoof", "real")
    if name == "channel_first":  # a 3 x H x W array reads as an image 3 px high: no face
        assert result.label == UNKNOWN


# --- model files and metadata ------------------------------------------------------------------------
BAD_METADATA = {
    "threshold_not_a_number": {"threshold": "abc"},
    "threshold_above_one": {"threshold": "1.5"},
    "threshold_nan": {"threshold": "nan"},
    "input_size_not_square": {"input_size": "64x65"},
    "input_size_garbage": {"input_size": "big"},
    "mean_two_values": {"mean": "0.5,0.5"},
    "std_zero": {"std": "0,0,0"},
    "std_underflowing_float32": {"std": "1e-50,1,1"},  # finite as float64, 0 in float32: every face a silent 0
    "std_huge": {"std": "1e30,1,1"},
    "mean_huge": {"mean": "1e300,0,0"},
    "output_unknown": {"output": "logits7"},
    "class_order_without_real": {"class_order": "spoof,fake"},
    "color_order_unknown": {"color_order": "XYZ"},
    "crop_scale_negative": {"crop_scale": "-1"},
    "format_from_the_future": {"spoofsdk_format": "2"},
    "precision_unknown": {"precision": "int3"},
}


@pytest.mark.parametrize("name", sorted(BAD_METADATA))
def test_bad_metadata_values(name):
    with pytest.raises(MetadataError):
        LivenessChecker(build_tiny_model(metadata=BAD_METADATA[name]))


def test_model_metadata_not_utf8():
    # found by tests/test_fuzz.py: onnxruntime raised UnicodeDecodeError reading the metadata map
    data = build_tiny_model()
    good = b"\x03std\x12\x0b0.5,0.5,0.5"
    assert good in data
    with pytest.raises(MetadataError, match="UTF-8"):
        LivenessChecker(data.replace(good, b"\x03std\x12\x0b\xb0.5,0.5,0.5"))


def test_model_metadata_disagreeing_with_the_graph():
    data = build_tiny_model(metadata={"input_size": "96x96"})  # the graph takes 64x64
    with pytest.raises(ModelError, match="does not match"):
        LivenessChecker(data)


def test_model_path_is_a_directory(tmp_path):
    with pytest.raises(ModelError):
        LivenessChecker(tmp_path)


def test_camera_lost_mid_stream_in_the_cli(tmp_path, nuaa_dir, monkeypatch):
    # The camera delivers 3 frames, then nothing: the frames are judged, the run ends with a clear error.
    from click.testing import CliRunner

    import spoofsdk.sources as sources
    from spoofsdk.cli import main

    image = cv2.imread(str(sample_files(nuaa_dir / "real", 1)[0]))
    count = {"n": 0}

    def read():
        count["n"] += 1
        return (True, image.copy()) if count["n"] <= 3 else (False, None)

    monkeypatch.setattr(sources, "CameraSource", lambda device, **kw: LiveSource(read, f"camera {device}", latest_only=False, timeout=0.2, **{k: v for k, v in kw.items() if k == "step"}))
    model = tmp_path / "tiny.onnx"
    model.write_bytes(build_tiny_model())
    result = CliRunner().invoke(main, ["run", "--json", "-m", str(model), "--camera", "0"])
    assert result.exit_code == 1 and len(result.stdout.splitlines()) == 3
    assert "stream stopped after 3 frames: camera 0 stopped delivering frames" in result.stderr
    assert "summary: 3 frames" in result.stderr and "Traceback" not in result.output
