"""spoofsdk calibrate: the threshold at the target APCER, written into a new model file."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from spoofsdk import LivenessChecker
from spoofsdk.calibrate import calibrate
from spoofsdk.cli import main
from spoofsdk.errors import SourceError
from spoofsdk.metrics import error_rates, threshold_at_apcer
from spoofsdk.model import load_model

from conftest import build_tiny_model, sample_files


@pytest.fixture
def crops_folder(tmp_path, gc535_dir):
    for name, sub in (("real", "real"), ("attack", "attack")):
        (tmp_path / "cal" / name).mkdir(parents=True)
        for p in sample_files(gc535_dir / "test" / sub, 6):
            (tmp_path / "cal" / name / p.name).symlink_to(p)
    model = tmp_path / "tiny.onnx"
    model.write_bytes(build_tiny_model())
    return tmp_path / "cal", model


def test_calibrate_crops(crops_folder, tmp_path):
    folder, model = crops_folder
    original = model.read_bytes()
    result = calibrate(folder, model=model, target_apcer=0.2, out=tmp_path / "new.onnx", crops=True, allow_higher_apcer=True)
    # recompute by hand with check_face
    checker = LivenessChecker(model)
    scores = [checker.check_face(p).score for p in sorted((folder / "real").iterdir())]
    attack = [checker.check_face(p).score for p in sorted((folder / "attack").iterdir())]
    labels = np.r_[np.ones(len(scores)), np.zeros(len(attack))]
    lowest = threshold_at_apcer(labels, np.r_[scores, attack], 0.2)
    best_bpcer = error_rates(labels, np.r_[scores, attack], lowest).bpcer
    # the highest threshold that keeps the lowest BPCER reachable within APCER 0.2
    assert result.threshold >= lowest and (result.n_real, result.n_attack) == (6, 6)
    rates = error_rates(labels, np.r_[scores, attack], result.threshold)
    assert (result.apcer, result.bpcer) == (pytest.approx(rates.apcer), pytest.approx(rates.bpcer))
    assert result.apcer <= 0.2 and result.bpcer == pytest.approx(best_bpcer)
    assert error_rates(labels, np.r_[scores, attack], np.nextafter(result.threshold, 1)).bpcer > best_bpcer
    new = load_model(tmp_path / "new.onnx")
    assert new.threshold == pytest.approx(result.threshold)
    assert "spoofsdk calibrate" in new.info.extra["threshold_source"]
    assert model.read_bytes() == original  # the input model is untouched
    assert all("above the model's own" not in w for w in result.warnings)


def test_calibrate_frames_via_cli(tmp_path, nuaa_dir):
    for name in ("real", "attack"):
        (tmp_path / "cal" / name).mkdir(parents=True)
        for p in sample_files(nuaa_dir / name, 3):
            (tmp_path / "cal" / name / f"{p.parent.name}_{p.name}").symlink_to(p)
    model = tmp_path / "tiny.onnx"
    model.write_bytes(build_tiny_model())
    out = tmp_path / "new.onnx"
    result = CliRunner().invoke(main, ["calibrate", str(tmp_path / "cal"), "--target-apcer", "0.05", "-m", str(model), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["n_real"] + sum(data["skipped"].values()) <= 6 and data["n_attack"] >= 1
    assert data["apcer"] == 0.0  # 3 attacks: 5 % means none may pass
    assert load_model(out).threshold == pytest.approx(data["threshold"])
    assert "cannot be resolved" in result.stderr  # too few attacks for a 5 % APCER
    text = CliRunner().invoke(main, ["calibrate", str(tmp_path / "cal"), "-m", str(model), "--out", str(out)])
    assert "APCER:" in text.stdout and "BPCER:" in text.stdout and text.exit_code == 0


def test_calibrate_errors(crops_folder, tmp_path):
    folder, model = crops_folder
    with pytest.raises(ValueError, match="must differ"):
        calibrate(folder, model=model, out=model, crops=True)
    (tmp_path / "half" / "real").mkdir(parents=True)
    with pytest.raises(SourceError, match="attack"):
        calibrate(tmp_path / "half", model=model, out=tmp_path / "x.onnx", crops=True)
    result = CliRunner().invoke(main, ["calibrate", str(tmp_path / "half"), "-m", str(model), "--out", str(tmp_path / "x.onnx")])
    assert result.exit_code == 1 and not (tmp_path / "x.onnx").exists()
