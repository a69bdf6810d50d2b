"""A small 2D U-Net that labels brain tissue (background, CSF, GM, WM) slice by slice.

    input  = one normalised slice (B, 1, H, W), H and W multiples of 2^(levels − 1)
    output = per-class logits (B, classes, H, W)

Blocks: two 3×3 conv → GroupNorm → SiLU per level, stride-2 max-pool down, bilinear up + skip
concatenation. Small on purpose: it must label a whole volume along three planes in seconds on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mrisr.errors import InputError
from mrisr.networks.config import CardConfig


@dataclass(frozen=True)
class TissueUNetConfig(CardConfig):
    """Widths per resolution level (level 0 = full resolution) and the number of output classes."""

    channels: tuple[int, ...] = (8, 16, 32, 64)
    classes: int = 4
    in_channels: int = 1
    norm_groups: int = 4

    def __post_init__(self) -> None:
        if len(self.channels) < 2 or any(c % self.norm_groups for c in self.channels) or self.classes < 2:
            raise InputError(f"tissue U-Net config {self} is invalid: need >= 2 levels, widths divisible by "
                             f"norm_groups and >= 2 classes")

    @property
    def pad_multiple(self) -> int:
        return 2 ** (len(self.channels) - 1)


PRESETS = {"cpu": TissueUNetConfig(), "tiny": TissueUNetConfig(channels=(4, 8), norm_groups=2)}


def _double_conv(cin: int, cout: int, groups: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(groups, cout), nn.SiLU(),
        nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(groups, cout), nn.SiLU())


class TissueUNet2d(nn.Module):
    """Encoder–decoder with skip connections; `forward` returns logits."""

    def __init__(self, config: TissueUNetConfig = TissueUNetConfig()):
        super().__init__()
        self.config = config
        widths, groups = config.channels, config.norm_groups
        self.down = nn.ModuleList([_double_conv(config.in_channels, widths[0], groups)]
                                  + [_double_conv(a, b, groups) for a, b in zip(widths, widths[1:])])
        self.up = nn.ModuleList([_double_conv(b + a, a, groups) for a, b in zip(widths[:-1], widths[1:])])
        self.head = nn.Conv2d(widths[0], config.classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % self.config.pad_multiple or x.shape[-2] % self.config.pad_multiple:
            raise InputError(f"slice size {tuple(x.shape[-2:])} is invalid: must be a multiple of "
                             f"{self.config.pad_multiple}")
        skips = []
        for index, block in enumerate(self.down):
            x = block(x if index == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        x = skips.pop()
        for block in reversed(self.up):
            skip = skips.pop()
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([skip, x], dim=1))
        return self.head(x)
