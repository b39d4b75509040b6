"""Where frames come from: image files and folders, video files, live cameras.

Every source is an iterable of :class:`Frame`. A file that cannot be read becomes a
``Frame`` with ``error`` set (the stream carries on); a source that cannot be opened, or a
video/camera that stops mid-stream, raises :class:`~spoofsdk.errors.SourceError`.

Live cameras use the *latest-frame* policy: a grabber thread reads the camera continuously
and keeps only the newest frame, so when processing is slower than the camera, stale frames
are dropped instead of queued and latency stays at one frame. Cameras:

- an integer index or ``/dev/videoN``: V4L2 (USB webcams) through OpenCV;
- a string containing ``!``: a GStreamer pipeline (``cv2.CAP_GSTREAMER``), e.g.
  :func:`libcamera_pipeline` for the Raspberry Pi camera module; needs an OpenCV built with
  GStreamer (the PyPI wheels are not);
- ``"picamera2"``: the Pi camera module through the picamera2 library, when installed;
- a network stream URL (``rtsp://``, ``rtmp://``, ``http(s)://``, ``udp://``...): an IP camera
  through OpenCV's FFmpeg backend (:class:`StreamSource`), also with the latest-frame policy.
  FFmpeg options can be passed in ``$OPENCV_FFMPEG_CAPTURE_OPTIONS``
  (e.g. ``rtsp_transport;tcp`` when UDP packets are lost on the way);
- a video file given as the camera: read like :class:`VideoSource` (every frame, its own timing),
  which is how to try the camera path without a camera.
"""
from __future__ import annotations

import logging
import os
import stat
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import cv2
import numpy as np

from .errors import ImageError, SourceError

__all__ = [
    "IMAGE_EXTENSIONS",
    "Frame",
    "read_image",
    "decode_image",
    "image_header_size",
    "DEFAULT_MAX_IMAGE_PIXELS",
    "list_images",
    "ImageSource",
    "VideoSource",
    "LiveSource",
    "CameraSource",
    "PiCamera2Source",
    "StreamSource",
    "is_stream_url",
    "libcamera_pipeline",
    "open_source",
]

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".h264"})
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm", ".pnm"})


@dataclass
class Frame:
    """One frame: the BGR image (None when it could not be read), its index, time and origin."""

    image: np.ndarray | None
    index: int
    t: float | None = None
    """Seconds since the start of the stream (video position or camera clock); None for image files."""
    path: str | None = None
    """The image file (image sources only)."""
    error: str | None = None


DEFAULT_MAX_IMAGE_PIXELS = 100_000_000
"""Larger images are refused before decoding (a 74-byte PNG can claim 10^10 pixels)."""

MAX_IMAGE_FILE_BYTES = 1 << 30
"""Larger files are refused before reading: the whole file is read into memory first.

1 GiB holds every file an image within :data:`DEFAULT_MAX_IMAGE_PIXELS` can need, uncompressed
ones included (100 M px of 16-bit RGBA TIFF or PNM is 800 MB), so the limit only stops runaway
reads: a wrong path to a disk image, a video or a log that grows."""


def _be(data: bytes, start: int, n: int) -> int:
    return int.from_bytes(data[start : start + n], "big")


def _le(data: bytes, start: int, n: int) -> int:
    return int.from_bytes(data[start : start + n], "little")


def _jpeg_segments(data: bytes) -> Iterator[tuple[int, int, int]]:
    """``(marker, start, end)`` of each marker segment of a JPEG, from SOI to its first SOS included.

    Every segment before the first scan carries its 2-byte big-endian length, so the walk steps
    over whatever a segment holds (an EXIF thumbnail's own SOI..EOI inside APP1 included) instead
    of searching the bytes for markers. A broken chain raises ValueError saying what is wrong.
    """
    pos = 2
    while True:
        if pos + 4 > len(data):
            raise ValueError("truncated JPEG (the file ends in its headers, before the image data)")
        if data[pos] != 0xFF:
            # Stray bytes between segments: libjpeg skips to the next FF with a warning ("extraneous bytes
            # before marker") and decodes the image, so the walk does the same.
            nxt = data.find(b"\xff", pos)
            if nxt < 0:
                raise ValueError("truncated JPEG (the file ends in its headers, before the image data)")
            pos = nxt
            continue
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker == 0xD9:
            raise ValueError("corrupt JPEG (its end-of-image marker comes before any image data)")
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
            continue
        length = _be(data, pos + 2, 2)
        if length < 2:
            raise ValueError(f"corrupt JPEG (a marker segment of length {length} at byte {pos})")
        end = pos + 2 + length
        if end > len(data):
            raise ValueError("truncated JPEG (the file ends inside a marker segment, before the image data)")
        yield marker, pos, end
        if marker == 0xDA:  # SOS: its header is the segment; the entropy-coded data follows
            return
        pos = end


def _is_sof(marker: int) -> bool:
    """SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC): the segments that carry the frame's size."""
    return 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC)


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    try:
        for marker, pos, end in _jpeg_segments(data):
            if _is_sof(marker):
                return (_be(data, pos + 7, 2), _be(data, pos + 5, 2)) if end >= pos + 9 else None
    except ValueError:
        pass
    return None


def _jpeg_layout(data: bytes, name: str) -> tuple[int, int | None, int]:
    """From one walk of a JPEG's headers: where its first scan's entropy-coded data starts, the frame's
    number of components, and its EXIF orientation (1-8; 1 without one).

    A broken segment chain before the scan is an :class:`ImageError`.
    """
    components, orientation = None, None
    try:
        for marker, pos, end in _jpeg_segments(data):
            if _is_sof(marker) and end >= pos + 10:
                components = data[pos + 9]  # Nf, after precision, height and width
            elif marker == 0xE1 and orientation is None and data[pos + 4 : pos + 10] == b"Exif\x00\x00":
                orientation = _exif_orientation(data, pos + 10, end)  # the first EXIF block's
            elif marker == 0xDA:
                return end, components, orientation or 1
    except ValueError as e:
        raise ImageError(f"{name} is a {e}") from None
    raise ImageError(f"{name} is a corrupt JPEG (no image data)")  # not reached: the walk ends at an SOS or raises


MIN_JPEG_FILL_ROWS = 8
"""A uniform band of the decoder's grey this deep (one MCU row) at the end of a JPEG is missing data."""

# What cv2.imdecode(IMREAD_COLOR) gives where libjpeg ran out of data: it decodes the missing blocks
# with every coefficient 0, i.e. every component sample 128. Measured with OpenCV 4.14: grey and
# YCbCr JPEGs (any chroma subsampling, restart intervals) give exactly (128, 128, 128); four-component
# ones (CMYK, YCCK) give (64, 64, 64) or (65, 65, 65) after OpenCV's CMYK conversion.
_JPEG_FILL = {1: (128,), 3: (128,), 4: (64, 65)}


def _exif_orientation(data: bytes, tiff: int, end: int) -> int:
    """The orientation tag (1-8) of the EXIF TIFF block at ``data[tiff:end]``; 1 when absent or unreadable.

    cv2.imdecode applies it, so it says where the decoder's last rows end up in the image it returns.
    """
    read = _le if data[tiff : tiff + 2] == b"II" else _be
    ifd = tiff + read(data, tiff + 4, 4)
    for i in range(read(data, ifd, 2)):  # slices past the end read as 0: a cut block gives no tag, not an error
        entry = ifd + 2 + 12 * i
        if entry + 12 > end:
            break
        if read(data, entry, 2) == 0x0112:
            value = read(data, entry + 8, 2)
            return value if 1 <= value <= 8 else 1
    return 1


def _jpeg_fill_rows(image: np.ndarray, orientation: int, fills: tuple[int, ...]) -> tuple[int, int]:
    """How many of the decoder's last rows are exactly one of its fill colours ``fills``, and which one.

    ``(0, 0)`` when fewer than :data:`MIN_JPEG_FILL_ROWS`. The decoder's last rows are the image's
    bottom, unless ``cv2.imdecode`` applied an EXIF ``orientation``: then they are its top (3, 4), its
    right columns (5, 8) or its left columns (6, 7). Only that edge is looked at: a picture with a grey
    band anywhere else holds no sign of missing data.
    """
    columns = image.transpose(1, 0, 2)
    band = {3: image, 4: image, 5: columns[::-1], 8: columns[::-1], 6: columns, 7: columns}.get(orientation, image[::-1])
    value = int(band[0, 0, 0])
    # The first MIN_JPEG_FILL_ROWS rows decide, so a photo costs a few rows' compare; only a band that
    # passes is measured.
    if value not in fills or not (band[:MIN_JPEG_FILL_ROWS] == value).all():
        return 0, 0
    rows = (band == value).reshape(band.shape[0], -1).all(axis=1)
    return (len(rows) if rows.all() else int(rows.argmin())), value


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    read = _le if data[:2] == b"II" else _be
    offset = read(data, 4, 4)
    if offset + 2 > len(data):
        return None
    count = read(data, offset, 2)
    size: dict[int, int] = {}
    for i in range(count):
        entry = offset + 2 + 12 * i
        if entry + 12 > len(data):
            break
        tag, kind = read(data, entry, 2), read(data, entry + 2, 2)
        if tag in (256, 257):  # ImageWidth, ImageLength: SHORT (3) or LONG (4)
            size[tag] = read(data, entry + 8, 2) if kind == 3 else read(data, entry + 8, 4)
    return (size[256], size[257]) if len(size) == 2 else None


def _pnm_size(data: bytes) -> tuple[int, int] | None:
    tokens: list[int] = []
    for line in data[2:4096].split(b"\n"):
        for token in line.split(b"#", 1)[0].split():
            if not token.isdigit():
                return None
            tokens.append(int(token))
            if len(tokens) == 2:
                return tokens[0], tokens[1]
    return None


def image_header_size(data: bytes) -> tuple[str, tuple[int, int] | None]:
    """The format and ``(width, height)`` an image file's header announces, read without decoding.

    Returns ``(format, None)`` when the header is too short or malformed to say, and
    ``("unknown", None)`` for a format spoofsdk does not read.
    """
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png", ((_be(data, 16, 4), _be(data, 20, 4)) if len(data) >= 24 and data[12:16] == b"IHDR" else None)
    if data[:2] == b"\xff\xd8":
        return "jpeg", _jpeg_size(data)
    if data[:2] == b"BM":
        return "bmp", ((_le(data, 18, 4), abs(int.from_bytes(data[22:26], "little", signed=True))) if len(data) >= 26 else None)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        chunk = data[12:16]
        if chunk == b"VP8X" and len(data) >= 30:
            return "webp", (_le(data, 24, 3) + 1, _le(data, 27, 3) + 1)
        if chunk == b"VP8L" and len(data) >= 25:
            bits = _le(data, 21, 4)
            return "webp", ((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
        if chunk == b"VP8 " and len(data) >= 30:
            return "webp", (_le(data, 26, 2) & 0x3FFF, _le(data, 28, 2) & 0x3FFF)
        return "webp", None
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff", _tiff_size(data)
    if len(data) >= 3 and data[0:1] == b"P" and data[1:2] in b"123456" and data[2:3].isspace():
        return "pnm", _pnm_size(data)
    return "unknown", None


def decode_image(data: bytes, name: str = "image", max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """Decode image file bytes as BGR uint8, checking the header's size against ``max_pixels`` first.

    Every failure is an :class:`ImageError`: empty, unknown format, malformed or oversized
    header, truncated JPEG, or anything the decoder rejects.
    """
    if not data:
        raise ImageError(f"{name} is empty")
    kind, size = image_header_size(data)
    if kind == "unknown":
        raise ImageError(f"{name} is not a readable image (not JPEG, PNG, BMP, WebP, TIFF or PNM; or corrupted data)")
    if size is None:
        raise ImageError(f"{name} is not a readable image (malformed {kind.upper()} header)")
    width, height = size
    if width <= 0 or height <= 0:
        raise ImageError(f"{name}: its {kind.upper()} header announces an empty image ({width}x{height})")
    if max_pixels is not None and width * height > max_pixels:
        raise ImageError(
            f"{name}: its {kind.upper()} header announces {width}x{height} px, over the limit of {max_pixels} pixels "
            "(downscale it first, or raise max_image_pixels)"
        )
    # libjpeg decodes a truncated JPEG "successfully", filling the missing part with grey and
    # only printing a warning; a half-grey face must not be scored, so the end-of-image marker
    # must follow the image data. Not necessarily at the end of the file: motion photos and
    # camera trailers append data after it.
    components, orientation = None, 1
    if kind == "jpeg":
        scan, components, orientation = _jpeg_layout(data, name)
        # Inside entropy-coded data an FF byte is always followed by 00 (stuffing) or a restart
        # marker (D0-D7), so the first FF D9 after the first scan header is the image's own EOI,
        # progressive JPEGs (several scans) included.
        if data.find(b"\xff\xd9", scan) < 0:
            raise ImageError(f"{name} is a truncated JPEG (no end-of-image marker after its image data)")
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except Exception as e:  # cv2.error, MemoryError...: a decoder failure is a bad image, never a crash
        raise ImageError(f"{name} could not be decoded: {type(e).__name__}: {str(e).strip()[:200]}") from e
    if image is None or image.size == 0:
        raise ImageError(f"{name} is not a readable image (unknown format or corrupted data)")
    if kind == "jpeg":
        # Data cut short but still ending in FF D9 (a partial copy or download that got its end
        # marker back, a damaged card) passes the marker check: libjpeg fills the missing rows
        # with flat grey and only prints a warning. A photo practically never has a band of exactly
        # that grey, pixel for pixel and an MCU row deep, where the decoder's output ends; a picture
        # that does (flat 128 grey, grey padding) is refused too, the price of never scoring a cut one.
        rows, value = _jpeg_fill_rows(image, orientation, _JPEG_FILL.get(components or 3, (128,)))
        if rows:
            raise ImageError(
                f"{name} is a corrupt or truncated JPEG: the decoder filled the last {rows} rows with grey "
                f"({value}, {value}, {value}), where its image data ran out"
            )
    return image


def read_image(path: str | Path, max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """Read an image file as BGR uint8 (EXIF orientation applied, grey/16-bit/alpha converted).

    Raises :class:`ImageError` for a missing, empty, truncated, oversized (header over
    ``max_pixels``, file over :data:`MAX_IMAGE_FILE_BYTES`) or undecodable file, and for a
    path that is not a regular file (a symbolic link to one is read).
    """
    p = Path(path)
    if not p.exists():
        raise ImageError(f"image file not found: {p}")
    if p.is_dir():
        raise ImageError(f"{p} is a directory, not an image file")
    try:
        # stat, not lstat: a symbolic link to a regular file is fine. Checked before opening:
        # /dev/zero reads until memory runs out, a FIFO blocks until a writer comes, and opening
        # some devices does something (rewinds a tape, arms a watchdog).
        _check_image_file(p, os.stat(p))
        # O_NONBLOCK: should the path have become a FIFO since, opening it must not block either;
        # fstat then checks what was actually opened. It changes nothing for a regular file.
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
        with open(fd, "rb", buffering=0) as f:
            size = _check_image_file(p, os.fstat(fd))
            # A raw read may return fewer bytes than asked (some network and FUSE file systems):
            # read until end of file, one byte more than announced telling a file that grows.
            chunks, got = [], 0
            while got <= size:
                chunk = f.read(size + 1 - got)
                if not chunk:
                    break
                chunks.append(chunk)
                got += len(chunk)
            data = b"".join(chunks)
    except OSError as e:
        raise ImageError(f"cannot read {p}: {e}") from e
    except MemoryError as e:
        raise ImageError(f"cannot read {p}: not enough memory") from e
    if len(data) > size:
        raise ImageError(f"{p} grew while being read (is it still being written?)")
    return decode_image(data, str(p), max_pixels)


def _check_image_file(p: Path, st: os.stat_result) -> int:
    """The size of a regular file of at most :data:`MAX_IMAGE_FILE_BYTES`; anything else is an ImageError."""
    if not stat.S_ISREG(st.st_mode):
        kinds = {stat.S_ISDIR: "a directory", stat.S_ISCHR: "a character device", stat.S_ISBLK: "a block device",
                 stat.S_ISFIFO: "a FIFO", stat.S_ISSOCK: "a socket"}
        kind = next((what for test, what in kinds.items() if test(st.st_mode)), "of an unknown kind")
        raise ImageError(f"{p} is not a regular file ({kind}): only image files are read")
    if st.st_size > MAX_IMAGE_FILE_BYTES:
        raise ImageError(f"{p} is {st.st_size} bytes, over the limit of {MAX_IMAGE_FILE_BYTES} bytes for an image file")
    return st.st_size


def list_images(inputs: Iterable[str | Path]) -> list[Path]:
    """Expand files and folders (recursively, sorted) into image files.

    Files named explicitly are kept whatever their extension (reading them reports the
    problem); folders contribute files with an image extension. A missing path is kept too, so
    it is reported per image. A folder without images raises :class:`SourceError`.
    """
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file())
            if not found:
                raise SourceError(f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) in folder {p}")
            out.extend(found)
        else:
            out.append(p)
    return out


class ImageSource:
    """Image files and folders as a stream of frames; unreadable files give frames with ``error`` set."""

    def __init__(self, inputs: str | Path | Sequence[str | Path]) -> None:
        if isinstance(inputs, (str, Path)):
            inputs = [inputs]
        self.paths = list_images(inputs)
        if not self.paths:
            raise SourceError("no image files given")

    def __len__(self) -> int:
        return len(self.paths)

    def __iter__(self) -> Iterator[Frame]:
        for i, p in enumerate(self.paths):
            try:
                yield Frame(read_image(p), i, None, str(p))
            except ImageError as e:
                yield Frame(None, i, None, str(p), str(e))

    def close(self) -> None:
        pass


class VideoSource:
    """Frames of a video file; ``step`` keeps every step-th frame (skipping the rest without converting them).

    ``t`` is the frame's position in the video (index / fps). A video that stops decoding
    before its announced length raises :class:`SourceError` after the last good frame.
    """

    def __init__(self, path: str | Path, step: int = 1) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise SourceError(f"video file not found: {self.path}")
        self.step = max(1, int(step))
        self._cap = cv2.VideoCapture(str(self.path))
        if not self._cap.isOpened():
            raise SourceError(f"cannot open video {self.path} (not a video, unsupported codec, or truncated file)")
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and np.isfinite(fps) and 0 < fps < 1000 else 30.0
        self.frame_count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        log.debug("video %s: %.2f fps, %d frames announced, step %d", self.path, self.fps, self.frame_count, self.step)

    def __iter__(self) -> Iterator[Frame]:
        index = 0
        try:
            while True:
                if index % self.step:
                    ok = self._cap.grab()
                    image = None
                else:
                    ok, image = self._cap.read()
                if not ok:
                    break
                if image is not None:
                    yield Frame(image, index, index / self.fps)
                index += 1
        finally:
            self.close()
        if index == 0:
            raise SourceError(f"no frame could be decoded from {self.path}")
        # Container frame counts are estimates; allow a little slack before calling it truncated.
        if self.frame_count > 0 and index < self.frame_count - max(2, self.frame_count // 50):
            raise SourceError(
                f"video {self.path} ended mid-stream: decoded {index} of {self.frame_count} frames (file truncated or corrupted)"
            )

    def close(self) -> None:
        self._cap.release()


class LiveSource:
    """A live frame producer (``read() -> (ok, image)``) behind the latest-frame policy.

    With ``latest_only`` a daemon thread calls ``read`` continuously and keeps only the newest
    frame; iteration returns each new frame once, and frames produced while the consumer was
    busy are dropped (counted in :attr:`dropped`). Without it, frames are read on demand.
    ``step`` keeps every step-th delivered frame (a manual frame-skip under load).

    When ``read`` keeps failing for ``timeout`` seconds (camera unplugged, pipeline ended),
    iteration raises :class:`SourceError`. ``max_frames`` stops after that many frames.
    """

    def __init__(
        self,
        read: Callable[[], tuple[bool, Any]],
        name: str,
        release: Callable[[], None] | None = None,
        latest_only: bool = True,
        timeout: float = 2.0,
        step: int = 1,
        max_frames: int | None = None,
    ) -> None:
        self._read = read
        self._release = release
        self.name = name
        self.latest_only = latest_only
        self.timeout = float(timeout)
        self.step = max(1, int(step))
        self.max_frames = max_frames
        self.dropped = 0
        self.delivered = 0
        self._cond = threading.Condition()
        self._latest: tuple[int, np.ndarray, float] | None = None
        self._seq = 0
        self._error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = time.monotonic()

    # -- grabber thread -------------------------------------------------------------------
    def _grab_loop(self) -> None:
        last_ok = time.monotonic()
        while not self._stop.is_set():
            try:
                ok, image = self._read()
            except Exception as e:  # a driver error must end the stream with a message, not kill the thread silently
                ok, image = False, None
                log.debug("%s: read raised %s", self.name, e)
            now = time.monotonic()
            if ok and image is not None:
                last_ok = now
                with self._cond:
                    self._seq += 1
                    self._latest = (self._seq, image, now - self._t0)
                    self._cond.notify_all()
            elif now - last_ok > self.timeout:
                with self._cond:
                    self._error = f"{self.name} stopped delivering frames (no frame for {self.timeout:.1f} s)"
                    self._cond.notify_all()
                return
            else:
                time.sleep(0.005)

    def _start(self) -> None:
        if self.latest_only and self._thread is None:
            self._thread = threading.Thread(target=self._grab_loop, name=f"spoofsdk-grab-{self.name}", daemon=True)
            self._thread.start()

    def _next_latest(self, last_seq: int) -> tuple[int, np.ndarray, float]:
        with self._cond:
            self._cond.wait_for(
                lambda: self._error is not None or (self._latest is not None and self._latest[0] > last_seq),
                timeout=self.timeout + 1.0,
            )
            if self._latest is not None and self._latest[0] > last_seq:
                return self._latest
            raise SourceError(self._error or f"{self.name}: no frame within {self.timeout:.1f} s")

    def _next_direct(self) -> tuple[int, np.ndarray, float]:
        deadline = time.monotonic() + self.timeout
        while True:
            ok, image = self._read()
            if ok and image is not None:
                self._seq += 1
                return self._seq, image, time.monotonic() - self._t0
            if time.monotonic() > deadline:
                raise SourceError(f"{self.name} stopped delivering frames (no frame for {self.timeout:.1f} s)")
            time.sleep(0.005)

    def __iter__(self) -> Iterator[Frame]:
        self._start()
        last_seq = 0
        try:
            while self.max_frames is None or self.delivered < self.max_frames:
                seq, image, t = self._next_latest(last_seq) if self.latest_only else self._next_direct()
                self.dropped += seq - last_seq - 1
                last_seq = seq
                if (seq - 1) % self.step:
                    continue
                self.delivered += 1
                yield Frame(image, seq - 1, t)
        finally:
            self.close()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)
        if self._release is not None:
            release, self._release = self._release, None
            release()


def _is_video_file(camera: str | Path) -> bool:
    """A camera argument naming a regular file (not a /dev/videoN device, not a pipeline) is a video file."""
    text = str(camera)
    if "!" in text or text.strip().isdigit():
        return False
    p = Path(text)
    if p.suffix.lower() in VIDEO_EXTENSIONS and not p.exists():
        raise SourceError(f"video file not found: {p}")
    return p.is_file() and not text.startswith("/dev/")


def _ignored_camera_settings(camera_kwargs: dict[str, Any], what: str) -> None:
    given = [k for k in ("width", "height", "fps") if camera_kwargs.get(k)]
    if given:
        log.warning("%s is a video file: %s apply to cameras and are ignored", what, "/".join(given))


def _opencv_has(feature: str) -> bool:
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith(feature + ":"):
            return "YES" in line.split(":", 1)[1]
    return False


def libcamera_pipeline(width: int = 640, height: int = 480, fps: int = 30) -> str:
    """A GStreamer pipeline for the Raspberry Pi camera module via libcamera, delivering BGR to OpenCV.

    ``appsink drop=true max-buffers=1`` keeps only the newest buffer, like the grabber thread.
    """
    return (
        f"libcamerasrc ! video/x-raw,width={width},height={height},framerate={fps}/1 ! "
        "videoconvert ! video/x-raw,format=BGR ! appsink drop=true max-buffers=1 sync=false"
    )


class CameraSource(LiveSource):
    """A camera through OpenCV: an index / ``/dev/videoN`` (V4L2) or a GStreamer pipeline string."""

    def __init__(
        self,
        device: int | str = 0,
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
        **kwargs: Any,
    ) -> None:
        if isinstance(device, str) and device.strip().isdigit():
            device = int(device)
        if isinstance(device, str) and "!" in device:
            if not _opencv_has("GStreamer"):
                raise SourceError(
                    "this OpenCV build has no GStreamer support (the PyPI wheels do not), so it cannot open a "
                    "GStreamer pipeline; on a Raspberry Pi use the system OpenCV (python3-opencv) or install "
                    "picamera2 and use --camera picamera2"
                )
            cap = cv2.VideoCapture(device, cv2.CAP_GSTREAMER)
        else:
            backend = cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY
            cap = cv2.VideoCapture(device, backend)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"cannot open camera {device!r} (not connected, in use by another program, or no permission)")
        if width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        if height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        if fps:
            cap.set(cv2.CAP_PROP_FPS, fps)
        # The driver's own queue adds latency on top of ours; keep it to one buffer where supported.
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        log.debug(
            "camera %r opened: %gx%g at %g fps (asked %s)", device, cap.get(cv2.CAP_PROP_FRAME_WIDTH),
            cap.get(cv2.CAP_PROP_FRAME_HEIGHT), cap.get(cv2.CAP_PROP_FPS), {"width": width, "height": height, "fps": fps},
        )
        super().__init__(cap.read, f"camera {device}", release=cap.release, **kwargs)


class PiCamera2Source(LiveSource):
    """The Raspberry Pi camera module through picamera2 (optional dependency)."""

    def __init__(self, width: int | None = None, height: int | None = None, fps: float | None = None, **kwargs: Any) -> None:
        width, height = width or 640, height or 480
        try:
            from picamera2 import Picamera2  # type: ignore[import-not-found]
        except ImportError:
            raise SourceError(
                "picamera2 is not installed: on Raspberry Pi OS run 'sudo apt install python3-picamera2' and create "
                "the venv with --system-site-packages, or pass a libcamera GStreamer pipeline as the camera"
            ) from None
        try:
            camera = Picamera2()
            # picamera2's "RGB888" is stored B, G, R in memory: exactly OpenCV's BGR.
            controls = {"FrameRate": float(fps)} if fps else {}
            camera.configure(
                camera.create_video_configuration(main={"size": (width, height), "format": "RGB888"}, controls=controls)
            )
            camera.start()
        except Exception as e:
            raise SourceError(f"cannot start the Pi camera through picamera2: {e}") from e

        def read() -> tuple[bool, np.ndarray]:
            return True, camera.capture_array("main")

        def release() -> None:
            camera.stop()
            camera.close()

        super().__init__(read, "picamera2", release=release, **kwargs)


STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")


def is_stream_url(value: Any) -> bool:
    """True for a network stream address (``rtsp://...`` and the like) rather than a file or device."""
    return isinstance(value, str) and value.strip().lower().startswith(STREAM_SCHEMES)


def _redact(url: str) -> str:
    """The URL without its password (``rtsp://user:secret@host`` -> ``rtsp://user:***@host``): it goes into messages."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.partition("@")
    if at and ":" in userinfo:
        return f"{scheme}{sep}{userinfo.split(':', 1)[0]}:***@{host}"
    return url


class StreamSource(LiveSource):
    """A network stream (IP camera over RTSP, HTTP/MJPEG...) through OpenCV's FFmpeg backend.

    Opening and reading time out after ``open_timeout`` seconds instead of FFmpeg's much longer
    default, so an unreachable camera is a clear :class:`SourceError`, not a hang.
    """

    def __init__(self, url: str, open_timeout: float = 10.0, width: int | None = None, height: int | None = None,
                 fps: float | None = None, **kwargs: Any) -> None:
        name = f"stream {_redact(url)}"
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(open_timeout * 1000), cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(open_timeout * 1000)]
        try:
            cap = cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)
        except cv2.error as e:
            raise SourceError(f"cannot open {name}: {e}") from e
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"cannot open {name} (unreachable, wrong address or credentials, or a codec this OpenCV lacks)")
        if width or height or fps:
            log.warning("%s: width/height/fps are set by the camera itself, not by spoofsdk; ignored", name)
        kwargs.setdefault("timeout", max(2.0, open_timeout / 2))
        super().__init__(cap.read, name, release=cap.release, **kwargs)


def open_source(
    camera: int | str | None = None,
    video: str | Path | None = None,
    images: Sequence[str | Path] | None = None,
    step: int = 1,
    **camera_kwargs: Any,
) -> ImageSource | VideoSource | LiveSource:
    """Open exactly one of a camera, a video file or image files/folders.

    ``camera`` may also be a stream URL (``rtsp://...``) or a video file; ``video`` may be a
    stream URL. ``camera_kwargs`` (``width``, ``height``, ``fps``, ``timeout``...) go to the camera.
    """
    given = [x for x in (camera, video, images or None) if x is not None]
    if len(given) != 1:
        raise SourceError("give exactly one source: a camera, a video file, or image files/folders")
    if camera is not None:
        if is_stream_url(camera):
            return StreamSource(str(camera).strip(), step=step, **camera_kwargs)
        if str(camera).lower() in ("picamera2", "picam"):
            return PiCamera2Source(step=step, **camera_kwargs)
        if isinstance(camera, (str, Path)) and _is_video_file(camera):
            _ignored_camera_settings(camera_kwargs, str(camera))
            return VideoSource(camera, step=step)
        return CameraSource(camera, step=step, **camera_kwargs)
    if video is not None:
        if is_stream_url(video):
            return StreamSource(str(video).strip(), step=step, **camera_kwargs)
        _ignored_camera_settings(camera_kwargs, str(video))
        return VideoSource(video, step=step)
    return ImageSource(list(images or ()))
