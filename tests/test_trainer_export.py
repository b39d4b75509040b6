"""spoofsdk_train.export: ONNX + metadata, BatchNorm folding, parity, and the file working in the runtime."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="the trainer (pip install -e ./trainer, with torch) is not installed")
pytest.importorskip("onnx", reason="onnx (a trainer dependency) is not installed")
pytestmark = pytest.mark.slow  # every test here trains and exports a model first

import onnx
import torch

from spoofsdk.crop import to_tensor
from spoofsdk.model import SpoofModel
from spoofsdk_train.export import ExportError, export, fold_batchnorm, parity_check
from spoofsdk_train.models import build_model
from spoofsdk_train.train import model_from_checkpoint, probs_real

REPORT = {"threshold": {"value": 0.42, "rule": "eer", "how": "EER on validation", "val_sets": ["syn"]},
          "test": {"syn": {"n": 10, "auc": 0.9, "eer": 0.1, "apcer": 0.1, "bpcer": 0.1, "acer": 0.1}}}


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    from spoofsdk_train.data import prepare
    from spoofsdk_train.synthetic import make_synthetic

    base = tmp_path_factory.mktemp("exportdata")
    root = make_synthetic(base / "syn", "class_subject", n_subjects=7, per_subject=3, size=40)
    return prepare(root, base / "cache", size=32, faces="crop", progress=False).parent


def _train(tiny_data: Path, out: Path, recipe: str) -> Path:
    from spoofsdk_train.recipe import load_recipe
    from spoofsdk_train.train import train

    # hybrid_mnv2's trunk is ImageNet's: random weights here, so the test needs no ../shared/models
    # and its domain critic (SSDG) needs two training domains, which the tiny data does not have
    extra = ["model.kwargs={ depth = 14, freeze = 7, pretrained = false }", "train.domain_adv=0"] if recipe == "hybrid_mnv2" else []
    r = load_recipe(recipe, extra + ["model.input_size=32", "data.epoch_size=16", "train.epochs=1", "train.batch_size=8",
                             "train.threads=1", "train.num_workers=0", "train.log_every=0", "train.warmup_epochs=0"])
    r.data.manifests = [str(tiny_data)]
    train(r, out, progress=False)
    return out / "best.pt"


@pytest.fixture(scope="module")
def edge_ckpt(tiny_data, tmp_path_factory) -> Path:
    return _train(tiny_data, tmp_path_factory.mktemp("edge"), "edgenet")


def _crops(tiny_data: Path) -> list[np.ndarray]:
    from spoofsdk_train.data import load_crops

    return list(load_crops([tiny_data], "test").images) + list(load_crops([tiny_data], "val").images)


def test_export_writes_metadata_and_loads_in_the_runtime(edge_ckpt, tiny_data, tmp_path):
    path = export(edge_ckpt, tmp_path / "edge.onnx", report=REPORT)
    m = SpoofModel(path)
    info = m.info
    assert (info.architecture, info.precision, info.input_size, info.output) == ("edgenet", "fp32", 32, "logits2")
    assert info.class_order == ("spoof", "real") and info.color_order == "RGB"
    assert info.threshold == pytest.approx(0.42) and info.crop_scale == pytest.approx(1.5)
    assert info.metrics["syn"]["auc"] == pytest.approx(0.9)
    extra = info.extra
    assert "NUAA: academic research" in extra["training_data"] or "syn" in extra["training_data"]
    assert int(extra["params"]) > 0 and int(extra["macs"]) > 0 and extra["created"]
    proto = onnx.load(str(path))
    assert proto.opset_import[0].version >= 13
    assert proto.graph.input[0].name == "input"
    assert not proto.graph.input[0].type.tensor_type.shape.dim[0].HasField("dim_value")  # dynamic batch
    assert "BatchNormalization" not in {n.op_type for n in proto.graph.node}
    # score_crops on real crops == torch
    crops = _crops(tiny_data)
    model, recipe, _ = model_from_checkpoint(edge_ckpt)
    with torch.no_grad():
        ref = probs_real(model(torch.from_numpy(to_tensor(crops, "RGB", (0.5,) * 3, (0.5,) * 3))), "logits2").numpy()
    np.testing.assert_allclose(m.score_crops(crops), ref, atol=1e-4)
    assert (tmp_path / "edge.export.json").exists()


def test_batchnorm_folding_keeps_outputs():
    torch.manual_seed(0)
    for name in ("edgenet", "hybrid", "spoofnet"):
        model = build_model(name)
        model.train()
        with torch.no_grad():  # give BatchNorm non-trivial running statistics
            model(torch.randn(4, 3, 64, 64) * 2 + 0.3)
        model.eval()
        folded = fold_batchnorm(model)
        x = torch.randn(2, 3, 64, 64)
        with torch.no_grad():
            np.testing.assert_allclose(folded(x).numpy(), model(x).numpy(), atol=1e-4, rtol=1e-4)
        n_bn = sum(isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d)) for m in folded.modules())
        assert n_bn == 0, f"{name}: {n_bn} BatchNorm layers left"


def test_parity_failure_fails_the_export(edge_ckpt, tiny_data, tmp_path):
    path = export(edge_ckpt, tmp_path / "ok.onnx", report=REPORT)
    model, recipe, _ = model_from_checkpoint(edge_ckpt)
    with torch.no_grad():  # a torch model that no longer matches the file
        model.head[-1].bias += torch.tensor([0.5, -0.5])
    with pytest.raises(ExportError, match="parity"):
        parity_check(path.read_bytes(), model, recipe, _crops(tiny_data), 1e-4)


def test_export_refuses_old_opsets(edge_ckpt, tmp_path):
    with pytest.raises(ExportError, match="opset"):
        export(edge_ckpt, tmp_path / "old.onnx", report=REPORT, opset=11)
    assert not (tmp_path / "old.onnx").exists()


@pytest.mark.parametrize("recipe", ["hybrid", pytest.param("hybrid_mnv2", marks=pytest.mark.slow)])
def test_hybrid_exports_one_logit(tiny_data, tmp_path, recipe):
    ckpt = _train(tiny_data, tmp_path / "hyb", recipe)
    path = export(ckpt, tmp_path / "hybrid.onnx", report=REPORT)
    m = SpoofModel(path)
    assert m.info.output == "logit1" and m.info.class_order == ("real",)
    crops = _crops(tiny_data)
    model, recipe, _ = model_from_checkpoint(ckpt)
    mean, std = recipe.model.mean, recipe.model.std
    with torch.no_grad():
        ref = torch.sigmoid(model(torch.from_numpy(to_tensor(crops, "RGB", mean, std))).reshape(-1)).numpy()
    np.testing.assert_allclose(m.score_crops(crops), ref, atol=1e-4)
