"""The spoofsdk command: JSON contract, video, crops, info, fatal vs per-image errors."""
import json

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from spoofsdk import LivenessChecker
from spoofsdk.results import FrameResult
from spoofsdk.cli import main

from conftest import build_tiny_model, sample_files, write_video


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "tiny.onnx"
    path.write_bytes(build_tiny_model())
    return path


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _lines(result):
    return [json.loads(line) for line in result.stdout.splitlines()]


def test_run_json_over_a_folder_of_frames(tmp_path, nuaa_dir, model):
    folder = tmp_path / "frames"
    folder.mkdir()
    frames = sample_files(nuaa_dir / "real", 3) + sample_files(nuaa_dir / "attack", 2)
    for p in frames:
        (folder / f"{p.parent.parent.name}_{p.name}").symlink_to(p)
    result = invoke("run", "--json", "--model", model, folder)
    assert result.exit_code == 0, result.output
    lines = _lines(result)  # every stdout line is JSON
    assert len(lines) == 5
    checker = LivenessChecker(model)
    for line in lines:
        assert {"path", "score", "label", "faces"} <= set(line)
        assert line["label"] in ("real", "spoof", "unknown")
        for face in line["faces"]:
            assert {"box", "score", "label", "reason"} <= set(face)
        expected = checker.check(line["path"])
        assert line["label"] == expected.label and line["score"] == pytest.approx(expected.score, abs=1e-6)


def test_run_carries_on_after_a_bad_image(tmp_path, nuaa_dir, model):
    good = sample_files(nuaa_dir / "real", 1)[0]
    bad = tmp_path / "bad.jpg"
    bad.write_text("this is text")
    result = invoke("run", "--json", "-m", model, bad, tmp_path / "missing.jpg", good)
    assert result.exit_code == 1  # judged what it could, and says that inputs were skipped
    lines = _lines(result)
    assert [line["label"] for line in lines[:2]] == ["unknown", "unknown"]
    assert lines[0]["score"] is None and "not a readable image" in lines[0]["error"]
    assert "not found" in lines[1]["error"] and lines[2]["faces"]
    assert "2 of 3 inputs could not be read" in result.stderr


def test_run_crops_is_check_face(gc535_dir, model):
    crops = sample_files(gc535_dir / "test" / "attack", 2)
    result = invoke("run", "--json", "--crops", "-m", model, *crops)
    lines = _lines(result)
    checker = LivenessChecker(model)
    for line, path in zip(lines, crops):
        assert line["path"] == str(path) and line["faces"][0]["box"] is None
        assert line["score"] == pytest.approx(checker.check_face(path).score, abs=1e-6)


def test_run_video_json_and_save(tmp_path, nuaa_dir, model):
    video = write_video(tmp_path / "in.mp4", sorted((nuaa_dir / "real" / "0002").glob("*.jpg"))[:6], fps=10)
    out = tmp_path / "out.mp4"
    result = invoke("run", "--json", "-m", model, "--video", video, "--save", out)
    assert result.exit_code == 0, result.output
    lines = _lines(result)
    assert [line["frame"] for line in lines] == list(range(6))
    assert [line["t"] for line in lines] == pytest.approx([i / 10 for i in range(6)])
    assert all({"score", "label", "faces"} <= set(line) and "path" not in line for line in lines)
    assert lines[0]["label"] != "real"  # a new track has no evidence yet
    cap = cv2.VideoCapture(str(out))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 6 and cap.read()[1].shape == (480, 640, 3)
    cap.release()


def test_run_truncated_video_fails_after_its_frames(tmp_path, nuaa_dir, model):
    video = write_video(tmp_path / "in.avi", sorted((nuaa_dir / "real" / "0002").glob("*.jpg"))[:8])
    video.write_bytes(video.read_bytes()[: video.stat().st_size // 2])
    result = invoke("run", "--json", "-m", model, "--video", video)
    assert result.exit_code == 1 and "ended mid-stream" in result.stderr
    assert 0 < len(_lines(result)) < 8


def test_show_without_gui_suggests_save(tmp_path, model):
    result = invoke("run", "-m", model, "--video", tmp_path / "x.mp4", "--show")
    assert result.exit_code != 0 and "--save" in result.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["--camera", "99"], "cannot open camera"),
        (["--video", "missing.mp4"], "not found"),
        (["EMPTY"], "no images"),
    ],
)
def test_fatal_errors_exit_non_zero(tmp_path, model, args, message):
    (tmp_path / "empty").mkdir()
    args = [str(tmp_path / "empty") if a == "EMPTY" else a for a in args]
    result = invoke("run", "--json", "-m", model, *args)
    assert result.exit_code == 1 and message in result.stderr and result.stdout == ""


def test_model_errors_exit_non_zero(tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(build_tiny_model()[:300])
    result = invoke("run", "--json", "-m", broken, tmp_path)
    assert result.exit_code == 1 and "ONNX" in result.stderr


def test_usage_errors(tmp_path, model):
    assert invoke("run", "-m", model).exit_code == 2
    assert invoke("run", "-m", model, tmp_path, "--camera", "0").exit_code == 2


def test_info(model):
    result = invoke("info", "--model", model)
    assert result.exit_code == 0
    assert "threshold: 0.5" in result.stdout and "crop_scale: 1.5" in result.stdout and "sha256:" in result.stdout
    data = json.loads(invoke("info", "--model", model, "--json").stdout)
    assert data["metadata"]["input_size"] == "64x64"


# --- issue 12: the CLI as users meet it -----------------------------------------------------------
def test_missing_inputs_exit_non_zero_after_judging_the_rest(tmp_path, nuaa_dir, model):
    good = sample_files(nuaa_dir / "real", 1)[0]
    result = invoke("run", "--json", "-m", model, tmp_path / "nope", good)
    assert result.exit_code == 1
    lines = _lines(result)
    assert len(lines) == 2 and "not found" in lines[0]["error"] and lines[1]["faces"]  # the good one was judged
    assert "1 of 2 inputs could not be read" in result.stderr and "not found" in result.stderr


def test_info_json_is_not_double_encoded(tmp_path):
    metrics = {"nuaa": {"auc": 0.99, "apcer": 0.01}, "how": "test"}
    quantization = {"format": "QDQ", "per_channel": True}
    path = tmp_path / "m.onnx"
    path.write_bytes(build_tiny_model(metadata={"metrics": json.dumps(metrics), "quantization": json.dumps(quantization)}))
    data = json.loads(invoke("info", "--json", "-m", path).stdout)
    assert data["metadata"]["metrics"] == metrics and data["metadata"]["quantization"] == quantization
    assert data["metadata"]["threshold"] == "0.5"  # other values stay as the file holds them
    default = json.loads(invoke("info", "--json").stdout)["metadata"]
    assert all(not isinstance(default.get(k), str) for k in ("metrics", "quantization"))


def test_info_prints_the_figures_as_tables(tmp_path):
    """`info` shows the metrics a file carries as tables (its own data sets; the leave-one-source-out table with
    a column per seed); a value of another shape is printed as it is, and text that is not JSON too."""
    metrics = {
        "nuaa": {"n": 496, "auc": 0.9934, "apcer": 0.012, "bpcer": 0.122, "bpcer_at_apcer_5": 0.0427},
        "viguardieiro": {"n": 17, "bpcer": 0.0},  # live only: no AUC, no APCER
        "how": "test splits at its threshold",
        "split": "random",
        "loso": {"recipe": "r", "recipe_hash": "abc", "test_only": ["gc535"],
                 "domains": {"a_camera": {"auc": 0.9, "bpcer_at_apcer_5": 0.1}, "gc535": {"auc": 0.3, "bpcer_at_apcer_5": 0.9}},
                 "replicates": [{"auc": {"a_camera": 0.8, "gc535": 0.5}}]},
    }
    path = tmp_path / "m.onnx"
    path.write_bytes(build_tiny_model(metadata={"metrics": json.dumps(metrics)}))
    out = invoke("info", "-m", path).stdout
    assert "metrics (test splits at its threshold):" in out and "metrics split: random" in out
    lines = out.splitlines()
    assert next(line for line in lines if line.startswith("  nuaa ")).split() == ["nuaa", "496", "0.993", "1.2", "%", "12.2", "%", "4.3", "%"]
    assert next(line for line in lines if line.startswith("  viguardieiro ")).split()[:3] == ["viguardieiro", "17", "–"]
    assert "leave-one-source-out (recipe r abc, 2 seeds;" in out
    assert next(line for line in lines if line.startswith("  a_camera ")).split() == ["a_camera", "0.850", "0.900", "0.800", "10.0", "%"]
    assert next(line for line in lines if line.startswith("  gc535 ")).endswith("(never trained on)")
    assert "mean 0.625, worst 0.400 over 2 domains (mean per seed: 0.600 / 0.650)" in out
    path.write_bytes(build_tiny_model(metadata={"metrics": "not json"}))
    assert "metrics: not json" in invoke("info", "-m", path).stdout


def test_verbose_after_the_subcommand_gives_debug_lines(tmp_path, nuaa_dir, model):
    frame = sample_files(nuaa_dir / "real", 1)[0]
    quiet = invoke("run", "-m", model, frame)
    loud = invoke("run", "-m", model, frame, "-v")
    before = invoke("-v", "run", "-m", model, frame)
    assert quiet.exit_code == loud.exit_code == before.exit_code == 0
    assert "DEBUG" not in quiet.stderr
    for result in (loud, before):
        assert "DEBUG" in result.stderr and "LivenessChecker(" in result.stderr and "YuNet detector" in result.stderr


def test_models_lists_the_embedded_models_and_detector():
    from spoofsdk.model import EMBEDDED_MODELS

    result = invoke("models")
    assert result.exit_code == 0
    files = {f for variants in EMBEDDED_MODELS.values() for f, _ in variants.values()}
    for f in files:
        assert f in result.stdout
    assert "face_detection_yunet_2023mar.onnx" in result.stdout and "Apache-2.0" in result.stdout
    data = json.loads(invoke("models", "--json").stdout)
    assert {row["file"].rsplit("/", 1)[-1] for row in data["models"]} == files
    assert any("default" in row["aliases"] for row in data["models"])
    # the leave-one-source-out mean / worst of each model that carries the table, "–" for one that does not
    from spoofsdk.model import SpoofModel, loso_summary

    for row in data["models"]:
        summary = loso_summary(SpoofModel(row["file"]).info.metrics)
        line = next(line for line in result.stdout.splitlines() if line.endswith(row["file"]))
        if summary is None:
            assert row["loso_auc_mean"] is None and "  –  " in line
        else:
            assert row["loso_auc_mean"] == pytest.approx(summary["mean"]) and f"{summary['mean']:.3f} / {summary['worst']:.3f}" in line
    assert sum(row["loso_auc_mean"] is not None for row in data["models"]) >= 4  # the default and mnv2probe, both precisions


def test_save_errors_are_clear(tmp_path, nuaa_dir, model):
    video = write_video(tmp_path / "in.avi", sorted((nuaa_dir / "real" / "0002").glob("*.jpg"))[:2])
    missing = invoke("run", "-m", model, "--video", video, "--save", tmp_path / "no" / "out.mp4")
    assert missing.exit_code == 1 and "does not exist" in missing.stderr and "use .mp4" not in missing.stderr
    suffix = invoke("run", "-m", model, "--video", video, "--save", tmp_path / "out.gif")
    assert suffix.exit_code == 1 and ".webm" in suffix.stderr


def test_save_webm_is_vp8_and_mp4_falls_back_with_a_warning(tmp_path, nuaa_dir, model):
    video = write_video(tmp_path / "in.avi", sorted((nuaa_dir / "real" / "0002").glob("*.jpg"))[:3])
    webm = tmp_path / "out.webm"
    result = invoke("run", "-q", "-m", model, "--video", video, "--save", webm)
    assert result.exit_code == 0, result.output
    cap = cv2.VideoCapture(str(webm))
    codec = int(cap.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode(errors="replace")
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) in (3, 0) and cap.read()[0] and codec.upper().startswith("VP8")
    cap.release()
    mp4 = tmp_path / "out.mp4"
    result = invoke("run", "-q", "-m", model, "--video", video, "--save", mp4)
    assert result.exit_code == 0 and mp4.stat().st_size > 0
    h264 = cv2.VideoWriter(str(tmp_path / "probe.mp4"), cv2.VideoWriter_fourcc(*"avc1"), 5.0, (64, 48))
    if not h264.isOpened():  # opencv-python-headless: no H.264 encoder, so the user is told
        assert "browsers do not play" in result.stderr and ".webm" in result.stderr
    h264.release()


def test_camera_accepts_a_video_file_and_cli_has_capture_options(tmp_path, nuaa_dir, model):
    video = write_video(tmp_path / "clip.avi", sorted((nuaa_dir / "real" / "0002").glob("*.jpg"))[:4])
    as_camera = invoke("run", "--json", "-m", model, "--camera", video)
    as_video = invoke("run", "--json", "-m", model, "--video", video)
    assert as_camera.exit_code == 0, as_camera.output
    assert [line["score"] for line in _lines(as_camera)] == [line["score"] for line in _lines(as_video)]
    warned = invoke("run", "--json", "-m", model, "--camera", video, "--width", "320", "--height", "240", "--fps", "5")
    assert warned.exit_code == 0 and "ignored" in warned.stderr
    missing = invoke("run", "-m", model, "--camera", tmp_path / "nope.mp4")
    assert missing.exit_code == 1 and "not found" in missing.stderr
    assert invoke("run", "-m", model, tmp_path, "--width", "320").exit_code == 2


def test_providers_option(tmp_path, nuaa_dir, model):
    frame = sample_files(nuaa_dir / "real", 1)[0]
    ok = invoke("run", "--json", "-m", model, "--providers", "CPUExecutionProvider", frame)
    assert ok.exit_code == 0
    bad = invoke("run", "--json", "-m", model, "--providers", "NoSuchExecutionProvider", frame)
    assert bad.exit_code == 1 and "NoSuchExecutionProvider" in bad.stderr and "available" in bad.stderr


def test_rtsp_stream_that_cannot_be_reached_is_a_clear_error(model):
    from spoofsdk import sources

    result = invoke("run", "-m", model, "--camera", "rtsp://user:secret@127.0.0.1:9/stream")
    assert result.exit_code == 1 and "cannot open stream rtsp://user:***@127.0.0.1:9/stream" in result.stderr
    assert "secret" not in result.output
    assert sources.is_stream_url("rtsp://x") and not sources.is_stream_url("/dev/video0")


def test_summary_on_stderr_and_not_on_stdout(tmp_path, nuaa_dir, model):
    frames = sample_files(nuaa_dir / "real", 2) + sample_files(nuaa_dir / "attack", 1)
    result = invoke("run", "--json", "-m", model, *frames)
    assert result.exit_code == 0 and len(_lines(result)) == 3  # stdout: JSON lines only
    summary = [line for line in result.stderr.splitlines() if line.startswith("summary:")]
    assert len(summary) == 1 and "3 images in" in summary[0] and "images/s" in summary[0]
    labels = [line["label"] for line in _lines(result)]
    for label in set(labels):
        assert f"{label} {labels.count(label)}" in summary[0]
    assert "summary:" not in invoke("run", "-q", "-m", model, *frames).stderr


def test_progress_line_on_a_terminal():
    from spoofsdk import cli

    class Tty:
        def __init__(self):
            self.text = ""

        def write(self, s):
            self.text += s

        def flush(self):
            pass

        def isatty(self):
            return True

    tty = Tty()
    report = cli.RunReport(4, "images", every_s=0.0, stream=tty)
    for _ in range(4):
        report.add(FrameResult.from_faces([]))
    report.close()
    assert "\r[" in tty.text and "4/4 images" in tty.text and "s left" in tty.text
    assert "summary: 4 images" in tty.text and "unknown 4" in tty.text and "no_face 4" in tty.text
    piped = cli.RunReport(4, "images", every_s=0.0, stream=open(__import__("os").devnull, "w"))
    assert not piped._tty


def test_crops_on_full_frames_are_refused(nuaa_dir, gc535_dir, model):
    frames = sample_files(nuaa_dir / "real", 2)
    result = invoke("run", "--json", "--crops", "-m", model, *frames)
    lines = _lines(result)
    assert [line["reason"] for line in lines] == ["not_a_crop", "not_a_crop"]
    assert all(line["score"] is None and "without --crops" in line["message"] for line in lines)
    assert all(0 < line["faces"][0]["quality"]["face_share"] < 0.4 for line in lines)  # why it was refused
    crops = sample_files(gc535_dir / "test" / "real", 4)
    scored = _lines(invoke("run", "--json", "--crops", "-m", model, *crops))
    assert all(line["reason"] != "not_a_crop" for line in scored)


def test_bench_prints_latency_per_precision_and_pipeline_fps(tmp_path, nuaa_dir, model):
    from spoofsdk.model import EMBEDDED_MODELS

    video = write_video(tmp_path / "clip.avi", sorted((nuaa_dir / "real" / "0002").glob("*.jpg"))[:6])
    result = invoke("bench", "--runs", "3", "--video", video, "--frames", "4", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert {r["precision"] for r in data["models"]} == set(EMBEDDED_MODELS["default"])
    assert all(r["median_ms"] > 0 and r["p90_ms"] >= r["median_ms"] for r in data["models"])
    pipeline = data["pipeline"]
    assert pipeline["frames"] == 4 and pipeline["kind"] == "file" and pipeline["processing_fps"] > 0
    assert pipeline["frame_size"] == [640, 480] and "detect" in pipeline["stage_ms"]
    table = invoke("bench", "--runs", "2", "-m", model)
    assert table.exit_code == 0 and "median ms" in table.stdout and "tiny" in table.stdout
    assert "add --camera 0 or --video FILE" in table.stderr
    assert invoke("bench", "--runs", "2", "--camera", tmp_path / "nope.mp4").exit_code == 1


@pytest.mark.parametrize("script", ["check_image.py"])
def test_examples_run_with_the_embedded_default(script, nuaa_dir):
    # Issue 12 item 5: the example took the first photo for a model file.
    import subprocess
    import sys
    from pathlib import Path

    frames = [str(p) for p in sample_files(nuaa_dir / "real", 2)]
    example = Path(__file__).resolve().parents[1] / "examples" / script
    proc = subprocess.run([sys.executable, str(example), *frames], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert all(f in proc.stdout for f in frames) and "P(live)" in proc.stdout


def test_stream_example_runs_on_a_video_file(tmp_path, nuaa_dir):
    import subprocess
    import sys
    from pathlib import Path

    video = write_video(tmp_path / "clip.avi", sorted((nuaa_dir / "real" / "0002").glob("*.jpg"))[:6])
    example = Path(__file__).resolve().parents[1] / "examples" / "stream.py"
    proc = subprocess.run([sys.executable, str(example), str(video)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "face #1" in proc.stdout


def test_stream_example_on_a_missing_video_file_says_so_in_one_line(tmp_path):
    # open_source was called outside the example's try: a missing file printed a traceback.
    import subprocess
    import sys
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "examples" / "stream.py"
    missing_video = tmp_path / "nope.mp4"
    proc = subprocess.run([sys.executable, str(example), str(missing_video)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == f"video file not found: {missing_video}"


def test_slow_processing_still_turns_a_live_face_real(tmp_path, nuaa_dir, model):
    # Issue 12 item 2: --every 10 on 10 fps video processes a frame a second; tracks were forgotten
    # after 0.5 s, so the face stayed collecting_evidence forever.
    frames = sorted((nuaa_dir / "real" / "0002").glob("*.jpg"))[:1] * 80  # a face that stays put
    video = write_video(tmp_path / "slow.avi", frames, fps=10)
    result = invoke("run", "--json", "-q", "-m", model, "--threshold", "0.01", "--video", video, "--every", "10")
    assert result.exit_code == 0, result.output
    lines = _lines(result)
    assert [line["t"] for line in lines] == pytest.approx([float(i) for i in range(len(lines))])
    assert lines[-1]["label"] == "real" and {f["track_id"] for line in lines for f in line["faces"]} == {1}
    assert "slower than the tracker" in result.stderr
    fixed = invoke("run", "--json", "-q", "-m", model, "--threshold", "0.01", "--video", video, "--every", "10", "--track-gap", "0.2")
    assert _lines(fixed)[-1]["label"] == "real"  # the gap still widens to 3 frame intervals


def _nan_model(path):
    """The tiny model with a NaN bias: every output is NaN, as a damaged file or an FP16 overflow gives."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load_from_string(build_tiny_model())
    (i,) = [i for i, init in enumerate(m.graph.initializer) if init.name == "fcb"]
    m.graph.initializer[i].CopyFrom(numpy_helper.from_array(np.full(2, np.nan, np.float32), "fcb"))
    path.write_bytes(m.SerializeToString())
    return path


def test_a_model_that_scores_nothing_does_not_exit_clean(tmp_path, nuaa_dir, model):
    """Every face unknown/error is not "read and judged": exit 1 with the count on stderr, the lines still printed;
    a stream the same; a model that scores exits 0 on the same inputs."""
    broken = _nan_model(tmp_path / "nan.onnx")
    crops = []
    for i in range(3):
        crops.append(tmp_path / f"crop{i}.png")
        cv2.imwrite(str(crops[-1]), np.random.default_rng(i).integers(0, 255, (96, 96, 3), dtype=np.uint8))
    result = invoke("run", "--json", "--crops", "-m", broken, *crops)
    assert result.exit_code == 1 and "no score in 3 of 3 images" in result.stderr
    lines = _lines(result)
    assert [(line["label"], line["faces"][0]["reason"], line["score"]) for line in lines] == [("unknown", "error", None)] * 3
    assert invoke("run", "--json", "--crops", "-m", model, *crops).exit_code == 0

    video = write_video(tmp_path / "in.avi", sorted((nuaa_dir / "real" / "0002").glob("*.jpg"))[:4])
    result = invoke("run", "--json", "-m", broken, "--video", video, "--no-quality")
    assert result.exit_code == 1 and "no score in 4 of 4 frames" in result.stderr, result.stderr
    lines = _lines(result)
    assert len(lines) == 4 and all(line["label"] == "unknown" and line["faces"] for line in lines)
    assert all(face["reason"] == "error" for line in lines for face in line["faces"])

    # an unreadable image and a face without a score: both counted, one exit
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    both = invoke("run", "--json", "--crops", "-m", broken, bad, crops[0])
    assert both.exit_code == 1 and "1 of 2 inputs could not be read" in both.stderr and "no score in 1 of 2 images" in both.stderr


def test_a_stream_frame_that_failed_counts_as_not_scored():
    """A stream frame whose inference or detection failed is FrameResult.failed(ERROR): not judged; an
    unreadable image (bad_image) is counted apart."""
    from spoofsdk.cli import _not_scored
    from spoofsdk.results import Reason

    assert _not_scored(FrameResult.failed(Reason.ERROR, "DetectorError: boom", frame=3, t=0.3))
    assert not _not_scored(FrameResult.failed(Reason.BAD_IMAGE, "not an image", path="x.jpg"))
