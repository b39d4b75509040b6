"""EdgeNet: a small face anti-spoofing CNN for ARM boards (<= 1 M parameters, <= 100 M MACs at 128x128).

Two streams, built only from Conv2d, BatchNorm2d, ReLU6, Add, global average pooling and
Linear, so that it exports to plain ONNX (BatchNorm folds into the convolutions) and
quantizes cleanly to INT8 (no Hardswish/SiLU/SE gates, whose ranges quantize poorly):

- Main stream: MobileNetV2-style inverted residual blocks (1x1 expand, 3x3 depthwise,
  1x1 linear project, residual Add where shapes match), stride 32 overall, pooled to 320.
- Texture stream: a learnable depthwise 3x3 filter initialised as a Laplacian high-pass on
  the full-resolution input (print dots, screen pixels and moire live in the highest
  frequencies, which the main stream's early striding blurs away), then four cheap strided
  depthwise-separable convs, pooled to 64.

The two vectors are concatenated (384), then Linear 384->128, ReLU, Dropout, Linear 128->2
(class order spoof, real).
"""
from __future__ import annotations

import torch
from torch import nn

from . import register

__all__ = ["EdgeNet"]


class ConvBNReLU(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, act: bool = True):
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
        if act:
            layers.append(nn.ReLU6(inplace=True))
        super().__init__(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(ConvBNReLU(cin, hidden, 1))
        layers += [ConvBNReLU(hidden, hidden, 3, stride, groups=hidden), ConvBNReLU(hidden, cout, 1, act=False)]
        self.block = nn.Sequential(*layers)
        self.use_res = stride == 1 and cin == cout

    def forward(self, x):
        y = self.block(x)
        return x + y if self.use_res else y


def _separable(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(ConvBNReLU(cin, cin, 3, stride, groups=cin), ConvBNReLU(cin, cout, 1))


# (expansion, out channels, repeats, first stride)
_MAIN = [
    (1, 16, 1, 1),
    (4, 24, 2, 2),
    (4, 32, 3, 2),
    (4, 64, 3, 2),
    (4, 96, 2, 1),
    (4, 160, 2, 2),
]


class EdgeNet(nn.Module):
    def __init__(self, dropout: float = 0.2, last_channels: int = 320, texture_channels: int = 64):
        super().__init__()
        layers: list[nn.Module] = [ConvBNReLU(3, 16, 3, 2)]
        cin = 16
        for t, c, n, s in _MAIN:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(ConvBNReLU(cin, last_channels, 1))
        self.features = nn.Sequential(*layers)

        self.highpass = nn.Conv2d(3, 3, 3, 1, 1, groups=3, bias=False)
        lap = torch.tensor([[-1.0, -1.0, -1.0], [-1.0, 8.0, -1.0], [-1.0, -1.0, -1.0]]) / 8.0
        with torch.no_grad():
            self.highpass.weight.copy_(lap.expand(3, 1, 3, 3))
        self.texture = nn.Sequential(
            ConvBNReLU(3, 16, 3, 2),  # 1/2
            _separable(16, 32, 2),  # 1/4
            _separable(32, 48, 2),  # 1/8
            _separable(48, texture_channels, 2),  # 1/16
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(
            nn.Linear(last_channels + texture_channels, 128),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(128, 2),
        )
        self._init()

    def _init(self):
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and m is not self.highpass:
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        main = self.pool(self.features(x)).flatten(1)
        tex = self.pool(self.texture(self.highpass(x))).flatten(1)
        return self.head(torch.cat([main, tex], dim=1))


@register("edgenet", output="logits2", default_input_size=128, description="edge CNN: inverted residuals + high-pass texture stream, <=1M params")
def build_edgenet(**kwargs) -> EdgeNet:
    return EdgeNet(**kwargs)
