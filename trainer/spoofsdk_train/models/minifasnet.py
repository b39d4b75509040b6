"""MiniFASNet V2 and V1SE: Minivision's published face anti-spoofing CNNs, as our reference and teacher.

The architecture follows Minivision's Silent-Face-Anti-Spoofing (Apache-2.0,
github.com/minivision-ai/Silent-Face-Anti-Spoofing, ``src/model_lib/MiniFASNet.py``). It is
written again here so that the two published checkpoints load with ``strict=True``; attribute
names therefore mirror the checkpoint keys (``conv_23``, ``conv_3.model.0.conv_dw`` ...).

Their conventions, which every user of these weights must reproduce:

- input: BGR, float32 in 0..255, **not** normalised, NCHW, 80x80;
- crop: the detector box scaled by 2.7 (V2) or 4.0 (V1SE) around its centre, the scale capped so
  the crop fits in the frame, shifted inside the frame (never padded), resized to 80x80;
- output: 3 logits, softmax; class 1 = live, classes 0 and 2 = two kinds of attack. The pair's
  decision averages the two softmaxes; P(live) = that average's class 1.

The checkpoints (state dicts with a ``module.`` prefix and an auxiliary Fourier-spectrum
generator ``FTGenerator`` used only in their training) are read from
``$SPOOFSDK_MINIFASNET_DIR`` or ``../shared/models/minifasnet`` beside the repository; they are
never committed to the project.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import register

__all__ = [
    "MiniFASNet",
    "MiniFASNetV2",
    "MiniFASNetV1SE",
    "CHECKPOINTS",
    "LIVE_CLASS",
    "CLASS_ORDER",
    "minifasnet_dir",
    "checkpoint_path",
    "classifier_state_dict",
    "load_minifasnet",
    "load_minifasnet_pair",
    "bgr_crops_to_tensor",
    "minifasnet_pair_probs",
    "minifasnet_pair_p_live",
    "PairTeacher",
]

LIVE_CLASS = 1
# Class names in output order, as the runtime metadata spells them: two kinds of attack around live.
CLASS_ORDER = ("spoof", "real", "spoof")
DIR_ENV = "SPOOFSDK_MINIFASNET_DIR"


@dataclass(frozen=True)
class Checkpoint:
    name: str  # registry name
    file: str  # file name in the MiniFASNet folder
    crop_scale: float  # detector box scale of the crop the model was trained on
    input_size: int


CHECKPOINTS: dict[str, Checkpoint] = {
    "minifasnet_v2": Checkpoint("minifasnet_v2", "2.7_80x80_MiniFASNetV2.pth", 2.7, 80),
    "minifasnet_v1se": Checkpoint("minifasnet_v1se", "4_0_0_80x80_MiniFASNetV1SE.pth", 4.0, 80),
}

# Channel plans of the two published variants (the authors' "keep" lists, pruned widths).
# V1SE uses the first, V2 the second.
_KEEP_V1 = (32, 32, 103, 103, 64, 13, 13, 64, 26, 26, 64, 13, 13, 64, 52, 52, 64, 231, 231, 128,
            154, 154, 128, 52, 52, 128, 26, 26, 128, 52, 52, 128, 26, 26, 128, 26, 26, 128, 308, 308,
            128, 26, 26, 128, 26, 26, 128, 512, 512)
_KEEP_V2 = (32, 32, 103, 103, 64, 13, 13, 64, 13, 13, 64, 13, 13, 64, 13, 13, 64, 231, 231, 128,
            231, 231, 128, 52, 52, 128, 26, 26, 128, 77, 77, 128, 26, 26, 128, 26, 26, 128, 308, 308,
            128, 26, 26, 128, 26, 26, 128, 512, 512)


class ConvBNPReLU(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.prelu = nn.PReLU(cout)

    def forward(self, x):
        return self.prelu(self.bn(self.conv(x)))


class ConvBN(nn.Module):
    """Convolution + BatchNorm without activation (linear bottleneck projection)."""

    def __init__(self, cin: int, cout: int, kernel: int | tuple[int, int] = 1, groups: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, 1, 0, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return self.bn(self.conv(x))


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels // reduction)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x):
        g = torch.relu(self.bn1(self.fc1(x.mean((2, 3), keepdim=True))))
        return x * torch.sigmoid(self.bn2(self.fc2(g)))


class DepthwiseBlock(nn.Module):
    """1x1 expand (PReLU), 3x3 depthwise (PReLU), 1x1 linear project; optional SE and residual."""

    def __init__(self, cin: int, hidden: int, cout: int, stride: int, residual: bool, se: bool = False):
        super().__init__()
        self.conv = ConvBNPReLU(cin, hidden, 1)
        self.conv_dw = ConvBNPReLU(hidden, hidden, 3, stride, groups=hidden)
        self.project = ConvBN(hidden, cout, 1)
        self.residual = residual
        # The authors gate with SE only inside residual blocks, on the projected branch.
        self.se_module = SqueezeExcite(cout, 4) if se else None

    def forward(self, x):
        y = self.project(self.conv_dw(self.conv(x)))
        if not self.residual:
            return y
        if self.se_module is not None:
            y = self.se_module(y)
        return x + y


class ResidualStack(nn.Module):
    def __init__(self, blocks: list[nn.Module]):
        super().__init__()
        self.model = nn.Sequential(*blocks)

    def forward(self, x):
        return self.model(x)


class MiniFASNet(nn.Module):
    """MiniFASNet from a channel plan ``keep`` (49 widths); ``se`` puts SE on each stack's last block."""

    def __init__(self, keep: tuple[int, ...], input_size: int = 80, embedding_size: int = 128,
                 num_classes: int = 3, drop_p: float = 0.2, se: bool = False):
        super().__init__()
        k = keep
        # The last depthwise conv covers the whole stride-16 map: ceil(input / 16).
        k6 = (input_size + 15) // 16
        self.conv1 = ConvBNPReLU(3, k[0], 3, 2)
        self.conv2_dw = ConvBNPReLU(k[0], k[1], 3, 1, groups=k[1])
        self.conv_23 = DepthwiseBlock(k[1], k[2], k[4], stride=2, residual=False)
        self.conv_3 = self._stack(k, 4, 4, se)
        self.conv_34 = DepthwiseBlock(k[16], k[17], k[19], stride=2, residual=False)
        self.conv_4 = self._stack(k, 19, 6, se)
        self.conv_45 = DepthwiseBlock(k[37], k[38], k[40], stride=2, residual=False)
        self.conv_5 = self._stack(k, 40, 2, se)
        self.conv_6_sep = ConvBNPReLU(k[46], k[47], 1)
        self.conv_6_dw = ConvBN(k[47], k[48], (k6, k6), groups=k[48])
        self.linear = nn.Linear(k[48], embedding_size, bias=False)
        self.bn = nn.BatchNorm1d(embedding_size)
        self.drop = nn.Dropout(drop_p)
        self.prob = nn.Linear(embedding_size, num_classes, bias=False)

    @staticmethod
    def _stack(k: tuple[int, ...], start: int, n: int, se: bool) -> ResidualStack:
        # Block i reads k[start+3i] channels, expands to k[start+3i+1] (== k[start+3i+2]) and
        # projects back to k[start+3i+3] (== k[start], the residual width).
        blocks = []
        for i in range(n):
            j = start + 3 * i
            blocks.append(DepthwiseBlock(k[j], k[j + 1], k[j + 3], stride=1, residual=True, se=se and i == n - 1))
        return ResidualStack(blocks)

    def forward(self, x):
        x = self.conv2_dw(self.conv1(x))
        x = self.conv_3(self.conv_23(x))
        x = self.conv_4(self.conv_34(x))
        x = self.conv_5(self.conv_45(x))
        x = self.conv_6_dw(self.conv_6_sep(x)).flatten(1)
        x = self.drop(self.bn(self.linear(x)))
        return self.prob(x)


def MiniFASNetV2(input_size: int = 80, num_classes: int = 3, dropout: float = 0.2) -> MiniFASNet:
    return MiniFASNet(_KEEP_V2, input_size, num_classes=num_classes, drop_p=dropout, se=False)


def MiniFASNetV1SE(input_size: int = 80, num_classes: int = 3, dropout: float = 0.75) -> MiniFASNet:
    return MiniFASNet(_KEEP_V1, input_size, num_classes=num_classes, drop_p=dropout, se=True)


@register("minifasnet_v2", output="logitsN", default_input_size=80, class_order=CLASS_ORDER,
          description="Minivision MiniFASNetV2 (Apache-2.0), 0.43 M params; BGR 0..255, crop 2.7")
def _build_v2(input_size: int = 80, num_classes: int = 3, dropout: float = 0.2, **_) -> MiniFASNet:
    return MiniFASNetV2(input_size, num_classes, dropout)


@register("minifasnet_v1se", output="logitsN", default_input_size=80, class_order=CLASS_ORDER,
          description="Minivision MiniFASNetV1SE (Apache-2.0), 0.43 M params; BGR 0..255, crop 4.0")
def _build_v1se(input_size: int = 80, num_classes: int = 3, dropout: float = 0.75, **_) -> MiniFASNet:
    return MiniFASNetV1SE(input_size, num_classes, dropout)


def minifasnet_dir() -> Path:
    """Folder of the published checkpoints: $SPOOFSDK_MINIFASNET_DIR, else ``../shared/models/minifasnet``."""
    env = os.environ.get(DIR_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[4] / "shared" / "models" / "minifasnet"


def checkpoint_path(name: str) -> Path:
    if name not in CHECKPOINTS:
        raise KeyError(f"unknown MiniFASNet {name!r}; known: {', '.join(CHECKPOINTS)}")
    return minifasnet_dir() / CHECKPOINTS[name].file


def classifier_state_dict(raw: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The classifier's weights from a published checkpoint: ``module.`` stripped, FTGenerator set aside."""
    out = {}
    for key, value in raw.items():
        key = key.removeprefix("module.")
        if key.startswith("FTGenerator."):
            continue
        out[key] = value
    return out


def _name_of(path: Path) -> str:
    for name, ck in CHECKPOINTS.items():
        if path.name == ck.file:
            return name
    if "V1SE" in path.name:
        return "minifasnet_v1se"
    if "V2" in path.name:
        return "minifasnet_v2"
    raise ValueError(f"cannot tell the MiniFASNet variant of {path}; name it 'minifasnet_v2' or 'minifasnet_v1se'")


def load_minifasnet(path_or_name: str | os.PathLike) -> MiniFASNet:
    """A published MiniFASNet checkpoint loaded strictly into our module, in eval mode.

    ``path_or_name`` is a checkpoint file, or a registry name (``minifasnet_v2``,
    ``minifasnet_v1se``) looked up in :func:`minifasnet_dir`.
    """
    if str(path_or_name) in CHECKPOINTS:
        name, path = str(path_or_name), checkpoint_path(str(path_or_name))
    else:
        path = Path(path_or_name)
        name = _name_of(path)
    if not path.is_file():
        raise FileNotFoundError(f"MiniFASNet checkpoint not found: {path} (set ${DIR_ENV})")
    raw = torch.load(path, map_location="cpu", weights_only=True)
    model = MiniFASNetV2() if name == "minifasnet_v2" else MiniFASNetV1SE()
    model.load_state_dict(classifier_state_dict(raw), strict=True)
    return model.eval()


_PAIR: tuple[MiniFASNet, MiniFASNet] | None = None


def load_minifasnet_pair() -> tuple[MiniFASNet, MiniFASNet]:
    """(V2, V1SE), loaded once per process."""
    global _PAIR
    if _PAIR is None:
        _PAIR = (load_minifasnet("minifasnet_v2"), load_minifasnet("minifasnet_v1se"))
    return _PAIR


def bgr_crops_to_tensor(bgr_crops: np.ndarray) -> torch.Tensor:
    """uint8 (or float) N x H x W x 3 BGR crops -> float32 N x 3 x H x W in 0..255, as the authors feed them."""
    a = np.asarray(bgr_crops)
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4 or a.shape[-1] != 3:
        raise ValueError(f"expected N x H x W x 3 BGR crops, got shape {a.shape}")
    return torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2), dtype=np.float32))


@torch.no_grad()
def minifasnet_pair_probs(bgr_crops_80: np.ndarray, batch_size: int = 256, models=None) -> np.ndarray:
    """The pair's mean softmax over the 3 classes (spoof, live, spoof), float64 N x 3.

    ``bgr_crops_80``: uint8 N x 80 x 80 x 3 BGR crops (already cropped by the caller). Both
    models see the same crops here; for the authors' exact protocol each model gets its own crop
    scale (2.7 / 4.0) - see the runtime's ``shift_cap`` crop policy. ``models`` overrides the pair
    (e.g. one model alone).
    """
    x = bgr_crops_to_tensor(bgr_crops_80)
    if x.shape[2:] != (80, 80):
        raise ValueError(f"MiniFASNet expects 80x80 crops, got {tuple(x.shape[2:])}")
    models = load_minifasnet_pair() if models is None else models
    out = np.empty((len(x), 3), dtype=np.float64)
    for i in range(0, len(x), batch_size):
        out[i:i + batch_size] = pair_softmax(models, x[i:i + batch_size]).double().numpy()
    return out


def pair_softmax(models, x: torch.Tensor) -> torch.Tensor:
    """The mean of the models' softmaxes for a batch of the authors' input (BGR 0..255, 80x80): N x 3."""
    return sum(torch.softmax(m(x), 1) for m in models) / len(models)


def minifasnet_pair_p_live(bgr_crops_80: np.ndarray, batch_size: int = 256, models=None) -> np.ndarray:
    """P(live) of the MiniFASNet pair: the mean of V2's and V1SE's softmaxes, class 1; float64 (N,).

    Same input and ``models`` as :func:`minifasnet_pair_probs`.
    """
    return minifasnet_pair_probs(bgr_crops_80, batch_size, models)[:, LIVE_CLASS]


class PairTeacher(nn.Module):
    """The MiniFASNet pair's P(live) for a batch in a student's input format: online distillation.

    The training loop hands the teacher the very batch the student sees (augmented, normalised,
    the student's colour order and size), so every draw gets its own soft target. This undoes the
    student's normalisation (``x * std + mean`` on [0, 1] pixels, clipped as a uint8 image would
    be), turns RGB into the authors' BGR 0..255 and resizes to 80 x 80 (bilinear, half-pixel
    centres: OpenCV's INTER_LINEAR, as :func:`minifasnet_pair_p_live` does for cached crops).
    Frozen and always in eval mode; ``train()`` leaves it there.
    """

    def __init__(self, color_order: str, mean, std, models: tuple[MiniFASNet, MiniFASNet] | None = None):
        super().__init__()
        if color_order.upper() not in ("RGB", "BGR"):
            raise ValueError(f"colour order must be RGB or BGR, got {color_order!r}")
        # Own copies (not the process-wide pair): moving the teacher to a GPU must not move that one.
        pair = models if models is not None else (load_minifasnet("minifasnet_v2"), load_minifasnet("minifasnet_v1se"))
        self.pair = nn.ModuleList(pair)
        for p in self.pair.parameters():
            p.requires_grad_(False)
        self.flip_to_bgr = color_order.upper() == "RGB"
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.eval()

    def train(self, mode: bool = True) -> "PairTeacher":
        return super().train(False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        img = ((x.float() * self.std + self.mean) * 255.0).clamp_(0.0, 255.0)
        if self.flip_to_bgr:
            img = img.flip(1)
        if img.shape[-2:] != (80, 80):
            img = nn.functional.interpolate(img, size=(80, 80), mode="bilinear", align_corners=False)
        return pair_softmax(self.pair, img)[:, LIVE_CLASS]
