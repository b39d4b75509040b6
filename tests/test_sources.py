"""Image folders, video files and live sources (latest-frame policy, failures mid-stream)."""
import threading
import time

import cv2
import numpy as np
import pytest

from spoofsdk.errors import ImageError, SourceError
from spoofsdk.sources import CameraSource, ImageSource, LiveSource, PiCamera2Source, VideoSource, list_images, open_source, read_image

from conftest import sample_files, write_video


@pytest.fixture(scope="module")
def seq(nuaa_dir):
    return sorted((nuaa_dir / "real" / "0001").glob("*.jpg"))[:8]


def test_image_source_reads_folders_and_reports_bad_files(tmp_path, seq):
    (tmp_path / "a").mkdir()
    for p in seq[:2]:
        (tmp_path / "a" / p.name).symlink_to(p)
    (tmp_path / "a" / "notes.txt").write_text("not an image")  # ignored in folders
    (tmp_path / "a" / "fake.jpg").write_text("not an image")
    frames = list(ImageSource(tmp_path / "a"))
    assert [f.path.endswith(".jpg") for f in frames] == [True] * 3
    bad = [f for f in frames if f.error]
    assert len(bad) == 1 and bad[0].image is None and "fake.jpg" in bad[0].path
    assert all(f.image.shape == (480, 640, 3) for f in frames if not f.error)
    np.testing.assert_array_equal(read_image(seq[0]), cv2.imread(str(seq[0])))


def test_empty_folder_is_an_error(tmp_path):
    with pytest.raises(SourceError, match="no images"):
        list_images([tmp_path])


def test_video_source(tmp_path, seq):
    video = write_video(tmp_path / "v.avi", seq, fps=10)
    frames = list(VideoSource(video))
    assert [f.index for f in frames] == list(range(8))
    assert [f.t for f in frames] == pytest.approx([i / 10 for i in range(8)])
    assert [f.index for f in VideoSource(video, step=3)] == [0, 3, 6]
    assert len(list(VideoSource(write_video(tmp_path / "v.mp4", seq)))) == 8


def test_truncated_videos(tmp_path, seq):
    avi = write_video(tmp_path / "v.avi", seq)
    data = avi.read_bytes()
    avi.write_bytes(data[: len(data) // 2])
    got = []
    with pytest.raises(SourceError, match="ended mid-stream"):
        for frame in VideoSource(avi):
            got.append(frame.index)
    assert 0 < len(got) < 8
    mp4 = write_video(tmp_path / "v.mp4", seq)
    mp4.write_bytes(mp4.read_bytes()[:5000])  # the index (moov atom) is at the end of an mp4
    with pytest.raises(SourceError, match="cannot open video"):
        VideoSource(mp4)
    with pytest.raises(SourceError, match="not found"):
        VideoSource(tmp_path / "missing.mp4")


class Producer:
    """A fake camera: frame k is filled with k; fails after ``stop_after`` frames."""

    def __init__(self, interval=0.002, stop_after=None):
        self.count, self.interval, self.stop_after = 0, interval, stop_after

    def read(self):
        time.sleep(self.interval)
        if self.stop_after is not None and self.count >= self.stop_after:
            return False, None
        self.count += 1
        return True, np.full((4, 4, 3), self.count % 256, np.uint8)


def test_live_source_drops_stale_frames():
    camera = Producer(interval=0.002)
    source = LiveSource(camera.read, "fake", max_frames=5)
    lags = []
    for frame in source:
        lags.append(camera.count - (frame.index + 1))  # frames produced since this one
        # A slow consumer: it takes as long as the camera needs for 15 more frames. Counted in frames,
        # not seconds, so that a loaded machine that starves the camera thread cannot change the test.
        target, deadline = camera.count + 15, time.monotonic() + 10
        while camera.count < target and time.monotonic() < deadline:
            time.sleep(0.002)
    assert source.delivered == 5 and source.dropped >= 4 * 13
    # A queue would lag 15 more frames per step (60 by the last frame); the newest-frame policy stays
    # within a few frames (scheduling slack), however long it runs.
    assert max(lags) < 10


def test_live_source_without_latest_only_keeps_every_frame():
    camera = Producer(interval=0.0)
    frames = list(LiveSource(camera.read, "fake", latest_only=False, max_frames=6))
    assert [f.index for f in frames] == list(range(6))


def test_camera_ending_mid_stream():
    camera = Producer(interval=0.001, stop_after=3)
    got = []
    with pytest.raises(SourceError, match="stopped delivering frames"):
        for frame in LiveSource(camera.read, "camera 7", timeout=0.2, latest_only=False):
            got.append(frame)
    assert len(got) == 3
    camera = Producer(interval=0.01, stop_after=4)
    with pytest.raises(SourceError, match="stopped delivering"):
        for frame in LiveSource(camera.read, "camera 7", timeout=0.2):
            time.sleep(0.001)


def test_live_source_stops_its_thread():
    before = threading.active_count()
    source = LiveSource(Producer().read, "fake", max_frames=2)
    list(source)
    time.sleep(0.05)
    assert threading.active_count() == before


def test_camera_that_cannot_be_opened():
    with pytest.raises(SourceError, match="cannot open camera"):
        CameraSource(99)


def test_gstreamer_and_picamera2_errors_are_clear():
    if "GStreamer:                   NO" in cv2.getBuildInformation():
        with pytest.raises(SourceError, match="GStreamer"):
            CameraSource("libcamerasrc ! videoconvert ! appsink")
    try:
        import picamera2  # noqa: F401
    except ImportError:
        with pytest.raises(SourceError, match="picamera2 is not installed"):
            PiCamera2Source()
        with pytest.raises(SourceError, match="picamera2"):
            open_source(camera="picamera2")


def test_open_source_needs_exactly_one(tmp_path):
    with pytest.raises(SourceError):
        open_source()
    with pytest.raises(SourceError):
        open_source(camera=0, video=tmp_path / "x.mp4")


def test_read_image_errors(tmp_path, seq):
    with pytest.raises(ImageError, match="not found"):
        read_image(tmp_path / "nope.jpg")
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        read_image(tmp_path / "empty.jpg")
    with pytest.raises(ImageError, match="directory"):
        read_image(tmp_path)


def _small_jpeg(path):
    path.write_bytes(cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8))[1].tobytes())
    return path


def test_read_image_refuses_what_is_not_a_regular_file(tmp_path):
    # /dev/zero was read until MemoryError, a FIFO hung: only regular files are read.
    import os

    photo = _small_jpeg(tmp_path / "photo.jpg")
    (tmp_path / "link.jpg").symlink_to(photo)  # a link to a regular file is read like the file
    assert np.array_equal(read_image(tmp_path / "link.jpg"), read_image(photo))
    if os.path.exists("/dev/null"):
        (tmp_path / "null.jpg").symlink_to("/dev/null")
        for device in ("/dev/null", tmp_path / "null.jpg"):
            with pytest.raises(ImageError, match=r"not a regular file \(a character device\)"):
                read_image(device)
    if hasattr(os, "mkfifo"):
        fifo = tmp_path / "pipe.jpg"
        os.mkfifo(fifo)
        stop = threading.Event()

        def writer():  # lets a reader that opened the FIFO go on (EOF) instead of waiting forever
            while not stop.is_set():
                try:
                    os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
                    return
                except OSError:  # ENXIO: nobody is reading yet
                    time.sleep(0.01)

        thread = threading.Thread(target=writer, daemon=True)
        thread.start()
        try:
            with pytest.raises(ImageError, match=r"not a regular file \(a FIFO\)"):
                read_image(fifo)
            (frame,) = list(ImageSource(fifo))  # in a stream: one bad frame
            assert frame.image is None and "FIFO" in frame.error
        finally:
            stop.set()
            thread.join()


def test_read_image_refuses_a_file_over_the_size_limit(tmp_path, monkeypatch):
    from spoofsdk import sources

    photo = _small_jpeg(tmp_path / "photo.jpg")
    monkeypatch.setattr(sources, "MAX_IMAGE_FILE_BYTES", photo.stat().st_size)
    assert read_image(photo).shape == (48, 64, 3)
    monkeypatch.setattr(sources, "MAX_IMAGE_FILE_BYTES", photo.stat().st_size - 1)
    with pytest.raises(ImageError, match=f"is {photo.stat().st_size} bytes, over the limit of {photo.stat().st_size - 1} bytes"):
        read_image(photo)


def test_image_header_sizes_for_every_format_read():
    from spoofsdk.sources import image_header_size

    image = np.zeros((37, 53, 3), np.uint8)
    for ext, kind in ((".png", "png"), (".jpg", "jpeg"), (".bmp", "bmp"), (".webp", "webp"), (".tiff", "tiff"), (".ppm", "pnm")):
        data = cv2.imencode(ext, image)[1].tobytes()
        assert image_header_size(data) == (kind, (53, 37)), ext
    lossless = cv2.imencode(".webp", image, [cv2.IMWRITE_WEBP_QUALITY, 101])[1].tobytes()
    assert image_header_size(lossless) == ("webp", (53, 37))
    assert image_header_size(b"GIF89a")[0] == "unknown"


def test_stream_urls_go_to_the_stream_source(monkeypatch):
    import spoofsdk.sources as sources

    opened = {}

    class FakeCapture:
        def __init__(self, url, backend, params):
            opened.update(url=url, backend=backend, params=params)

        def isOpened(self):
            return True

        def read(self):
            return True, np.zeros((4, 4, 3), np.uint8)

        def release(self):
            pass

    monkeypatch.setattr(sources.cv2, "VideoCapture", FakeCapture)
    source = sources.open_source(video="rtsp://cam.local/stream")
    assert isinstance(source, sources.StreamSource) and opened["backend"] == cv2.CAP_FFMPEG
    assert cv2.CAP_PROP_OPEN_TIMEOUT_MSEC in opened["params"]
    frame = next(iter(source))
    assert frame.image.shape == (4, 4, 3)
    source.close()
    assert isinstance(sources.open_source(camera="rtsp://cam.local/stream"), sources.StreamSource)


def test_read_image_reads_a_file_whose_reads_come_back_short(tmp_path, monkeypatch):
    """A raw read may return fewer bytes than asked (network and FUSE file systems): a single read
    refused a whole JPEG as truncated (a review, with reads capped at 64 KiB)."""
    import builtins

    import spoofsdk.sources as sources

    image = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    path = tmp_path / "big.jpg"
    cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert path.stat().st_size > 3 * 4096

    class ShortReads:
        def __init__(self, f):
            self.f = f

        def read(self, n=-1):
            return self.f.read(min(n, 4096) if n >= 0 else 4096)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr(sources, "open", lambda *a, **k: ShortReads(builtins.open(*a, **k)), raising=False)
    assert np.array_equal(sources.read_image(path), cv2.imread(str(path)))
