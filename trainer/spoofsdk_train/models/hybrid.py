"""The SPOOF hybrid: a mobile backbone + a texture branch on its stride-8 features, fused, one logit.

``hybrid`` is the seed's model (shared/SEEDS.md): MobileNetV3-small (width 1.0), written out
here (no torchvision). Feature levels at strides 2, 4, 8, 16, 32 carry 16, 16, 24, 48, 576
channels. The texture branch reads the stride-8 level (24 ch): Conv3x3 24->64 + BN + ReLU,
Conv3x3 64->64 + BN + ReLU, global average pool (64). The last level is pooled (576),
concatenated with the texture vector (640), then Linear 640->128, ReLU, Dropout(0.3),
Linear 128->1: one logit, sigmoid = P(real).

``hybrid_mnv2`` is the same design on a backbone we CAN initialise offline: no MobileNetV3
weights exist here, torchvision's ImageNet MobileNetV2 does (``../shared/models/imagenet``).
Same texture branch on its stride-8 level (32 ch), same head on the pooled last level of
``features[:depth]`` (depth 14: 96 ch at stride 16, inside the edge budget at 128 px; 19: the
whole trunk, 1280 ch). ``freeze`` keeps the first stages exactly as ImageNet left them
(BatchNorm statistics included): cheaper to train and, on our few cameras, less to overfit.
"""
from __future__ import annotations

import torch
from torch import nn

from . import register
from .mobilenetv2 import TRUNK_CHANNELS, FrozenStages, InputStandardisation, load_imagenet_trunk

__all__ = ["MobileNetV3Small", "HybridNet", "MobileNetV2Hybrid"]


def _make_divisible(v: float, divisor: int = 8) -> int:
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


class ConvBNAct(nn.Sequential):
    def __init__(self, cin, cout, k=3, stride=1, groups=1, act: type[nn.Module] | None = nn.Hardswish):
        layers = [nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
        if act is not None:
            layers.append(act(inplace=True))
        super().__init__(*layers)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, squeeze: int):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)
        self.gate = nn.Hardsigmoid(inplace=True)

    def forward(self, x):
        return x * self.gate(self.fc2(self.relu(self.fc1(self.pool(x)))))


class InvertedResidual(nn.Module):
    def __init__(self, cin, k, exp, cout, use_se, act, stride):
        super().__init__()
        self.use_res = stride == 1 and cin == cout
        layers: list[nn.Module] = []
        if exp != cin:
            layers.append(ConvBNAct(cin, exp, 1, act=act))
        layers.append(ConvBNAct(exp, exp, k, stride, groups=exp, act=act))
        if use_se:
            layers.append(SqueezeExcite(exp, _make_divisible(exp // 4)))
        layers.append(ConvBNAct(exp, cout, 1, act=None))
        self.block = nn.Sequential(*layers)

    def forward(self, x):
        y = self.block(x)
        return x + y if self.use_res else y


# (kernel, expansion, out, SE, activation, stride) -- MobileNetV3-small, width 1.0
_SMALL = [
    (3, 16, 16, True, "RE", 2),
    (3, 72, 24, False, "RE", 2),
    (3, 88, 24, False, "RE", 1),
    (5, 96, 40, True, "HS", 2),
    (5, 240, 40, True, "HS", 1),
    (5, 240, 40, True, "HS", 1),
    (5, 120, 48, True, "HS", 1),
    (5, 144, 48, True, "HS", 1),
    (5, 288, 96, True, "HS", 2),
    (5, 576, 96, True, "HS", 1),
    (5, 576, 96, True, "HS", 1),
]


class MobileNetV3Small(nn.Module):
    """MobileNetV3-small features as levels at strides 2, 4, 8, 16, 32 (16, 16, 24, 48, 576 channels)."""

    def __init__(self):
        super().__init__()
        self.stem = ConvBNAct(3, 16, 3, 2, act=nn.Hardswish)
        blocks = []
        cin = 16
        for k, exp, cout, se, a, s in _SMALL:
            act = nn.ReLU if a == "RE" else nn.Hardswish
            blocks.append(InvertedResidual(cin, k, exp, cout, se, act, s))
            cin = cout
        # level boundaries: stride 4 after block 0, stride 8 after block 2, stride 16 after block 7, 32 after the rest + last conv
        self.stage4 = nn.Sequential(blocks[0])
        self.stage8 = nn.Sequential(*blocks[1:3])
        self.stage16 = nn.Sequential(*blocks[3:8])
        self.stage32 = nn.Sequential(*blocks[8:], ConvBNAct(96, 576, 1, act=nn.Hardswish))

    def forward(self, x) -> list[torch.Tensor]:
        f2 = self.stem(x)
        f4 = self.stage4(f2)
        f8 = self.stage8(f4)
        f16 = self.stage16(f8)
        f32 = self.stage32(f16)
        return [f2, f4, f8, f16, f32]


def texture_branch(channels: int) -> nn.Sequential:
    """The hybrid's texture branch: two 3x3 conv + BN + ReLU to 64 channels, global average pool."""
    return nn.Sequential(
        nn.Conv2d(channels, 64, 3, padding=1, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(inplace=True),
        nn.Conv2d(64, 64, 3, padding=1, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )


def fusion_head(channels: int, dropout: float) -> nn.Sequential:
    """The hybrid's head on [pooled last level, texture vector]: Linear -> 128, ReLU, Dropout, Linear -> 1."""
    return nn.Sequential(nn.Linear(channels, 128), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(128, 1))


class HybridNet(nn.Module):
    def __init__(self, dropout: float = 0.3):
        super().__init__()
        self.backbone = MobileNetV3Small()
        self.texture = texture_branch(24)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = fusion_head(576 + 64, dropout)

    def forward(self, x):
        levels = self.backbone(x)
        feats = torch.cat([self.pool(levels[-1]).flatten(1), self.texture(levels[2])], dim=1)
        return self.head(feats)


class MobileNetV2Hybrid(FrozenStages):
    """ImageNet MobileNetV2 ``features[:depth]`` + the texture branch on its stride-8 level + the hybrid head."""

    STRIDE8 = 7  # features[:7] ends at stride 8 (32 channels)

    def __init__(self, depth: int = 14, freeze: int = 7, dropout: float = 0.3, pretrained: bool = True, input_norm: str = "none"):
        super().__init__()
        self.input_norm = InputStandardisation(input_norm)
        if not self.STRIDE8 < depth <= 19:
            raise ValueError(f"depth must be in {self.STRIDE8 + 1}..19 (the texture branch reads stage {self.STRIDE8}), got {depth}")
        if not 0 <= freeze <= depth:
            raise ValueError(f"freeze must be in 0..depth ({depth}), got {freeze}")
        trunk = load_imagenet_trunk(depth, pretrained=pretrained)
        self.low, self.high = trunk[: self.STRIDE8], trunk[self.STRIDE8:]
        self.freeze(*trunk[:freeze])
        self.texture = texture_branch(TRUNK_CHANNELS[self.STRIDE8])
        self.head = fusion_head(TRUNK_CHANNELS[depth] + 64, dropout)

    def forward(self, x):
        s8 = self.low(self.input_norm(x))
        top = self.high(s8)
        return self.head(torch.cat([top.mean((2, 3)), self.texture(s8)], dim=1))


@register("hybrid_mnv2", output="logit1", default_input_size=128,
          description="ImageNet MobileNetV2 trunk[:14] + stride-8 texture branch + hybrid head, 1 logit (issue 11)")
def build_hybrid_mnv2(**kwargs) -> MobileNetV2Hybrid:
    return MobileNetV2Hybrid(**kwargs)


@register("hybrid", output="logit1", default_input_size=224, description="MobileNetV3-small + stride-8 texture branch (SEEDS)")
def build_hybrid(**kwargs) -> HybridNet:
    return HybridNet(**kwargs)
