"""spoofsdk_train.models: the registry, parameter counts, MAC counting, and the edge model's budget."""
from __future__ import annotations

import pytest

pytest.importorskip("torch", reason="the trainer (pip install -e ./trainer, with torch) is not installed")

import torch
from torch import nn

from spoofsdk_train.models import available, build_model, count_macs, count_params, get_spec, model_stats


def test_registry_lists_the_three_architectures():
    names = set(available())
    assert {"spoofnet", "hybrid", "edgenet"} <= names
    with pytest.raises(KeyError, match="unknown architecture"):
        build_model("nope")


def test_spoofnet_has_exactly_the_seed_parameter_count():
    model = build_model("spoofnet")
    assert count_params(model) == 4_881_442
    assert count_params(model, trainable_only=True) == 4_881_442
    assert get_spec("spoofnet").output == "logits2" and get_spec("spoofnet").class_order == ("spoof", "real")
    model.eval()
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 2)


@pytest.mark.slow
def test_hybrid_levels_and_head():
    model = build_model("hybrid").eval()
    x = torch.zeros(1, 3, 224, 224)
    with torch.no_grad():
        levels = model.backbone(x)
        out = model(x)
    assert [f.shape[1] for f in levels] == [16, 16, 24, 48, 576]
    assert [224 // f.shape[-1] for f in levels] == [2, 4, 8, 16, 32]
    assert out.shape == (1, 1)
    assert model.head[0].in_features == 640 and model.head[0].out_features == 128
    assert isinstance(model.head[2], nn.Dropout) and model.head[2].p == 0.3
    assert get_spec("hybrid").output == "logit1"


@pytest.mark.slow
def test_edge_model_fits_the_arm_budget():
    st = model_stats("edgenet", 128)
    assert st["params"] <= 1_000_000
    assert st["macs"] <= 100_000_000
    assert get_spec("edgenet").default_input_size == 128


def test_edge_model_uses_only_quantization_friendly_layers():
    allowed = (nn.Conv2d, nn.BatchNorm2d, nn.ReLU6, nn.ReLU, nn.Linear, nn.Dropout, nn.AdaptiveAvgPool2d, nn.Sequential, nn.Identity)
    model = build_model("edgenet")
    for name, m in model.named_modules():
        if m is model or type(m).__name__ in ("InvertedResidual", "ConvBNReLU"):
            continue
        assert isinstance(m, allowed), f"{name}: {type(m).__name__}"


def test_mac_count_matches_hand_computation():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),  # 8x8 out at 16 px input: 64*8*27 = 13,824
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8),  # depthwise: 64*8*9 = 4,608
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 2),  # 16
    )
    assert count_macs(model, 16) == 13_824 + 4_608 + 16


def test_count_macs_runs_its_probe_where_the_weights_are():
    """The trainer counts MACs after moving the model to its device (CUDA on a GPU machine): the probe
    input must follow the weights. The meta device stands in for CUDA on a machine without one."""
    model = build_model("hybrid_mnv2", pretrained=False)
    on_cpu = count_macs(model, 128)
    assert count_macs(model.to("meta"), 128) == on_cpu > 0


@pytest.mark.slow
@pytest.mark.parametrize("name, size", [("spoofnet", 224), ("hybrid", 224), ("edgenet", 128)])
def test_model_stats_are_reported(name, size):
    st = model_stats(name, size)
    assert st["params"] > 0 and st["macs"] > 0 and st["input_size"] == size


def test_mobilenetv2_hybrid_has_the_seed_head_on_the_imagenet_trunk_and_fits_the_edge_budget():
    """hybrid_mnv2 (issue 11): the SPOOF texture branch on MobileNetV2's stride-8 level, the SPOOF head, <= 1 M params / 100 M MACs."""
    model = build_model("hybrid_mnv2", pretrained=False).eval()
    x = torch.zeros(1, 3, 128, 128)
    with torch.no_grad():
        s8 = model.low(x)
        out = model(x)
    assert s8.shape[1:] == (32, 16, 16)  # stride 8
    assert out.shape == (1, 1) and get_spec("hybrid_mnv2").output == "logit1"
    assert model.head[0].in_features == 96 + 64 and model.head[0].out_features == 128
    assert isinstance(model.head[2], nn.Dropout) and model.head[2].p == 0.3
    assert [type(m) for m in model.texture] == [type(m) for m in build_model("hybrid").texture]
    assert count_params(model) <= 1_000_000 and count_macs(model, 128) <= 100_000_000
    with pytest.raises(ValueError, match="depth"):
        build_model("hybrid_mnv2", depth=7, pretrained=False)


def test_mobilenetv2_hybrid_frozen_stages_do_not_move_in_training():
    """The frozen ImageNet stages keep their weights AND their BatchNorm statistics through training steps."""
    torch.manual_seed(0)
    model = build_model("hybrid_mnv2", pretrained=False, freeze=7)
    frozen = {k: v.clone() for k, v in model.low.state_dict().items()}
    free = {k: v.clone() for k, v in model.high.state_dict().items()}
    assert all(not p.requires_grad for p in model.low.parameters()) and all(p.requires_grad for p in model.high.parameters())
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.train()
    for _ in range(2):
        loss = nn.functional.binary_cross_entropy_with_logits(model(torch.randn(4, 3, 64, 64))[:, 0], torch.tensor([0.0, 1.0, 0.0, 1.0]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(torch.equal(frozen[k], v) for k, v in model.low.state_dict().items())
    assert any(not torch.equal(free[k], v) for k, v in model.high.state_dict().items())


def test_mobilenetv2_hybrid_loads_the_imagenet_trunk():
    from conftest import missing
    from spoofsdk_train.models.mobilenetv2 import imagenet_weights_path, load_imagenet_trunk

    if not imagenet_weights_path().is_file():
        missing(f"ImageNet MobileNetV2 weights not found at {imagenet_weights_path()} (../shared/models/imagenet)")
    model = build_model("hybrid_mnv2")
    trunk = load_imagenet_trunk(14)
    assert all(torch.equal(a, b) for a, b in zip(list(model.low.state_dict().values()) + list(model.high.state_dict().values()),
                                                 trunk.state_dict().values()))


def test_input_standardisation_removes_exposure_and_colour_cast_and_nothing_else():
    """``input_norm``: "channel" is blind to a per-channel gain and offset (exposure, white balance,
    contrast), "image" only to one gain and offset for the whole image (colour relations kept), "none" is
    the identity; a flat image gives finite zeros, not a division by zero."""
    from spoofsdk_train.models.mobilenetv2 import InputStandardisation

    torch.manual_seed(0)
    x = torch.randn(2, 3, 16, 16)
    gain, offset = torch.tensor([0.5, 1.0, 2.0]).view(1, 3, 1, 1), torch.tensor([0.3, -0.2, 0.9]).view(1, 3, 1, 1)
    channel, image, none = InputStandardisation("channel"), InputStandardisation("image"), InputStandardisation("none")
    assert torch.allclose(channel(x * gain + offset), channel(x), atol=1e-4)
    assert torch.allclose(image(x * 1.7 - 0.4), image(x), atol=1e-4)
    assert not torch.allclose(image(x * gain + offset), image(x), atol=1e-2)  # a colour cast survives "image"
    assert torch.allclose(channel(x).mean((2, 3)), torch.zeros(2, 3), atol=1e-5)
    assert torch.allclose(channel(x).std((2, 3), unbiased=False), torch.ones(2, 3), atol=1e-3)
    assert torch.equal(none(x), x)
    flat = channel(torch.full((1, 3, 8, 8), 0.7))
    assert torch.isfinite(flat).all() and flat.abs().max() < 1e-2
    with pytest.raises(ValueError, match="input_norm"):
        InputStandardisation("instance")


@pytest.mark.parametrize("name", ["hybrid_mnv2", "mnv2probe"])
def test_input_norm_makes_the_model_blind_to_exposure_and_keeps_its_state_dict(name):
    """The option adds no weights (every checkpoint trained without it loads into it and vice versa), and
    the model's answer no longer moves with the exposure or white balance of the crop."""
    from spoofsdk_train.models.mobilenetv2 import InputStandardisation

    torch.manual_seed(0)
    plain = build_model(name, pretrained=False).eval()
    normed = build_model(name, pretrained=False, input_norm="channel").eval()
    normed.load_state_dict(plain.state_dict(), strict=True)
    x = torch.rand(3, 3, 64, 64) * 2 - 1
    darker_and_bluer = x * torch.tensor([1.2, 0.6, 0.5]).view(1, 3, 1, 1) - 0.4
    with torch.no_grad():
        assert torch.allclose(normed(darker_and_bluer), normed(x), atol=1e-4)
        # ... and it is the same network behind the standardisation
        assert torch.allclose(normed(x), plain(InputStandardisation("channel")(x)), atol=1e-5)
