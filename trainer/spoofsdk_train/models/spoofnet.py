"""SpoofNet: the plain five-block CNN of the first reference system (see shared/SEEDS.md).

224x224 RGB in, two logits out in class order (spoof, real). With BatchNorm after both
convolutions of every block it has exactly 4,881,442 parameters (a test asserts it).
"""
from __future__ import annotations

from torch import nn

from . import register

__all__ = ["SpoofNet"]


def _block(cin: int, cout: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Dropout2d(dropout),
    )


class SpoofNet(nn.Module):
    def __init__(self, block_dropout: tuple[float, ...] = (0.1, 0.1, 0.2, 0.2, 0.3), head_dropout: tuple[float, float] = (0.5, 0.3)):
        super().__init__()
        widths = (3, 32, 64, 128, 256, 512)
        self.features = nn.Sequential(*[_block(widths[i], widths[i + 1], block_dropout[i]) for i in range(5)])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(512, 256),
            nn.BatchNorm1d(256),
            nn.ReLU(inplace=True),
            nn.Dropout(head_dropout[0]),
            nn.Linear(256, 128),
            nn.BatchNorm1d(128),
            nn.ReLU(inplace=True),
            nn.Dropout(head_dropout[1]),
            nn.Linear(128, 2),
        )

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)).flatten(1))


@register("spoofnet", output="logits2", default_input_size=224, description="SEEDS SpoofNet, 5 conv blocks, 4.88 M params")
def build_spoofnet(**kwargs) -> SpoofNet:
    return SpoofNet(**kwargs)
