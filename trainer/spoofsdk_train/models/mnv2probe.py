"""``mnv2probe``: a frozen ImageNet MobileNetV2 trunk, texture statistics, and a small trained head.

Why this shape. Our data has a handful of cameras; every model that was free to learn them
(EdgeNet, the hybrid) learned the cameras, not the attacks, and ranked new cameras at chance or
backwards. Features learned on ImageNet's millions of photos do not know our cameras, and a
linear read-out of them already ranks unseen webcams far better (leave-one-source-out, see
docs/TRAINING.md). So the trunk stays as ImageNet left it and only the head is trained:

- ``features[:7]`` (stride 8, 32 channels) -> per-channel mean and standard deviation: the
  standard deviation of low-level responses measures texture energy (moire, print grain,
  screen pixels, the flatness of a recaptured face) independent of where it is in the crop;
- ``features[7:14]`` (stride 16, 96 channels) -> per-channel mean (and, optionally, std);
- the statistics are standardised with constants measured on the training data (a frozen
  affine, so the exported graph needs no side files) and read out by a linear layer or a
  one-hidden-layer MLP; one logit, sigmoid = P(real).

0.54 M parameters and about 69 M MACs at 128 x 128, inside the edge budget (<= 1 M, <= 100 M).
Because the trunk never changes, training can cache its statistics once per augmented view
and fit the head on the cache (:mod:`spoofsdk_train.probe`); every leave-one-source-out fold
shares that cache.
"""
from __future__ import annotations

import torch
from torch import nn

from . import register
from .mobilenetv2 import TRUNK_CHANNELS, FrozenStages, InputStandardisation, load_imagenet_trunk, mean_std

__all__ = ["MobileNetV2Probe"]


class MobileNetV2Probe(FrozenStages):
    def __init__(self, split: int = 7, depth: int = 14, hidden: int = 0, dropout: float = 0.3, std_high: bool = False,
                 pretrained: bool = True, input_norm: str = "none"):
        super().__init__()
        self.input_norm = InputStandardisation(input_norm)
        if not 1 <= split < depth <= 19:
            raise ValueError(f"need 1 <= split < depth <= 19, got split={split} depth={depth}")
        trunk = load_imagenet_trunk(depth, pretrained=pretrained)
        self.low, self.high = trunk[:split], trunk[split:depth]
        self.std_high = bool(std_high)
        self.feature_dim = 2 * TRUNK_CHANNELS[split] + (2 if std_high else 1) * TRUNK_CHANNELS[depth]
        # Standardisation of the statistics, set from the training data (``set_standardisation``).
        self.register_buffer("feat_mean", torch.zeros(self.feature_dim))
        self.register_buffer("feat_scale", torch.ones(self.feature_dim))
        if hidden:
            self.head = nn.Sequential(nn.Linear(self.feature_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                                      nn.Dropout(dropout), nn.Linear(hidden, 1))
        else:
            self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.feature_dim, 1))
        self.freeze(self.low, self.high)  # the whole trunk runs as ImageNet left it, BatchNorm statistics included

    def statistics(self, x: torch.Tensor) -> torch.Tensor:
        """The raw (unstandardised) texture statistics of a normalised NCHW batch."""
        a = self.low(self.input_norm(x))
        b = self.high(a)
        a_mean, a_std = mean_std(a, (2, 3))
        b_mean, b_std = mean_std(b, (2, 3))
        parts = [a_mean, a_std, b_mean] + ([b_std] if self.std_high else [])
        return torch.cat(parts, 1)

    def set_standardisation(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.feat_mean.copy_(mean)
        self.feat_scale.copy_(1.0 / torch.clamp(std, min=1e-6))

    def head_logit(self, stats: torch.Tensor) -> torch.Tensor:
        return self.head((stats - self.feat_mean) * self.feat_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head_logit(self.statistics(x))


@register("mnv2probe", output="logit1", default_input_size=128,
          description="frozen ImageNet MobileNetV2 trunk[:14] + texture statistics + trained head (leave-one-source-out)")
def _build(**kwargs) -> nn.Module:
    return MobileNetV2Probe(**kwargs)
