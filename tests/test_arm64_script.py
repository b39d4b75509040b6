"""scripts/compare_outputs.py: the x86-vs-arm64 output comparison behind scripts/arm64-check.sh.

The emulated arm64 run itself needs root, QEMU and minutes; here the comparison logic is
checked on the host (tolerances by precision, probe models, detector mismatches), plus one
end-to-end prepare/dump/check round on real data with both sides on this machine.
"""
from __future__ import annotations

import copy
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "compare_outputs.py"
SHELL = REPO / "scripts" / "arm64-check.sh"


@pytest.fixture(scope="module")
def co():
    if not SCRIPT.is_file():
        pytest.skip(f"{SCRIPT} not here (tests copied without scripts/, e.g. inside the arm64 root)")
    spec = importlib.util.spec_from_file_location("compare_outputs", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _side(precision: str, scores: list[float], strict: bool = True, threshold: float = 0.5) -> dict:
    images = {
        f"img{i}.jpg": {
            "face": True,
            "detector": "none",
            "box": [0, 0, 10, 10],
            "outputs": [s],  # stand-in: the raw output moves with the score
            "score": s,
        }
        for i, s in enumerate(scores)
    }
    return {
        "machine": "x86_64",
        "versions": {"python": "3", "onnxruntime": "1", "numpy": "2", "cv2": "4"},
        "detectors": ["haar"],
        "detections": {"frame.jpg": {"haar": [[1.0, 2.0, 30.0, 30.0]]}},
        "models": {
            "m.onnx": {"sha256": "x", "precision": precision, "threshold": threshold, "strict": strict, "images": images}
        },
    }


def _arm(ref: dict, scores: list[float]) -> dict:
    cur = copy.deepcopy(ref)
    for rec, s in zip(cur["models"]["m.onnx"]["images"].values(), scores):
        rec.update(score=s, outputs=[s], ref_input_score=s, ref_input_outputs=[s])
    return cur


def test_identical_outputs_pass(co):
    ref = _side("fp32", [0.2, 0.7])
    rows, problems, notes = co.compare(ref, _arm(ref, [0.2, 0.7]), {}, {})
    assert problems == [] and notes == []
    assert rows[0]["ok"] and rows[-1]["ok"]


@pytest.mark.parametrize(
    "precision, delta, fails",
    [("fp32", 5e-5, False), ("fp32", 5e-4, True), ("fp16", 5e-4, False), ("fp16", 5e-3, True),
     ("int8", 0.015, False), ("int8", 0.03, True)],
)
def test_tolerance_by_precision(co, precision, delta, fails):
    ref = _side(precision, [0.2, 0.7])
    _, problems, _ = co.compare(ref, _arm(ref, [0.2 + delta, 0.7]), {}, {})
    assert bool(problems) == fails


def test_int8_label_flip_fails_even_when_small(co):
    ref = _side("int8", [0.499, 0.7])
    _, problems, _ = co.compare(ref, _arm(ref, [0.501, 0.7]), {}, {})
    assert any("label flips" in p for p in problems)


@pytest.mark.parametrize("strict", [True, False])
def test_a_side_without_a_score_fails(co, strict):
    """NaN (a non-finite output) is no score: max() would skip it and a label check would read it as spoof."""
    ref = _side("int8", [0.2, 0.7], strict=strict)
    _, problems, _ = co.compare(ref, _arm(ref, [float("nan"), 0.7]), {}, {})
    assert any("gave no score" in p for p in problems)


def test_int8_with_8bit_weights_against_an_x86_host_without_vnni_checks_labels_only(co):
    """Such a host clips 8-bit weight products in int16 (docs/QUANTIZATION.md): its INT8 scores are not the
    reference, so the score difference is reported; a label flip still fails. With VNNI, or 7-bit weights, the
    usual tolerance holds."""
    ref = _side("int8", [0.2, 0.7])
    ref["x86_without_vnni"] = True
    ref["models"]["m.onnx"]["eight_bit_weights"] = True
    rows, problems, notes = co.compare(ref, _arm(ref, [0.24, 0.7]), {}, {})
    assert problems == [] and any("no VNNI" in n for n in notes)
    assert rows[0]["labels_only"]  # the closing summary names it as held to labels only
    rows, _, _ = co.compare(ref, _arm(ref, [0.21, 0.7]), {}, {})
    assert rows[0]["ok"] and not rows[0]["labels_only"]  # within the usual tolerance anyway
    _, problems, _ = co.compare(ref, _arm(ref, [0.2, 0.45]), {}, {})  # 0.7 -> 0.45 crosses the threshold
    assert any("label flips" in p for p in problems)
    for host_vnni, eight_bit in ((False, True), (True, False)):
        other = copy.deepcopy(ref)
        other["x86_without_vnni"] = host_vnni
        other["models"]["m.onnx"]["eight_bit_weights"] = eight_bit
        _, problems, _ = co.compare(other, _arm(other, [0.24, 0.7]), {}, {})
        assert problems


def test_probe_models_are_reported_not_failing(co):
    ref = _side("fp16", [0.2, 0.7], strict=False)
    rows, problems, notes = co.compare(ref, _arm(ref, [0.25, 0.7]), {}, {})
    assert problems == [] and notes and not rows[0]["ok"]


def test_detector_box_drift_and_missing_model_fail(co):
    ref = _side("fp32", [0.2])
    cur = _arm(ref, [0.2])
    cur["detections"]["frame.jpg"]["haar"] = [[1.0, 2.0, 33.0, 30.0]]
    _, problems, _ = co.compare(ref, cur, {}, {})
    assert any("detector boxes" in p for p in problems)
    cur = _arm(ref, [0.2])
    cur["models"] = {}
    _, problems, _ = co.compare(ref, cur, {}, {})
    assert any("model sets differ" in p for p in problems)


def test_shell_script_parses():
    if not SHELL.is_file():
        pytest.skip("scripts/arm64-check.sh not here")
    subprocess.run(["bash", "-n", str(SHELL)], check=True)


@pytest.mark.data
@pytest.mark.slow
def test_round_trip_on_this_machine(co, data_dir, tmp_path):
    """prepare + dump + check with both sides on this machine: everything must match exactly."""
    pytest.importorskip("onnx")
    work = tmp_path / "cmp"
    run = [sys.executable, str(SCRIPT)]
    subprocess.run(run + ["prepare", "--workdir", str(work), "--data", str(data_dir), "--nuaa", "1", "--gc535", "2"], check=True)
    subprocess.run(run + ["dump", "--workdir", str(work), "--side", "x86"], check=True)
    out = subprocess.run(run + ["check", "--workdir", str(work), "--side", "again"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "tiny-fp32.onnx" in out.stdout and "DIFF" not in out.stdout
    # Same machine, same crops: the identical-input comparison reuses the first run instead of a second one.
    again = json.loads((work / "again.json").read_text())
    recs = [r for m in again["models"].values() for r in m["images"].values() if r["face"]]
    assert recs and all(r.get("ref_input_same_crop") and r["ref_input_outputs"] == r["outputs"] for r in recs)
