"""SR3-style conditional 2D U-Net (Saharia et al. 2022, §2.3 / Fig. A.1; the DDPM U-Net of Ho et al. 2020).

The network sees the noisy image and the condition stacked on the channel axis, in this order:

    input  = concat([x_t (B, C, H, W), y (B, C, H, W)], dim=1)   → (B, 2C, H, W)
    output = ε̂ or x̂₀ (B, C, H, W), as `config.prediction` says

where y is the low-resolution image already interpolated onto the output grid (SR3 "concatenates the
bicubic-upsampled LR image with x_t"). It is conditioned on the noise level √ᾱ (SR3 §2.4, following
WaveGrad), not on a step index, so one network serves any sub-sequence of steps (DDIM, partial diffusion).
It knows nothing of noise schedules: the diffusion layer passes √ᾱ_t.

Blocks as SR3: residual blocks of GroupNorm → SiLU → 3×3 conv (twice), the noise-level embedding added
between the two convs, residual sums scaled by 1/√2 (SR3's BigGAN-style blocks), self-attention at the
lowest resolution (middle block) and optionally at named levels, stride-2 conv down / nearest + conv up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mrisr.errors import InputError
from mrisr.networks.config import CardConfig, parameter_count  # noqa: F401 - parameter_count is part of this module's API

PREDICTIONS = ("eps", "x0")


@dataclass(frozen=True)
class SR3UNet2dConfig(CardConfig):
    """Sizes of the U-Net.

    `channel_multipliers` has one entry per resolution level (level 0 = full resolution); there are
    len − 1 stride-2 down-samplings, so slice sizes must be multiples of `pad_multiple`.
    `attention_levels` adds self-attention after the residual blocks of those levels (the middle
    block always has it). The defaults are the `paper` preset. `noise_level_scale` multiplies √ᾱ ∈ [0, 1] before the sinusoidal embedding.
    """

    base_channels: int = 64
    channel_multipliers: tuple[int, ...] = (1, 2, 4, 8, 16)
    res_blocks: int = 1
    attention_levels: tuple[int, ...] = ()
    norm_groups: int = 16
    dropout: float = 0.0
    image_channels: int = 1
    prediction: str = "eps"
    noise_level_scale: float = 1000.0

    def __post_init__(self) -> None:
        if self.prediction not in PREDICTIONS:
            raise InputError(f"prediction {self.prediction!r} is invalid: use one of {', '.join(PREDICTIONS)}")
        if not self.channel_multipliers or self.res_blocks < 1 or self.base_channels < 1:
            raise InputError(f"network sizes {self} are invalid: need channel multipliers, res_blocks >= 1")
        bad = [c for c in self.level_channels if c % self.norm_groups]
        if bad:
            raise InputError(f"norm_groups {self.norm_groups} must divide every level's channels {self.level_channels}")
        levels = range(len(self.channel_multipliers))
        if any(a not in levels for a in self.attention_levels):
            raise InputError(f"attention_levels {self.attention_levels} must be among levels {tuple(levels)}")

    @property
    def level_channels(self) -> tuple[int, ...]:
        return tuple(self.base_channels * m for m in self.channel_multipliers)

    @property
    def pad_multiple(self) -> int:
        """Slice sides must be multiples of this (2^number of down-samplings); pass it to SlicePlan."""
        return 2 ** (len(self.channel_multipliers) - 1)


PRESETS: dict[str, SR3UNet2dConfig] = {
    # PDM gives no SR3 sizes. Its first author's public fork of the SR3 reproduction (zeakey/Image-Super-
    # Resolution-via-Iterative-Refinement, config kai_t1w_sr_sr3_160_320: prostate MRI 160→320, the paper's
    # ×2 setting) uses 64 channels × (1, 2, 4, 8, 16), 1 residual block per level, GroupNorm(16), no dropout
    # and attention only in the middle block: 156.9 M parameters here. (The reproduction's standard 16→128
    # face config, 64 × (1, 2, 4, 8, 8), 2 blocks, attention at 1/8, dropout 0.2, is 99.5 M here.)
    "paper": SR3UNet2dConfig(),
    # CPU-sized: 16 channels × (1, 2, 4, 4), 1 residual block per level, attention only in the middle.
    "cpu": SR3UNet2dConfig(base_channels=16, channel_multipliers=(1, 2, 4, 4), res_blocks=1,
                           attention_levels=(), norm_groups=8, dropout=0.0),
}


def noise_level_embedding(noise_level: torch.Tensor, dim: int, scale: float) -> torch.Tensor:
    """Sinusoidal features of scale·√ᾱ: (B,) → (B, dim), frequencies 10⁻⁴ᵏ/ᵈⁱᵐ/² (Vaswani et al.)."""
    half = dim // 2
    frequencies = torch.exp(-math.log(1e4) * torch.arange(half, device=noise_level.device) / half)
    angles = scale * noise_level.float()[:, None] * frequencies[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class ResidualBlock(nn.Module):
    """GN → SiLU → conv3, + embedding, GN → SiLU → dropout → conv3; (h + skip)/√2."""

    def __init__(self, channels_in: int, channels_out: int, embedding_dim: int, groups: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(groups, channels_in), channels_in)
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, padding=1)
        self.embed = nn.Linear(embedding_dim, channels_out)
        self.norm2 = nn.GroupNorm(groups, channels_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, padding=1)
        self.skip = nn.Conv2d(channels_in, channels_out, 1) if channels_in != channels_out else nn.Identity()

    def forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.embed(embedding)[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return (h + self.skip(x)) / math.sqrt(2.0)


class SelfAttention(nn.Module):
    """Single-head self-attention over all pixels of a feature map, with a residual connection."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(batch, 3, channels, height * width).transpose(2, 3).unbind(1)
        h = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]
        return x + self.out(h.transpose(1, 2).reshape(batch, channels, height, width))


class Stage(nn.Module):
    """A residual block, optionally followed by self-attention."""

    def __init__(self, channels_in: int, channels_out: int, embedding_dim: int, config: SR3UNet2dConfig,
                 attention: bool):
        super().__init__()
        self.block = ResidualBlock(channels_in, channels_out, embedding_dim, config.norm_groups, config.dropout)
        self.attention = SelfAttention(channels_out, config.norm_groups) if attention else None

    def forward(self, x: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        x = self.block(x, embedding)
        return x if self.attention is None else self.attention(x)


def _groups(groups: int, channels: int) -> int:
    """The input of an up-path block is a concatenation; fall back to a divisor of its width."""
    return math.gcd(groups, channels)


class SR3UNet2d(nn.Module):
    """ε̂ or x̂₀ = f(x_t, y, √ᾱ_t): (B, C, H, W) ×2 and (B,) → (B, C, H, W); H, W multiples of pad_multiple."""

    def __init__(self, config: SR3UNet2dConfig = SR3UNet2dConfig()):
        super().__init__()
        self.config = config
        base, embedding_dim = config.base_channels, 4 * config.base_channels
        self.embedding = nn.Sequential(nn.Linear(base, embedding_dim), nn.SiLU(),
                                       nn.Linear(embedding_dim, embedding_dim))
        self.stem = nn.Conv2d(2 * config.image_channels, base, 3, padding=1)
        self.down, self.downsample, skips = nn.ModuleList(), nn.ModuleList(), [base]
        channels = base
        for level, width in enumerate(config.level_channels):
            attention = level in config.attention_levels
            for _ in range(config.res_blocks):
                self.down.append(Stage(channels, width, embedding_dim, config, attention))
                channels = width
                skips.append(channels)
            if level < len(config.level_channels) - 1:
                self.downsample.append(nn.Conv2d(channels, channels, 3, stride=2, padding=1))
                skips.append(channels)
        self.middle = nn.ModuleList([Stage(channels, channels, embedding_dim, config, True),
                                     Stage(channels, channels, embedding_dim, config, False)])
        self.up, self.upsample = nn.ModuleList(), nn.ModuleList()
        for level in reversed(range(len(config.level_channels))):
            width, attention = config.level_channels[level], level in config.attention_levels
            for _ in range(config.res_blocks + 1):
                self.up.append(Stage(channels + skips.pop(), width, embedding_dim, config, attention))
                channels = width
            if level > 0:
                self.upsample.append(nn.Conv2d(channels, channels, 3, padding=1))
        self.head = nn.Sequential(nn.GroupNorm(config.norm_groups, channels), nn.SiLU(),
                                  nn.Conv2d(channels, config.image_channels, 3, padding=1))

    def forward(self, x_t: torch.Tensor, condition: torch.Tensor, noise_level: torch.Tensor) -> torch.Tensor:
        """x_t, condition: (B, C, H, W) in the model range ([−1, 1]); noise_level: (B,) √ᾱ_t in [0, 1]."""
        self._check(x_t, condition, noise_level)
        cfg = self.config
        features = noise_level_embedding(noise_level, cfg.base_channels, cfg.noise_level_scale)
        embedding = self.embedding(features.to(x_t.dtype))
        h = self.stem(torch.cat([x_t, condition], dim=1))
        skips, blocks = [h], iter(self.down)
        for level in range(len(cfg.channel_multipliers)):
            for _ in range(cfg.res_blocks):
                h = next(blocks)(h, embedding)
                skips.append(h)
            if level < len(self.downsample):
                h = self.downsample[level](h)
                skips.append(h)
        for stage in self.middle:
            h = stage(h, embedding)
        blocks = iter(self.up)
        for index in range(len(cfg.channel_multipliers)):
            for _ in range(cfg.res_blocks + 1):
                h = next(blocks)(torch.cat([h, skips.pop()], dim=1), embedding)
            if index < len(self.upsample):
                h = self.upsample[index](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.head(h)

    def _check(self, x_t: torch.Tensor, condition: torch.Tensor, noise_level: torch.Tensor) -> None:
        m, c = self.config.pad_multiple, self.config.image_channels
        if x_t.shape != condition.shape or x_t.ndim != 4 or x_t.shape[1] != c:
            raise ValueError(f"x_t {tuple(x_t.shape)} and condition {tuple(condition.shape)} "
                             f"must both be (B, {c}, H, W)")
        if x_t.shape[-1] % m or x_t.shape[-2] % m:
            raise ValueError(f"slice size {tuple(x_t.shape[-2:])} must be a multiple of {m}: "
                             f"pad it (SlicePlan.pad_multiple)")
        if noise_level.shape != (x_t.shape[0],):
            raise ValueError(f"noise_level {tuple(noise_level.shape)} must be ({x_t.shape[0]},)")


def build(config: dict[str, Any] | SR3UNet2dConfig) -> SR3UNet2d:
    """A network from a config or its dict form (as stored in a model card)."""
    return SR3UNet2d(config if isinstance(config, SR3UNet2dConfig) else SR3UNet2dConfig.from_dict(config))


