"""The graph MAC counter (spoofsdk_train.macs) agrees with the torch hook counter on every registered architecture."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch", reason="the trainer extra (torch) is not installed")
pytest.importorskip("onnx", reason="onnx is not installed")

from spoofsdk_train.export import _onnx_export, export_model, fold_batchnorm  # noqa: E402
from spoofsdk_train.macs import onnx_params_macs  # noqa: E402
from spoofsdk_train.models import available, build_model, count_macs, get_spec  # noqa: E402
from spoofsdk_train.recipe import load_recipe  # noqa: E402

from conftest import build_tiny_model  # noqa: E402


def test_hand_worked_tiny_graph():
    # conv 3->8, 3x3, pad 1 at 64x64: 64*64*8 outputs x 27 MACs; Gemm 8->2: 16; params 8*27 + 8 + 16 + 2
    params, macs = onnx_params_macs(build_tiny_model(input_size=64))
    assert macs == 64 * 64 * 8 * 27 + 16 and params == 8 * 27 + 8 + 16 + 2


def _check(arch: str, size: int, tmp_path) -> None:
    """The graph of the trainer's export (BatchNorm folded: same MACs) against the hooks on the torch model."""
    torch.manual_seed(0)
    model = build_model(arch).eval()
    path = tmp_path / f"{arch}.onnx"
    _onnx_export(fold_batchnorm(model), torch.zeros(1, 3, size, size), path, "out", 17)
    _, graph_macs = onnx_params_macs(path)
    assert graph_macs == count_macs(model, size), arch


@pytest.mark.slow
def test_edgenet_graph_and_torch_counts_agree(tmp_path):
    _check("edgenet", 64, tmp_path)
    recipe = load_recipe({"model": {"architecture": "edgenet", "input_size": 64}})
    path = export_model(build_model("edgenet"), recipe, tmp_path / "meta.onnx", parity=False)
    from spoofsdk.model import SpoofModel

    assert int(SpoofModel(path).info.extra["macs"]) == onnx_params_macs(path)[1]  # the metadata's figure too


@pytest.mark.slow
@pytest.mark.parametrize("arch", sorted(available()))
def test_every_architecture_graph_and_torch_counts_agree(arch, tmp_path):
    _check(arch, get_spec(arch).default_input_size, tmp_path)
