"""MobileNetV2 with torchvision's parameter names, so its ImageNet checkpoint loads with ``strict=True``.

torchvision does not import on our CPU torch, and we only need the trunk: ``features[:k]`` of the
ImageNet model is the cheapest strong initialisation an edge model can have (see
``../shared/models/imagenet/README.md`` for the cost of each truncation). :func:`load_imagenet_trunk`
returns the first ``k`` feature stages with their pretrained weights.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

__all__ = ["MobileNetV2", "InvertedResidual", "imagenet_weights_path", "load_imagenet_trunk", "TRUNK_CHANNELS", "FrozenStages",
           "InputStandardisation", "INPUT_NORMS", "mean_std"]

# (expansion t, output channels c, repeats n, first stride s): torchvision's / the paper's table.
_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
IMAGENET_FILE = "mobilenet_v2-b0353104.pth"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _conv_bn_relu6(inp: int, out: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inp, out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    def __init__(self, inp: int, out: int, stride: int, expand: int):
        super().__init__()
        hidden = inp * expand
        self.use_res_connect = stride == 1 and inp == out
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_conv_bn_relu6(inp, hidden, kernel=1))
        layers += [_conv_bn_relu6(hidden, hidden, stride=stride, groups=hidden), nn.Conv2d(hidden, out, 1, bias=False), nn.BatchNorm2d(out)]
        self.conv = nn.Sequential(*layers)
        self.out_channels = out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


def _features() -> nn.Sequential:
    layers: list[nn.Module] = [_conv_bn_relu6(3, 32, stride=2)]
    inp = 32
    for t, c, n, s in _SETTINGS:
        for i in range(n):
            layers.append(InvertedResidual(inp, c, s if i == 0 else 1, t))
            inp = c
    layers.append(_conv_bn_relu6(inp, 1280, kernel=1))
    return nn.Sequential(*layers)


# Output channels after features[:k], for k = 1..19.
TRUNK_CHANNELS = {1: 32, 2: 16, 3: 24, 4: 24, 5: 32, 6: 32, 7: 32, 8: 64, 9: 64, 10: 64, 11: 64, 12: 96, 13: 96, 14: 96,
                  15: 160, 16: 160, 17: 160, 18: 320, 19: 1280}


class MobileNetV2(nn.Module):
    """torchvision's MobileNetV2 (width 1.0): ``features`` + ``classifier``; same state-dict keys."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self.features = _features()
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean((2, 3)))


def imagenet_weights_path() -> Path:
    """``$SPOOFSDK_IMAGENET_WEIGHTS``, else ``../shared/models/imagenet/`` beside the repository."""
    env = os.environ.get("SPOOFSDK_IMAGENET_WEIGHTS")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[4] / "shared" / "models" / "imagenet" / IMAGENET_FILE


def load_imagenet_trunk(depth: int, pretrained: bool = True, path: str | os.PathLike | None = None) -> nn.Sequential:
    """``features[:depth]`` of MobileNetV2, with torchvision's ImageNet weights when ``pretrained``.

    The whole checkpoint is loaded strictly into the whole model first, so a wrong or damaged file
    fails loudly instead of leaving part of the trunk random.
    """
    if not 1 <= depth <= 19:
        raise ValueError(f"MobileNetV2 trunk depth must be 1..19, got {depth}")
    model = MobileNetV2()
    if pretrained:
        p = Path(path) if path is not None else imagenet_weights_path()
        if not p.is_file():
            raise FileNotFoundError(
                f"ImageNet MobileNetV2 weights not found at {p}; set $SPOOFSDK_IMAGENET_WEIGHTS or pass pretrained=False"
            )
        model.load_state_dict(torch.load(p, map_location="cpu", weights_only=True), strict=True)
    return model.features[:depth]


class FrozenStages(nn.Module):
    """Base of the models that keep ImageNet stages exactly as ImageNet left them (mnv2probe,
    hybrid_mnv2): those stages get no gradients, and stay in eval mode whatever ``train()`` is asked,
    so their BatchNorm statistics are never updated by our few cameras."""

    def freeze(self, *stages: nn.Module) -> None:
        self._frozen = list(stages)
        for m in self._frozen:
            for p in m.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> "FrozenStages":
        super().train(mode)
        for m in getattr(self, "_frozen", ()):
            m.eval()
        return self


def mean_std(x: torch.Tensor, dims: tuple[int, ...], keepdim: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation over ``dims``: sqrt(E[x^2] - E[x]^2), the variance clamped at 1e-6.
    Exports to plain ReduceMean/Mul/Sub/Sqrt (no ReduceVariance), and the std is never below 1e-3."""
    mean = x.mean(dims, keepdim=keepdim)
    var = (x * x).mean(dims, keepdim=keepdim) - mean * mean
    return mean, torch.sqrt(torch.clamp(var, min=1e-6))


INPUT_NORMS = ("none", "channel", "image")


class InputStandardisation(nn.Module):
    """Per-image standardisation of the (already mean/std-normalised) input, inside the graph.

    Why: on held-out cameras the models' worst errors follow exposure and colour temperature (NUAA's
    over-exposed live faces scored as attacks, warm prints as live; gc535's darker live faces), cues that
    belong to the camera and the room, not to the attack. Augmentation asks the network to ignore them;
    this removes them exactly, at training and at run time alike (it is part of the exported model, so the
    runtime's preprocessing and metadata do not change).

    - ``"none"``: identity.
    - ``"channel"``: each colour channel to zero mean and unit variance over the image (grey-world white
      balance plus contrast normalisation).
    - ``"image"``: one mean and variance over all channels and pixels (exposure and contrast only; the
      colour relations between channels are kept).

    Mean and std from :func:`mean_std` (as mnv2probe's texture statistics): the divisor is never below
    1e-3, so a flat image gives zeros, not a division by zero. Measured this way
    (docs/TRAINING.md, session 15; not kept). Were the option used again: a two-pass variance (E[(x - mean)^2])
    and a floor nearer one grey level (about 1e-2 after ImageNet normalisation) would keep a nearly flat or
    clipped channel's JPEG noise from being blown up to unit variance, and survive FP16 arithmetic.
    """

    def __init__(self, mode: str = "none"):
        super().__init__()
        if mode not in INPUT_NORMS:
            raise ValueError(f"input_norm must be one of {INPUT_NORMS}, got {mode!r}")
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "none":
            return x
        mean, std = mean_std(x, (2, 3) if self.mode == "channel" else (1, 2, 3), keepdim=True)
        return (x - mean) / std

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"
