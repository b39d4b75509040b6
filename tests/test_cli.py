"""The spoofsdk command: JSON contract, video, crops, info, fatal vs per-image errors."""
import json

import cv2
import pytest
from click.testing import CliRunner

from spoofsdk import LivenessChecker
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
    assert result.exit_code == 0
    lines = _lines(result)
    assert [line["label"] for line in lines[:2]] == ["unknown", "unknown"]
    assert lines[0]["score"] is None and "not a readable image" in lines[0]["error"]
    assert "not found" in lines[1]["error"] and lines[2]["faces"]
    assert "2 of 3 images could not be read" in result.stderr


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
