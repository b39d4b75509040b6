"""The live view and the in-browser demo in a real headless Chromium (Debian's chromium + chromium-driver).

- The live page loads, MJPEG frames and JSON events arrive, a NUAA face gets a label.
- The demo scores NUAA frames in the browser (onnxruntime-web) within 1e-3 of the Python
  runtime on the same pixels and boxes, with whatever model is the default at test time.
- A NUAA face shown through Chromium's fake camera (a y4m made here, in a temp folder) gets a label.

Screenshots go to test-artifacts/ (gitignored). Without Chromium, or onnxruntime-web
(`npm ci --prefix web`), these tests skip with the reason, except under CI=true, where they fail.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("aiohttp", reason="spoofsdk[serve] is not installed")

from conftest import REPO, missing, sample_files  # noqa: E402

from spoofsdk import LivenessChecker  # noqa: E402
from spoofsdk.crop import crop_face  # noqa: E402
from spoofsdk.detect import YuNetDetector  # noqa: E402
from spoofsdk.quality import QualityConfig, assess, face_inside, measure  # noqa: E402
from spoofsdk.serve.app import ServerThread, make_demo_app, make_live_app  # noqa: E402
from spoofsdk.serve.demo import demo_model  # noqa: E402
from spoofsdk.serve.live import LiveHub  # noqa: E402

pytestmark = pytest.mark.slow
ARTIFACTS = REPO / "test-artifacts"
PARITY_TOLERANCE = 1e-3


def _chromium() -> tuple[str, str]:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        missing("headless Chromium not found: apt-get install chromium chromium-driver (.ci/run does)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing("selenium is not installed (pip install -e '.[dev]')")
    return browser, driver


def _driver(extra_args: list[str] = ()):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = _chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,760", *extra_args):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=options)


def _wait(driver, script: str, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.2)
    logs = ""
    try:
        logs = "\n".join(str(e) for e in driver.get_log("browser"))
    except Exception:
        pass
    raise AssertionError(f"timed out waiting for {what}; browser log:\n{logs}")


def _screenshot(driver, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    driver.save_screenshot(str(path))
    assert path.stat().st_size > 1000
    return path


def _nuaa_frames(nuaa_dir: Path, n: int, kind: str = "real") -> list[Path]:
    """``n`` frames spread over the subjects."""
    return sample_files(nuaa_dir / kind, n)


def _one_subject(nuaa_dir: Path, n: int) -> list[Path]:
    """``n`` consecutive frames of one real subject (a steady picture for a stream)."""
    subject = sorted(p for p in (nuaa_dir / "real").iterdir() if p.is_dir())[-1]
    return sorted(subject.glob("*.jpg"))[:n]


# --- the live view ---------------------------------------------------------------------------
def test_live_view_in_chromium(nuaa_dir, yunet_path):
    _chromium()
    images = [cv2.imread(str(p)) for p in _one_subject(nuaa_dir, 8)]
    checker = LivenessChecker(detector="yunet", yunet_model=yunet_path)
    hub = LiveHub(checker, lambda: iter(images * 1000), pace_fps=15)
    token = "t0k"
    with ServerThread(make_live_app(hub, token=token)) as server:
        driver = _driver()
        try:
            driver.get(f"{server.url}/?token={token}")
            _wait(driver, "return window.spoofsdkLive && window.spoofsdkLive.frames >= 10", 30, "10 frame events")
            _wait(driver, "const v = document.getElementById('view'); return v.complete && v.naturalWidth === 640", 20, "the MJPEG stream")
            _wait(driver, "return document.querySelectorAll('#decisions li').length > 0", 10, "the decisions panel")
            last = driver.execute_script("return window.spoofsdkLive.last")
            assert last["image_size"] == [640, 480] and last["faces"], "a NUAA face must be found"
            assert last["label"] in ("real", "spoof", "unknown") and last["faces"][0]["score"] is not None
            label = driver.find_element("id", "label").text
            assert label.split()[0] in ("real", "spoof", "unknown")
            assert driver.find_element("id", "model").text == checker.info.name
            assert hub.viewers == 1
            _screenshot(driver, "live-view.png")
        finally:
            driver.quit()


# --- the in-browser demo ---------------------------------------------------------------------
def _y4m(path: Path, images: list[np.ndarray], fps: int = 10) -> Path:
    """A YUV4MPEG2 file (what --use-file-for-fake-video-capture plays, in a loop)."""
    h, w = images[0].shape[:2]
    with path.open("wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for image in images:
            f.write(b"FRAME\n")
            f.write(cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420).tobytes())
    return path


@pytest.fixture(scope="module")
def demo(tmp_path_factory, nuaa_dir, yunet_path):
    """The demo served with the default model, extra PNG frames beside it, and Chromium on a fake camera."""
    _chromium()
    from spoofsdk.serve.demo import DemoError, demo_files

    try:
        files = demo_files(yunet_model=yunet_path)
    except DemoError as e:
        missing(str(e))
    tmp = tmp_path_factory.mktemp("demo")
    frames = _nuaa_frames(nuaa_dir, 4, "real") + _nuaa_frames(nuaa_dir, 4, "attack")
    images = {}
    for i, path in enumerate(frames):
        image = cv2.imread(str(path))
        if i == len(frames) - 1:
            image = cv2.resize(image, (320, 240), interpolation=cv2.INTER_AREA)  # small face: the enlarging path
        name = f"frame{i}.png"  # PNG: the browser and OpenCV decode the same pixels (JPEG decoders may differ)
        cv2.imwrite(str(tmp / name), image)
        files[name] = tmp / name
        images[name] = image
    camera = [cv2.imread(str(p)) for p in _one_subject(nuaa_dir, 5)]
    y4m = _y4m(tmp / "camera.y4m", camera)
    with ServerThread(make_demo_app(files)) as server:
        driver = _driver(["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream", f"--use-file-for-fake-video-capture={y4m}"])
        try:
            # Camera access needs a secure context: http://localhost is one, 127.0.0.1 too.
            driver.get(server.url + "/")
            state = _wait(driver, "const s = window.spoofsdkDemo; return s && (s.ready || s.error) && {ready: !!s.ready, error: s.error}", 60, "the demo to load")
            assert state["ready"], f"the demo failed to load: {state['error']}"
            yield driver, images
        finally:
            driver.quit()


def _browser(driver, call: str, *args):
    driver.set_script_timeout(60)
    result = driver.execute_async_script(
        f"const done = arguments[arguments.length - 1]; const s = window.spoofsdkDemo;"
        f"{call}.then((r) => done({{ok: r}}), (e) => done({{error: String(e)}}));",
        *args,
    )
    assert "error" not in result, result.get("error")
    return result["ok"]


def test_demo_scores_match_python(demo, yunet_path):
    driver, images = demo
    model = demo_model()  # whatever the default is at test time: the demo serves the same file
    info = model.info
    # The model's crop policy, once the runtime knows policies other than its default 'pad'.
    policy = {"policy": info.crop_policy} if getattr(info, "crop_policy", "pad") != "pad" else {}
    detector = YuNetDetector(yunet_path)
    compared, model_only = [], []
    for name, image in images.items():
        dets = detector.detect(image)
        assert dets, f"YuNet finds no face in {name}"
        boxes = [list(dets[0].box)]
        h, w = image.shape[:2]
        if name == "frame0.png":
            boxes += [[-20.0, h * 0.5, w * 0.7, h * 0.6], [w - 90.5, 10.25, 88.0, 100.0],  # padded, shifted
                      [-60.0, 40.0, 200.0, 220.0]]  # 30 % outside: cut by the border, refused by both
        for box in boxes:
            crop = crop_face(image, box, info.crop_scale, info.input_size, **policy)
            expected = float(model.score_crops([crop.image])[0])
            face = _browser(driver, "s.scoreImage(arguments[0], arguments[1])", name, box)
            # The runtime's gates on the same box: the browser's must agree (same figures, same verdict).
            figures = measure(image, box, crop.padded_fraction)
            figures["face_inside"] = float(face_inside(figures, QualityConfig()))
            report = assess(figures, QualityConfig())
            assert report.reason == face["reason"], (face, report)
            if face["score"] is None:  # gated: nothing to compare
                continue
            compared.append((name, box, expected, face["score"]))
            # The model alone on the runtime's own crop: separates model-runtime differences from preprocessing ones.
            same_pixels = _browser(driver, "s.pipeline.scoreCrop(new Uint8Array(arguments[0]))", crop.image[..., ::-1].ravel().tolist())
            model_only.append(abs(same_pixels - expected))
            # One image is evidence, not a decision: the page's label comes from several camera frames.
            assert face["label"] == "unknown" and face["reason"] is None, face
    assert len(compared) >= 8
    worst = max(abs(e - b) for _, _, e, b in compared)
    print(f"browser vs Python: {len(compared)} faces, max |delta| = {worst:.2e} (model alone on the same crop: {max(model_only):.2e})")
    assert worst <= PARITY_TOLERANCE, [(n, round(e, 5), round(b, 5)) for n, _, e, b in compared]
    # The scores are not all alike (the comparison would say little if they were).
    assert max(c[2] for c in compared) - min(c[2] for c in compared) > 0.2


def test_demo_detects_the_faces_python_detects(demo, yunet_path):
    driver, images = demo
    detector = YuNetDetector(yunet_path)
    for name, image in images.items():
        python_box = np.array(detector.detect(image)[0].box)
        faces = _browser(driver, "s.detectImage(arguments[0])", name)
        assert faces, f"the browser finds no face in {name}"
        box = np.array(faces[0]["box"])
        x0, y0 = np.maximum(python_box[:2], box[:2])
        x1, y1 = np.minimum(python_box[:2] + python_box[2:], box[:2] + box[2:])
        inter = max(0, x1 - x0) * max(0, y1 - y0)
        iou = inter / (python_box[2] * python_box[3] + box[2] * box[3] - inter)
        assert iou > 0.9, (name, python_box, box)


def test_demo_labels_a_face_on_the_fake_camera(demo):
    driver, _ = demo
    # The label is the face track's decision: `unknown` (collecting evidence) until enough frames agree.
    faces = _wait(driver, "const s = window.spoofsdkDemo; return s.frames >= 3 && s.faces.length && s.faces[0].reason !== 'collecting_evidence' && s.faces",
                  90, "camera frames with a decided face")
    assert faces[0]["label"] in ("real", "spoof"), faces[0]
    assert faces[0]["track_id"] >= 1 and faces[0]["smoothed_score"] is not None, faces[0]
    assert 0.0 <= faces[0]["score"] <= 1.0
    assert driver.find_element("id", "label").text.split()[0] == faces[0]["label"]
    _screenshot(driver, "demo.png")


def test_demo_refuses_what_it_does_not_implement(demo):
    driver, _ = demo
    for change, words in (({"crop_policy": "cap_and_stretch"}, 'crop_policy "cap_and_stretch"'), ({"output": "softmax3"}, 'output "softmax3"')):
        message = _browser(
            driver,
            "import('./pipeline.js').then((m) => { const c = structuredClone(s.pipeline.config);"
            " Object.assign(c.model, arguments[0]); try { m.checkConfig(c); return 'accepted'; } catch (e) { return e.message; } })",
            change,
        )
        assert words in message and "does not implement" in message
