"""spoofsdk-train end to end on a synthetic dataset: prepare -> train -> evaluate -> export -> runtime."""
from __future__ import annotations

import json

import pytest

from spoofsdk.model import SpoofModel

pytest.importorskip("torch", reason="the trainer (pip install -e ./trainer, with torch) is not installed")

from spoofsdk_train.cli import main
from spoofsdk_train.synthetic import make_synthetic


@pytest.mark.slow
def test_cli_prepare_train_evaluate_export(tmp_path, capsys):
    root = make_synthetic(tmp_path / "syn", "split_class_identity", n_subjects=9, per_subject=3, size=40)
    assert main(["prepare", str(root), "--out", str(tmp_path / "cache"), "--size", "32", "--faces", "crop", "--quiet"]) == 0
    manifest = json.loads((tmp_path / "cache" / "syn" / "manifest.json").read_text())
    assert manifest["layout"] == "split_class_identity" and manifest["split"]["val_from_train"] == "identity-disjoint"
    run = tmp_path / "run"
    onnx_path = tmp_path / "model.onnx"
    args = ["train", "--recipe", "edgenet", "--out", str(run), "--data", str(tmp_path / "cache" / "syn"), "--quiet",
            "--then-export", str(onnx_path)]
    for o in ("model.input_size=32", "data.epoch_size=16", "train.epochs=1", "train.batch_size=8", "train.threads=1", "train.log_every=0"):
        args += ["--set", o]
    assert main(args) == 0
    assert (run / "report.json").exists() and (run / "roc_det.png").exists()
    log = (run / "train.log").read_text()  # training, evaluation and export all in the run's log
    assert "done: best" in log and "report ->" in log and "exported" in log
    model = SpoofModel(onnx_path)
    report = json.loads((run / "report.json").read_text())
    assert model.info.threshold == report["threshold"]["value"]
    assert main(["evaluate", str(run / "best.pt"), "--threshold", "apcer:0.05", "--out", str(tmp_path / "ev")]) == 0
    assert json.loads((tmp_path / "ev" / "report.json").read_text())["threshold"]["rule"] == "apcer:0.05"
    assert main(["export", str(run / "best.pt"), "--out", str(tmp_path / "again.onnx"), "--report", str(tmp_path / "ev" / "report.json")]) == 0
    assert SpoofModel(tmp_path / "again.onnx").info.architecture == "edgenet"


@pytest.mark.slow
def test_cli_models_lists_sizes(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "spoofnet" in out and "4,881,442" in out and "edgenet" in out and "hybrid" in out


def test_cli_resplit_writes_a_random_split_per_dataset(tmp_path):
    for name in ("a", "b"):
        root = make_synthetic(tmp_path / name, "class_subject", n_subjects=4, per_subject=5, size=40)
        assert main(["prepare", str(root), "--out", str(tmp_path / "cache"), "--size", "32", "--faces", "crop", "--quiet"]) == 0
    out = tmp_path / "random"
    assert main(["resplit", str(tmp_path / "cache" / "a"), str(tmp_path / "cache" / "b"), "--out", str(out), "--split", "0.6,0.2,0.2"]) == 0
    for name in ("a", "b"):
        m = json.loads((out / name / "manifest.json").read_text())
        assert m["split"]["fractions"] == [0.6, 0.2, 0.2] and m["counts"]["test"] == {"real": 4, "attack": 4}
    assert main(["resplit", str(tmp_path / "cache" / "a"), "--out", str(out), "--split", "0.6,0.2"]) == 2
    assert main(["resplit", str(tmp_path / "nothing"), "--out", str(out)]) != 0
