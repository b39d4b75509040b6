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

    _require_ort_web(demo)
    yunet = tmp_path / "yunet.onnx"
    yunet.write_bytes(b"stand-in")
    with _serve_command(["--demo", "--yunet-model", str(yunet), "--token", "abc"]) as url:
        assert _get(url + "/config.json")[0] == 401
        status, _, body = _get(url + "/config.json?token=abc")
        assert status == 200 and json.loads(body)["sha256"] == demo.demo_model().sha256
        status, headers, body = _get(url + "/ort-wasm-simd-threaded.wasm?token=abc")
        assert status == 200 and headers["Content-Type"] == "application/wasm" and body[:4] == b"\0asm"
