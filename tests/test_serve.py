"""spoofsdk serve over HTTP (loopback only): page, MJPEG stream, events, status, token, bad requests.

The model loop must keep going whatever the viewers do; every test checks it still counts frames.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("aiohttp", reason="spoofsdk[serve] is not installed")
import aiohttp  # noqa: E402

from spoofsdk import LivenessChecker  # noqa: E402
from spoofsdk.cli import main  # noqa: E402
from spoofsdk.errors import SourceError  # noqa: E402
from spoofsdk.serve.app import ServerThread, make_demo_app, make_live_app  # noqa: E402
from spoofsdk.serve.demo import DemoError, demo_config  # noqa: E402
from spoofsdk.serve.live import LiveHub  # noqa: E402
from spoofsdk.model import SpoofModel  # noqa: E402

from conftest import build_tiny_model, missing  # noqa: E402

TOKEN = "s3cret-token"


def _frame(i: int) -> np.ndarray:
    """A 640x480 synthetic frame with a bright face-sized blob (the checker may or may not see a face)."""
    image = np.full((480, 640, 3), 60 + (i % 50), np.uint8)
    cv2.circle(image, (320 + (i % 20), 240), 90, (180, 170, 200), -1)
    return image


def endless():
    i = 0
    while True:
        yield _frame(i)
        i += 1


@pytest.fixture(scope="module")
def live_server():
    checker = LivenessChecker(build_tiny_model())
    hub = LiveHub(checker, endless, pace_fps=60)
    server = ServerThread(make_live_app(hub, token=TOKEN, max_viewers=10)).start()
    try:
        yield server, hub
    finally:
        server.stop()


def _get(url: str, headers: dict | None = None, timeout: float = 10.0):
    async def go():
        async with aiohttp.ClientSession() as session:
            async with session.get(url, headers=headers or {}, timeout=aiohttp.ClientTimeout(total=timeout)) as r:
                return r.status, dict(r.headers), await r.read()

    return asyncio.run(go())


def _wait_frames(hub: LiveHub, more: int = 5, timeout: float = 10.0) -> None:
    start = hub.frames
    deadline = time.monotonic() + timeout
    while hub.frames < start + more:
        assert time.monotonic() < deadline, f"the model loop stopped at {hub.frames} frames ({hub.status()})"
        time.sleep(0.02)


def test_runtime_does_not_import_the_server_library():
    code = "import sys, spoofsdk, spoofsdk.cli, spoofsdk.checker; print('aiohttp' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


def test_page_status_and_decisions(live_server):
    server, hub = live_server
    _wait_frames(hub)
    status, headers, body = _get(f"{server.url}/?token={TOKEN}")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b"stream.mjpg" in body and b"EventSource" in body
    status, _, body = _get(f"{server.url}/status", {"Authorization": f"Bearer {TOKEN}"})
    info = json.loads(body)
    assert status == 200 and info["model"] == "tiny" and info["frames"] > 0 and info["running"] and info["source"] == "running"
    status, _, body = _get(f"{server.url}/decisions?token={TOKEN}")
    decisions = json.loads(body)
    assert status == 200 and decisions and {"label", "reason", "frames", "score"} <= set(decisions[0])


def test_events_carry_the_run_json_lines(live_server):
    server, hub = live_server

    async def read_events():
        frames = []
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{server.url}/events?token={TOKEN}") as r:
                assert r.headers["Content-Type"].startswith("text/event-stream")
                event = None
                async for raw in r.content:
                    line = raw.decode().rstrip("\n")
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: ") and event == "frame":
                        frames.append(json.loads(line[6:]))
                        if len(frames) >= 5:
                            return frames
    frames = asyncio.run(asyncio.wait_for(read_events(), 20))
    numbers = [f["frame"] for f in frames]
    assert numbers == sorted(numbers) and len(set(numbers)) == 5
    # The same object `spoofsdk run --json` prints for a stream frame.
    checker = LivenessChecker(build_tiny_model())
    expected = checker.feed(_frame(0), t=0.0, index=0).to_dict()
    assert set(frames[-1]) == set(expected)
    assert frames[-1]["image_size"] == [640, 480] and frames[-1]["label"] in ("real", "spoof", "unknown")


def test_stream_sends_annotated_jpegs_once_per_new_frame(live_server):
    server, hub = live_server

    async def read_parts(n):
        parts = []
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{server.url}/stream.mjpg?token={TOKEN}") as r:
                assert r.headers["Content-Type"] == "multipart/x-mixed-replace; boundary=frame"
                reader = aiohttp.MultipartReader.from_response(r)
                while len(parts) < n:
                    part = await reader.next()
                    parts.append((int(part.headers["X-Frame-Seq"]), float(part.headers["X-Captured"]), await part.read()))
        return parts

    parts = asyncio.run(asyncio.wait_for(read_parts(4), 20))
    seqs = [p[0] for p in parts]
    assert seqs == sorted(set(seqs)), "each part must be a newer frame"
    image = cv2.imdecode(np.frombuffer(parts[-1][2], np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (480, 640, 3)
    assert all(abs(p[1] - time.time()) < 60 for p in parts)
    deadline = time.monotonic() + 5
    while hub.viewers and time.monotonic() < deadline:
        time.sleep(0.05)
    assert hub.viewers == 0, "a closed stream must stop counting as a viewer"
    status, headers, body = _get(f"{server.url}/frame.jpg?token={TOKEN}")
    assert status == 200 and headers["Content-Type"] == "image/jpeg" and body[:2] == b"\xff\xd8"


@pytest.mark.parametrize(
    "path, headers, status, words",
    [
        ("/status", {}, 401, "needs a token"),
        ("/status?token=nope", {}, 401, "wrong token"),
        ("/stream.mjpg", {"Authorization": "Bearer nope"}, 401, "wrong token"),
        ("/", {}, 401, "needs a token"),
        (f"/nothing/here?token={TOKEN}", {}, 404, "no such page"),
        (f"/../../etc/passwd?token={TOKEN}", {}, 404, "no such page"),
    ],
)
def test_bad_requests_get_clear_errors(live_server, path, headers, status, words):
    server, hub = live_server
    got, response_headers, body = _get(server.url + path, headers)
    assert got == status
    assert response_headers["Content-Type"].startswith("application/json")
    assert words in json.loads(body)["error"]
    if status == 404:
        assert "/stream.mjpg" in json.loads(body)["endpoints"]
    _wait_frames(hub)


def test_nothing_accepts_uploads(live_server):
    server, hub = live_server

    async def post():
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{server.url}/status?token={TOKEN}", data=b"x" * 1000) as r:
                return r.status, await r.json()

    status, body = asyncio.run(post())
    assert status == 405 and "read-only" in body["error"]


def test_viewer_disconnecting_mid_stream(live_server):
    server, hub = live_server
    for _ in range(3):
        with socket.create_connection((server.host, server.port), timeout=5) as sock:
            sock.sendall(f"GET /stream.mjpg?token={TOKEN} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            received = b""
            while received.count(b"--frame") < 2:
                received += sock.recv(65536)
            # Drop the connection in the middle of a JPEG, without a goodbye.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    _wait_frames(hub, more=10)
    deadline = time.monotonic() + 5
    while hub.viewers and time.monotonic() < deadline:
        time.sleep(0.05)
    assert hub.viewers == 0
    assert _get(f"{server.url}/status?token={TOKEN}")[0] == 200


def test_fifty_viewers_at_once(live_server):
    server, hub = live_server

    async def crowd():
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            async def one():
                async with session.get(f"{server.url}/stream.mjpg?token={TOKEN}") as r:
                    if r.status == 200:
                        await r.content.readexactly(1000)  # it streams
                        await asyncio.sleep(0.5)  # stay connected while the others arrive
                        return 200, None
                    return r.status, (r.headers.get("Retry-After"), await r.json())

            return await asyncio.gather(*[one() for _ in range(50)])

    results = asyncio.run(asyncio.wait_for(crowd(), 60))
    statuses = [s for s, _ in results]
    assert statuses.count(200) == 10 and statuses.count(503) == 40
    retry, body = next(extra for s, extra in results if s == 503)
    assert retry == "5" and "too many stream connections" in body["error"]
    _wait_frames(hub, more=10)
    deadline = time.monotonic() + 5
    while hub.viewers and time.monotonic() < deadline:
        time.sleep(0.05)
    assert hub.viewers == 0


def test_a_failing_source_is_reopened_and_the_loop_goes_on():
    opened = []

    def flaky():
        opened.append(1)
        for i in range(5):
            yield _frame(i)
        raise SourceError("camera unplugged")

    hub = LiveHub(LivenessChecker(build_tiny_model()), flaky, pace_fps=100, reopen_delay=0.05).start()
    try:
        deadline = time.monotonic() + 20
        while (len(opened) < 3 or hub.frames < 12) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(opened) >= 3 and hub.frames >= 12 and hub.running
        assert "camera unplugged" in (hub.source_error or "") or hub.source_state == "running"
    finally:
        hub.stop()


def test_a_finished_file_keeps_serving_its_last_result():
    hub = LiveHub(LivenessChecker(build_tiny_model()), lambda: [_frame(0), _frame(1), None], pace_fps=100).start()
    try:
        deadline = time.monotonic() + 10
        while hub.source_state != "ended" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert hub.source_state == "ended" and hub.frames == 3
        last = json.loads(hub.events_after(2)[0][1])
        assert last["label"] == "unknown" and last["reason"] == "bad_image"
    finally:
        hub.stop()


def test_demo_refuses_a_crop_policy_it_does_not_implement(tmp_path):
    model = SpoofModel(build_tiny_model())
    # The runtime refuses unknown policies when it parses metadata; the demo must refuse too
    # (a policy the runtime learns later, before pipeline.js does).
    if "crop_policy" in {f.name for f in dataclasses.fields(model.info)}:
        model.info = dataclasses.replace(model.info, crop_policy="cap_and_stretch")
    else:
        model.info = dataclasses.replace(model.info, extra={**model.info.extra, "crop_policy": "cap_and_stretch"})
    with pytest.raises(DemoError, match="crop_policy 'cap_and_stretch'"):
        demo_config(model)
    model.info = dataclasses.replace(SpoofModel(build_tiny_model()).info, output="softmax3")
    with pytest.raises(DemoError, match="output 'softmax3'"):
        demo_config(model)
    assert demo_config(SpoofModel(build_tiny_model()))["model"]["input_size"] == "64x64"


def test_demo_app_serves_only_its_files():
    files = {"index.html": b"<html>demo</html>", "config.json": b"{}"}
    with ServerThread(make_demo_app(files)) as server:
        assert _get(server.url + "/")[2] == b"<html>demo</html>"
        status, headers, _ = _get(server.url + "/config.json")
        assert status == 200 and headers["Content-Type"].startswith("application/json")
        status, _, body = _get(server.url + "/app.py")
        assert status == 404 and "/config.json" in json.loads(body)["endpoints"]


def test_cli_usage_errors():
    runner = CliRunner()
    result = runner.invoke(main, ["serve", "--camera", "0", "--video", "x.mp4"])
    assert result.exit_code == 2 and "exactly one" in result.output
    result = runner.invoke(main, ["serve", "--demo", "--camera", "0"])
    assert result.exit_code == 2 and "--demo takes no source" in result.output
    result = runner.invoke(main, ["serve", "--video", "/no/such/video.mp4"])
    assert result.exit_code == 1 and "video file not found" in result.output


def test_demo_build_without_onnxruntime_web_says_how_to_get_it(tmp_path, monkeypatch):
    import spoofsdk.serve.demo as demo

    monkeypatch.setattr(demo, "REPO_ORT", tmp_path / "none")
    monkeypatch.setattr(demo, "DEMO_DIR", Path(demo.DEMO_DIR))  # page files stay where they are
    monkeypatch.delenv("SPOOFSDK_ORT_WEB", raising=False)
    if all((demo.DEMO_DIR / "vendor" / n).is_file() for n in demo.ORT_FILES):
        pytest.skip("this install ships onnxruntime-web in spoofsdk/serve/demo/vendor")
    result = CliRunner().invoke(main, ["demo", "build", str(tmp_path / "out"), "--yunet-model", __file__])
    assert result.exit_code == 1 and "npm ci --prefix web" in result.output


def _require_ort_web(demo) -> None:
    try:
        demo.find_ort_dir()
    except DemoError as e:
        missing(str(e))


def test_demo_build_writes_a_servable_folder_with_the_default_model(tmp_path):
    import spoofsdk.serve.demo as demo

    _require_ort_web(demo)
    yunet = tmp_path / "yunet.onnx"
    yunet.write_bytes(b"stand-in: the page loads it, this test does not")
    result = CliRunner().invoke(main, ["demo", "build", str(tmp_path / "out"), "--yunet-model", str(yunet)])
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    names = {p.name for p in out.iterdir()}
    assert {"index.html", "app.js", "pipeline.js", "model.onnx", "yunet.onnx", "config.json", *demo.ORT_FILES} == names
    default = demo.demo_model()  # the default's FP32 sibling: wasm INT8 kernels round unlike native ones
    assert default.info.precision == "fp32" and default.info.name == SpoofModel().info.name
    config = json.loads((out / "config.json").read_text())
    assert config["sha256"] == default.sha256 == hashlib.sha256((out / "model.onnx").read_bytes()).hexdigest()
    assert config["model"]["threshold"] == repr(default.info.threshold) and config["quality"]["min_face_px"] == 64


def test_serve_without_the_extra_says_what_to_install():
    code = (
        "import sys; sys.modules['aiohttp'] = None\n"  # as if spoofsdk[serve] were not installed
        "from spoofsdk.cli import main\n"
        "main(['serve', '--camera', '0'])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 1
    assert "pip install 'spoofsdk[serve]'" in result.stderr


def test_three_viewers_share_one_read_and_one_encode_per_frame():
    pulled = []

    def counting():
        i = 0
        while True:
            pulled.append(i)
            yield _frame(i)
            i += 1

    hub = LiveHub(LivenessChecker(build_tiny_model()), counting, pace_fps=30)
    with ServerThread(make_live_app(hub)) as server:
        async def viewer():
            seqs = []
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{server.url}/stream.mjpg") as r:
                    reader = aiohttp.MultipartReader.from_response(r)
                    while len(seqs) < 15:
                        part = await reader.next()
                        await part.read()
                        seqs.append(int(part.headers["X-Frame-Seq"]))
            return seqs

        async def three():
            return await asyncio.gather(viewer(), viewer(), viewer())

        seen = asyncio.run(asyncio.wait_for(three(), 30))
    # Counted once the server (and with it the hub) has stopped: read while it ran, the model loop
    # could go on pulling frames between the two readings (a race that failed under CPU load).
    frames, encoded = hub.frames, hub.encoded
    assert len(pulled) - frames in (0, 1), "the source must be read once per processed frame, whatever the viewers"
    assert encoded <= frames, "one picture per frame at most, shared by all viewers"
    common = set(seen[0]) & set(seen[1]) & set(seen[2])
    assert len(common) >= 5, "the viewers must be watching the same pictures"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _serve_command(args: list[str], timeout: float = 60.0):
    """Run `spoofsdk serve ARGS` as a user would; yields its URL once it answers, then stops it with Ctrl-C."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "spoofsdk", "serve", *args, "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            assert proc.poll() is None, proc.communicate()
            try:
                _get(url + "/nothing", timeout=5)
                break
            except aiohttp.ClientConnectionError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.3)
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert f"{url}/" in out


def test_serve_command_live_view_on_an_image_folder(tmp_path):
    model = tmp_path / "tiny.onnx"
    model.write_bytes(build_tiny_model())
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"f{i}.png"), _frame(i))
    with _serve_command([str(tmp_path), "--model", str(model), "--loop", "--fps", "20"]) as url:
        deadline = time.monotonic() + 30
        while (info := json.loads(_get(url + "/status")[2]))["frames"] < 10:
            assert time.monotonic() < deadline, info
            time.sleep(0.2)
        assert info["model"] == "tiny" and info["source"] == "running"
        status, headers, body = _get(url + "/frame.jpg")
        assert status == 200 and cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR).shape == (480, 640, 3)


def test_serve_command_demo(tmp_path):
    import spoofsdk.serve.demo as demo

    yunet = tmp_path / "yunet.onnx"
    yunet.write_bytes(b"stand-in")
    try:
        demo.find_ort_dir()
        ort = []
    except DemoError:  # the server is under test, not onnxruntime-web: stand-ins do
        (tmp_path / "ort").mkdir()
        for name in demo.ORT_FILES:
            (tmp_path / "ort" / name).write_bytes(b"\0asm stand-in" if name.endswith(".wasm") else b"// stand-in")
        ort = ["--ort-dir", str(tmp_path / "ort")]
    with _serve_command(["--demo", "--yunet-model", str(yunet), "--token", "abc", *ort]) as url:
        assert _get(url + "/config.json")[0] == 401
        # The browser opens the page with ?token; its own requests (scripts, config, models, wasm)
        # carry only the cookie that answer set.
        status, headers, _ = _get(url + "/?token=abc")
        assert status == 200
        cookie = _session_cookie(headers)
        # named after the port, so a server restarted on it replaces its cookie instead of adding one
        # (a new name per start piled up until the host's requests passed the 8 kB header limit)
        assert cookie.split("=")[0] == f"spoofsdk_session_{url.rstrip('/').rsplit(':', 1)[1]}", cookie
        status, _, body = _get(url + "/config.json", {"Cookie": cookie})
        assert status == 200 and json.loads(body)["sha256"] == demo.demo_model().sha256
        for name in ("app.js", "pipeline.js", "model.onnx", "yunet.onnx", *demo.ORT_FILES):
            assert _get(f"{url}/{name}", {"Cookie": cookie})[0] == 200, name
            assert _get(f"{url}/{name}")[0] == 401, name
        status, headers, body = _get(url + "/ort-wasm-simd-threaded.wasm", {"Cookie": cookie})
        assert status == 200 and headers["Content-Type"] == "application/wasm" and body[:4] == b"\0asm"


# --- the reviewer's findings (viewer slots, stale pictures, tokens, hosts, HEAD, files, banner) ---

def _read_head(sock: socket.socket) -> bytes:
    """Read one response's status line and headers."""
    out = b""
    while b"\r\n\r\n" not in out:
        chunk = sock.recv(1)
        assert chunk, f"closed after {out!r}"
        assert len(out) < 65536, f"no end of headers in {out[:200]!r}..."
        out += chunk
    return out


def _read_response(sock: socket.socket) -> tuple[bytes, bytes]:
    """Read one response with a Content-Length: (head, body)."""
    head = _read_head(sock)
    lengths = [line.split(b":", 1)[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
    assert lengths, f"no Content-Length in {head!r}"
    body = b""
    while len(body) < int(lengths[0]):
        chunk = sock.recv(int(lengths[0]) - len(body))
        assert chunk, f"closed after {head + body!r}"
        body += chunk
    return head, body


def _raw(host: str, port: int, request: bytes, timeout: float = 10.0) -> tuple[bytes, bytes]:
    """Send ``request`` as is; the response's (head, body)."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(request)
        return _read_response(sock)


def _session_cookie(headers) -> str:
    """``name=value`` of the session cookie a token request set (checking its attributes)."""
    set_cookie = headers["Set-Cookie"]
    attributes = [a.strip().lower() for a in set_cookie.split(";")]
    assert "httponly" in attributes and "samesite=strict" in attributes and "path=/" in attributes, set_cookie
    return set_cookie.split(";")[0]


def _stream_status(url: str) -> int:
    """The status a new /stream.mjpg viewer gets (it leaves at once)."""
    async def go():
        async with aiohttp.ClientSession() as session:
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=10)) as r:
                return r.status

    return asyncio.run(go())


def _wait_until(what, condition, timeout: float = 30.0) -> None:
    """Poll ``condition()``; the timeout is a safety net for code that never gets there."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.1)


def test_viewers_who_leave_a_silent_stream_free_their_slots():
    # A camera that is down: the stream has nothing to write, so a viewer who left was never noticed.
    opened = []

    def dead():  # delivers two frames, then never again
        opened.append(1)
        if len(opened) > 1:
            raise SourceError("camera unplugged")
        return [_frame(0), _frame(1)]

    hub = LiveHub(LivenessChecker(build_tiny_model()), dead, reopen_delay=0.2, loop=True)
    with ServerThread(make_live_app(hub, max_viewers=2)) as server:
        _wait_until("the camera is down", lambda: hub.source_state == "error")
        for _ in range(2):
            with socket.create_connection((server.host, server.port), timeout=10) as sock:
                sock.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                assert _read_head(sock).startswith(b"HTTP/1.1 200")
        _wait_until("a slot is free again", lambda: _stream_status(f"{server.url}/stream.mjpg") == 200)
        _wait_until("no viewer is counted", lambda: hub.viewers == 0)
        status, _, body = _get(f"{server.url}/frame.jpg")
        assert status == 503 and "source is down" in json.loads(body)["error"] and "camera unplugged" in json.loads(body)["error"]
    hub.stop()


def test_a_viewer_that_never_reads_is_dropped(monkeypatch):
    import spoofsdk.serve.app as app_module

    monkeypatch.setattr(app_module, "WRITE_TIMEOUT", 0.5, raising=False)
    rng = np.random.default_rng(0)

    def noise():  # pictures that do not compress: the sockets' buffers fill after a few frames
        while True:
            yield rng.integers(0, 256, (480, 640, 3), np.uint8)

    hub = LiveHub(LivenessChecker(build_tiny_model()), noise, pace_fps=20)
    with ServerThread(make_live_app(hub, max_viewers=2)) as server:
        stalled = []
        try:
            for _ in range(2):
                sock = socket.socket()
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                sock.connect((server.host, server.port))
                sock.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                stalled.append(sock)  # and never read
            _wait_until("the stalled viewers are dropped", lambda: _stream_status(f"{server.url}/stream.mjpg") == 200, 60)
        finally:
            for sock in stalled:
                sock.close()
        _wait_until("no viewer is counted", lambda: hub.viewers == 0)
        _wait_frames(hub)
    hub.stop()


def test_frame_jpg_is_a_picture_of_the_newest_frame(live_server):
    server, hub = live_server
    _wait_until("no viewer is counted", lambda: hub.viewers == 0)
    assert _get(f"{server.url}/frame.jpg?token={TOKEN}")[0] == 200
    # Nobody watches: the model loop goes on, and the picture kept is of an older frame.
    _wait_frames(hub, more=10)
    newest = hub.frames
    status, headers, body = _get(f"{server.url}/frame.jpg?token={TOKEN}")
    assert status == 200 and body[:2] == b"\xff\xd8"
    assert int(headers["X-Frame-Seq"]) >= newest, "a picture of an old frame may show an old label"
    assert 0 <= float(headers["X-Frame-Age"]) < 60


def test_a_new_stream_viewer_starts_with_the_newest_frame(live_server):
    server, hub = live_server

    async def first_seq():
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{server.url}/stream.mjpg?token={TOKEN}") as r:
                part = await aiohttp.MultipartReader.from_response(r).next()
                await part.read()
                return int(part.headers["X-Frame-Seq"])

    asyncio.run(asyncio.wait_for(first_seq(), 20))  # a picture is drawn for this viewer
    _wait_until("no viewer is counted", lambda: hub.viewers == 0)
    _wait_frames(hub, more=10)  # nobody watches: that picture gets old
    newest = hub.frames
    assert asyncio.run(asyncio.wait_for(first_seq(), 20)) >= newest, "the first part was an old picture"


def test_a_finished_file_keeps_its_last_picture():
    hub = LiveHub(LivenessChecker(build_tiny_model()), lambda: [_frame(0), _frame(1), _frame(2)], pace_fps=100)
    with ServerThread(make_live_app(hub)) as server:
        _wait_until("the source ends", lambda: hub.source_state == "ended")
        # Nobody watched while it played: the last frame is drawn anyway.
        status, headers, body = _get(f"{server.url}/frame.jpg")
        assert status == 200 and headers["X-Frame-Seq"] == "3" and body[:2] == b"\xff\xd8"
        assert float(headers["X-Frame-Age"]) >= 0

        async def whole_stream():
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{server.url}/stream.mjpg") as r:
                    reader = aiohttp.MultipartReader.from_response(r)
                    parts = []
                    while (part := await reader.next()) is not None:
                        parts.append((part.headers["X-Frame-Seq"], await part.read()))
                    return parts

        # The stream sends the last picture and ends (the safety timeout fails a stream that hangs).
        parts = asyncio.run(asyncio.wait_for(whole_stream(), 20))
        assert [seq for seq, _ in parts] == ["3"] and parts[0][1][:2] == b"\xff\xd8"
        _wait_until("no viewer is counted", lambda: hub.viewers == 0)
    hub.stop()


def test_a_token_of_any_bytes_gets_a_json_401(live_server):
    server, hub = live_server
    for query, credentials in [
        (b"", b"Authorization: Bearer \xff\xfe\r\n"),  # raw bytes that are not UTF-8
        (b"", b"Authorization: Bearer s3cret-tok\xc3\xa9n\r\n"),
        (b"?token=%ff%fe", b""),
    ]:
        head, body = _raw(server.host, server.port, b"GET /status" + query + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n" + credentials + b"\r\n")
        assert head.startswith(b"HTTP/1.1 401") and json.loads(body)["error"] == "wrong token", credentials or query
    _wait_frames(hub)


def test_the_token_sets_a_cookie_for_the_pages_own_requests(tmp_path):
    script = tmp_path / "app.js"
    script.write_text("console.log('demo')")
    with ServerThread(make_demo_app({"index.html": b"<html>demo</html>", "app.js": script}, token=TOKEN)) as server:
        assert "Set-Cookie" not in _get(server.url + "/")[1]
        status, headers, body = _get(f"{server.url}/?token={TOKEN}")
        assert status == 200 and body == b"<html>demo</html>"
        cookie = _session_cookie(headers)
        assert TOKEN not in cookie, "the cookie must not hold the token itself"
        status, _, body = _get(server.url + "/app.js", {"Cookie": cookie})
        assert status == 200 and body == b"console.log('demo')"
        assert _get(server.url + "/app.js")[0] == 401
        name, _, value = cookie.partition("=")
        status, _, body = _get(server.url + "/app.js", {"Cookie": f"{name}={value[:-1]}x"})
        assert status == 401 and "needs a token" in json.loads(body)["error"]
        # A wrong token is refused even with a good cookie.
        assert _get(server.url + "/app.js?token=nope", {"Cookie": cookie})[0] == 401
        # Authorization sets it as well.
        assert _session_cookie(_get(server.url + "/app.js", {"Authorization": f"Bearer {TOKEN}"})[1]) == cookie


def test_demo_files_are_streamed_from_disk_not_read_whole(tmp_path):
    import tracemalloc

    big = tmp_path / "ort-wasm-simd-threaded.wasm"
    with open(big, "wb") as f:  # sparse: 64 MB on no disk
        f.write(b"\0asm")
        f.truncate(64 << 20)
    module = tmp_path / "ort-wasm-simd-threaded.mjs"
    module.write_text("export {}")
    with ServerThread(make_demo_app({"index.html": b"<html></html>", big.name: big, module.name: module})) as server:
        status, headers, _ = _get(f"{server.url}/{module.name}")
        assert status == 200 and headers["Content-Type"].startswith("text/javascript")
        tracemalloc.start()
        try:
            with socket.create_connection((server.host, server.port), timeout=20) as sock:
                sock.sendall(f"GET /{big.name} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
                buffer, received, head = bytearray(1 << 16), 0, b""
                while (n := sock.recv_into(buffer)) and received < 80 << 20:
                    if not head:
                        head = bytes(buffer[:n])
                    received += n
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert head.startswith(b"HTTP/1.1 200") and b"Content-Type: application/wasm" in head
    assert received > 64 << 20
    assert peak < 16 << 20, f"the server held {peak / 2**20:.0f} MB to send a 64 MB file"


def test_without_a_token_only_requests_naming_this_server_are_answered(live_server):
    hub = LiveHub(LivenessChecker(build_tiny_model()), endless, pace_fps=30)
    with ServerThread(make_live_app(hub)) as server:
        port = server.port
        for host in ("rebind.attacker.example", f"rebind.attacker.example:{port}", f"localhost.attacker.example:{port}", "board.local"):
            status, headers, body = _get(f"{server.url}/frame.jpg", {"Host": host})
            assert status == 403 and "DNS rebinding" in json.loads(body)["error"], host
            assert headers["Content-Type"].startswith("application/json")
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "LOCALHOST.", f"[::1]:{port}", f"192.168.1.20:{port}"):
            status, headers, _ = _get(f"{server.url}/status", {"Host": host})
            assert status == 200, host
            assert headers["Cross-Origin-Resource-Policy"] == "same-origin"
        status, headers, _ = _get(f"{server.url}/frame.jpg")
        assert status == 200 and headers["Cross-Origin-Resource-Policy"] == "same-origin"
        with socket.create_connection((server.host, server.port), timeout=10) as sock:
            sock.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert b"Cross-Origin-Resource-Policy: same-origin" in _read_head(sock)
    hub.stop()
    # The name given to --host is answered to as well.
    with ServerThread(make_demo_app({"index.html": b"<html></html>"}, hosts=["board.local"])) as server:
        assert _get(server.url + "/", {"Host": "board.local:8080"})[0] == 200
        assert _get(server.url + "/", {"Host": "board.local.attacker.example"})[0] == 403
    # With a token, the token protects: any Host may carry it.
    server, _ = live_server
    assert _get(f"{server.url}/status?token={TOKEN}", {"Host": "board.example"})[0] == 200
    assert _get(f"{server.url}/status", {"Host": "board.example"})[0] == 401


@pytest.mark.parametrize("path, kind", [("/stream.mjpg", b"multipart/x-mixed-replace"), ("/events", b"text/event-stream")])
def test_head_on_a_stream_sends_headers_only(live_server, path, kind):
    server, hub = live_server
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(f"HEAD {path}?token={TOKEN} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        head = _read_head(sock)
        assert head.startswith(b"HTTP/1.1 200") and kind in head
        # No body follows: the same connection answers the next request.
        sock.sendall(f"GET /status?token={TOKEN} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        head, body = _read_response(sock)
    assert head.startswith(b"HTTP/1.1 200") and "frames" in json.loads(body)
    _wait_until("no viewer is counted", lambda: hub.viewers == 0)


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.parametrize("host", ["127.0.0.1", pytest.param("::1", marks=pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback here"))])
def test_serve_command_prints_the_address_it_listens_on(tmp_path, host):
    import re
    import threading

    model = tmp_path / "tiny.onnx"
    model.write_bytes(build_tiny_model())
    cv2.imwrite(str(tmp_path / "f0.png"), _frame(0))
    proc = subprocess.Popen([sys.executable, "-m", "spoofsdk", "serve", str(tmp_path / "f0.png"), "--model", str(model),
                             "--host", host, "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    banner = []
    reader = threading.Thread(target=lambda: banner.append(proc.stdout.readline()), daemon=True)
    reader.start()
    try:
        reader.join(60)  # a safety net: the banner comes once the server listens
        assert banner and banner[0], proc.poll()
        url = re.search(r"http://\S+/", banner[0]).group(0)
        assert url.startswith(f"http://[{host}]:" if ":" in host else f"http://{host}:") and not url.endswith(":0/"), banner[0]
        status, _, body = _get(url + "status")
        assert status == 200 and json.loads(body)["model"] == "tiny"
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err


def test_listen_skips_an_address_family_the_kernel_lacks(monkeypatch):
    """With IPv6 disabled, localhost may still resolve to ::1: that socket cannot be created and the
    server listens on the rest, as asyncio's create_server does (it failed to start)."""
    import socket

    from spoofsdk.serve.app import listen

    real = socket.socket

    def no_ipv6(family=socket.AF_INET, *args, **kwargs):
        if family == socket.AF_INET6:
            raise OSError(97, "Address family not supported by protocol")
        return real(family, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: [
        (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", 0, 0, 0)),
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 0))])
    monkeypatch.setattr(socket, "socket", no_ipv6)
    sockets = listen("localhost", 0)
    try:
        assert [s.family for s in sockets] == [socket.AF_INET] and sockets[0].getsockname()[1] > 0
    finally:
        for s in sockets:
            s.close()
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", 0, 0, 0))])
    with pytest.raises(OSError, match="not supported"):
        listen("localhost", 0)  # nothing could be bound: the error is the family's


def test_pacing_holds_across_the_passes_of_a_looping_source(monkeypatch):
    """--fps with --loop: the pacing clock restarted at each reopen, so the first frame of every pass came at
    once (3 looped images at 10 fps ran at 15). On a fake clock the frames of two passes come 0.1 s apart."""
    import spoofsdk.serve.live as live

    now = [100.0]
    monkeypatch.setattr(live.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(live.time, "sleep", lambda d: now.__setitem__(0, now[0] + d))
    hub = LiveHub(LivenessChecker(build_tiny_model()), lambda: [], pace_fps=10)
    times = []
    for _ in range(2):  # two passes of a three-image source
        times += [now[0] for _ in hub._paced([0, 1, 2])]
    assert np.diff(times) == pytest.approx([0.1] * 5)
