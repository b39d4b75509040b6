"""MiniFASNet (Minivision, Apache-2.0): our module loads the two published checkpoints strictly.

Checkpoint tests read ``../shared/models/minifasnet`` (or $SPOOFSDK_MINIFASNET_DIR); without it they
skip with the reason, except under CI=true, where they fail.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import require
from spoofsdk_train.models import build_model, count_params, get_spec
from spoofsdk_train.models.minifasnet import (
    CHECKPOINTS,
    checkpoint_path,
    classifier_state_dict,
    load_minifasnet,
    minifasnet_dir,
    minifasnet_pair_p_live,
)


@pytest.fixture(scope="session")
def minifasnet_folder() -> Path:
    return require(minifasnet_dir(), "MiniFASNet checkpoints")


@pytest.mark.parametrize("name,params", [("minifasnet_v2", 434_560), ("minifasnet_v1se", 433_586)])
def test_architecture_shapes_without_weights(name, params):
    model = build_model(name).eval()
    assert count_params(model) == params
    # The last depthwise conv spans the whole 5x5 stride-16 map of an 80x80 input.
    assert model.conv_6_dw.conv.kernel_size == (5, 5)
    assert get_spec(name).output == "logitsN" and get_spec(name).class_order == ("spoof", "real", "spoof")
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 80, 80)).shape == (2, 3)


def test_classifier_state_dict_strips_prefix_and_sets_aside_the_ft_generator():
    raw = {"module.conv1.conv.weight": torch.zeros(1), "module.FTGenerator.ft.0.weight": torch.zeros(1), "prob.weight": torch.ones(1)}
    assert set(classifier_state_dict(raw)) == {"conv1.conv.weight", "prob.weight"}


@pytest.mark.parametrize("name", list(CHECKPOINTS))
def test_checkpoint_loads_strictly(minifasnet_folder, name):
    raw = torch.load(checkpoint_path(name), map_location="cpu", weights_only=True)
    assert all(k.startswith("module.") for k in raw)
    model = build_model(name)
    # strict=True raises on any missing or unexpected key or shape mismatch.
    model.load_state_dict(classifier_state_dict(raw), strict=True)
    loaded = load_minifasnet(name)
    assert not loaded.training
    assert torch.equal(loaded.prob.weight, raw["module.prob.weight"])
    assert load_minifasnet(checkpoint_path(name)).prob.weight.shape == (3, 128)


def test_pair_p_live_is_the_mean_of_the_two_softmaxes(minifasnet_folder):
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, size=(3, 80, 80, 3), dtype=np.uint8)
    v2, v1se = load_minifasnet("minifasnet_v2"), load_minifasnet("minifasnet_v1se")
    x = torch.from_numpy(crops.transpose(0, 3, 1, 2).astype(np.float32))
    with torch.no_grad():
        expected = ((torch.softmax(v2(x), 1) + torch.softmax(v1se(x), 1)) / 2)[:, 1].numpy()
    got = minifasnet_pair_p_live(crops)
    assert got.shape == (3,)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    np.testing.assert_allclose(minifasnet_pair_p_live(crops, models=[v2]), torch.softmax(v2(x), 1)[:, 1].detach().numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="80x80"):
        minifasnet_pair_p_live(np.zeros((1, 64, 64, 3), np.uint8))
