"""A 2D U-Net with Swin-Transformer stages in place of attention (the Res-SRDiff / ResShift backbone).

The network knows nothing of noise schedules: it maps (x_t, t, y) to x̂. Input channels are
concat(x_t, y): channels [0, C) hold x_t and [C, 2C) hold the condition y (the LR image on the HR grid),
C = `image_channels`; the output x̂ has C channels (x₀-parameterisation). The step index t enters as a
sinusoidal embedding followed by an MLP, added inside every residual block.

Levels of the U-Net are ADM-style (GroupNorm → SiLU → 3×3 conv residual blocks, strided-conv down,
nearest + conv up). At the levels listed in `swin_levels` the first residual block of the encoder and
of the decoder is followed by a Swin stage; the middle block is ResBlock → Swin stage → ResBlock. A
Swin stage projects to `swin_embed_dim` channels (1×1 conv), runs `swin_depth` blocks alternating
regular and shifted windows (Liu et al. 2021: window self-attention with a relative position bias;
shifted windows by a cyclic roll of half a window, with an attention mask that keeps the wrapped-around
regions apart), and projects back; a map that is not a whole number of windows is reflect-padded to
one inside the stage and cropped after it (as SwinIR pads its input), so slices need padding only to
`pad_multiple` = p × 2^(levels − 1) for the U-Net's resampling, not to p × window × 2^(levels − 1)
(which would, e.g., pad 200² MNI slices to 256² for the CPU preset). With `patch_size` p > 1 the stem
pixel-unshuffles the input (p × p space-to-depth, lossless) and the output is pixel-shuffled back, so
the U-Net runs at 1/p resolution (the CPU preset).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from mrisr.errors import InputError
from mrisr.networks.config import CardConfig, parameter_count  # noqa: F401 - parameter_count is part of this module's API


@dataclass(frozen=True)
class SwinUNetConfig(CardConfig):
    """Sizes of the Swin U-Net; `PRESETS` holds the named ones."""

    image_channels: int = 1
    model_channels: int = 64
    channel_mult: tuple[int, ...] = (1, 2, 4, 8)
    num_res_blocks: int = 2
    swin_levels: tuple[int, ...] = (2, 3)
    swin_embed_dim: int = 96
    swin_depth: int = 2
    num_heads: int = 1
    window_size: int = 8
    patch_size: int = 1
    mlp_ratio: float = 2.0
    norm_groups: int = 32
    dropout: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "channel_mult", tuple(self.channel_mult))
        object.__setattr__(self, "swin_levels", tuple(self.swin_levels))
        widths = [self.model_channels * m for m in self.channel_mult]
        rules = [
            (len(self.channel_mult) >= 1 and self.num_res_blocks >= 1, "channel_mult/num_res_blocks",
             (self.channel_mult, self.num_res_blocks), "need at least one level and one block per level"),
            (all(w % self.norm_groups == 0 for w in widths), "norm_groups", self.norm_groups,
             f"must divide every level width {widths}"),
            (all(0 <= s < len(self.channel_mult) for s in self.swin_levels), "swin_levels", self.swin_levels,
             f"must be level indices in 0..{len(self.channel_mult) - 1}"),
            (self.swin_depth >= 2 and self.swin_depth % 2 == 0, "swin_depth", self.swin_depth,
             "must be an even number >= 2 (regular + shifted window pairs)"),
            (self.swin_embed_dim % self.num_heads == 0 and self.swin_embed_dim % self.norm_groups == 0,
             "swin_embed_dim", self.swin_embed_dim, "must be divisible by num_heads and norm_groups"),
            (self.window_size >= 2 and self.window_size % 2 == 0, "window_size", self.window_size,
             "must be an even number >= 2"),
            (self.patch_size >= 1, "patch_size", self.patch_size, "must be >= 1 (1 = full resolution)"),
        ]
        for ok, name, value, rule in rules:
            if not ok:
                raise InputError(f"Swin U-Net {name}={value!r} is invalid: {rule}")

    @property
    def pad_multiple(self) -> int:
        """H and W must be multiples of this: patch × 2^(levels − 1), for the U-Net's down- and up-sampling.
        (Swin stages pad their maps to whole windows themselves: `window_multiple` is not needed.)"""
        return self.patch_size * 2 ** (len(self.channel_mult) - 1)

    @property
    def window_multiple(self) -> int:
        """patch × window × 2^(levels − 1): sizes at which no Swin stage needs to pad."""
        return self.pad_multiple * self.window_size


PRESETS: dict[str, SwinUNetConfig] = {
    # The public Res-SRDiff brain configuration (model_channels 64, mult 1-2-4-8, 2 blocks, Swin embed 96,
    # depth 2, 1 head, window 8, MLP ratio 2), with Swin stages at the two coarsest levels as well as in
    # the middle (the public code matches its attention resolutions against absolute sizes, so at 384²
    # only its middle block has one; the stages add < 1 % parameters).
    "paper": SwinUNetConfig(),
    # CPU (0.85 M parameters, 1.7 GMAC per 256² slice): a 2×2 pixel-unshuffle stem (lossless
    # space-to-depth; the output is pixel-shuffled back) so the U-Net runs at half resolution, widths
    # 16-32-64, one block per level, Swin stages (2 heads, embed 64) at the coarsest level and in the middle.
    "cpu": SwinUNetConfig(model_channels=16, channel_mult=(1, 2, 4), num_res_blocks=1, swin_levels=(2,),
                          swin_embed_dim=64, swin_depth=2, num_heads=2, norm_groups=8, patch_size=2),
}


def preset(name: str, **overrides) -> SwinUNetConfig:
    """The named configuration, optionally with some fields replaced; InputError for an unknown name."""
    if name not in PRESETS:
        raise InputError(f"unknown Swin U-Net preset {name!r}: choose one of {', '.join(PRESETS)}")
    return replace(PRESETS[name], **overrides)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding (B,) → (B, dim) of the step index (Vaswani et al. 2017; Ho et al. 2020)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    return F.pad(embedding, (0, dim % 2))


class ResBlock(nn.Module):
    """GN → SiLU → conv → + time → GN → SiLU → dropout → conv (zero-initialised), plus a skip path."""

    def __init__(self, channels: int, out_channels: int, emb_channels: int, groups: int, dropout: float):
        super().__init__()
        self.in_layers = nn.Sequential(nn.GroupNorm(groups, channels), nn.SiLU(),
                                       nn.Conv2d(channels, out_channels, 3, padding=1))
        self.emb = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels))
        out_conv = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        nn.init.zeros_(out_conv.weight)
        nn.init.zeros_(out_conv.bias)
        self.out_layers = nn.Sequential(nn.GroupNorm(groups, out_channels), nn.SiLU(), nn.Dropout(dropout), out_conv)
        self.skip = nn.Identity() if channels == out_channels else nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x) + self.emb(emb)[:, :, None, None].to(x.dtype)
        return self.skip(x) + self.out_layers(h)


def _to_windows(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, C, H, W) → (B, nW, window², C), windows in row-major order."""
    b, c, h, w = x.shape
    x = x.view(b, c, h // window, window, w // window, window).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(b, (h // window) * (w // window), window * window, c)


def _from_windows(windows: torch.Tensor, window: int, height: int, width: int) -> torch.Tensor:
    """(B, nW, window², C) → (B, C, H, W), inverse of `_to_windows`."""
    b, _, _, c = windows.shape
    x = windows.view(b, height // window, width // window, window, window, c).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(b, c, height, width)


def shift_mask(height: int, width: int, window: int, shift: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Additive mask (nW, window², window²) for shifted windows: 0 within a region, −inf across the
    regions that the cyclic roll brought together (the wrapped-around bottom and right bands)."""
    def bands(n: int) -> torch.Tensor:
        band = torch.zeros(n, dtype=torch.long, device=device)
        band[n - window:n - shift] = 1
        band[n - shift:] = 2
        return band

    labels = (bands(height)[:, None] * 3 + bands(width)[None, :]).to(torch.float32)
    labels = _to_windows(labels[None, None], window)[0, :, :, 0]
    same = labels[:, :, None] == labels[:, None, :]
    return torch.zeros(same.shape, device=device).masked_fill(~same, float("-inf"))


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows with a learned relative position bias ((2w−1)² × heads)."""

    def __init__(self, dim: int, window: int, heads: int):
        super().__init__()
        self.heads, self.window = heads, window
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        nn.init.trunc_normal_(self.bias_table, std=0.02)
        coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
        relative = coords[:, :, None] - coords[:, None, :] + window - 1
        self.register_buffer("bias_index", relative[0] * (2 * window - 1) + relative[1], persistent=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x (B, nW, N, C), mask (nW, N, N) or None → (B, nW, N, C)."""
        b, nw, n, c = x.shape
        q, k, v = self.qkv(x).view(b, nw, n, 3, self.heads, c // self.heads).permute(3, 0, 1, 4, 2, 5)
        bias = self.bias_table[self.bias_index].permute(2, 0, 1)  # (heads, N, N)
        bias = bias[None] if mask is None else bias[None] + mask[:, None]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        return self.proj(out.transpose(2, 3).reshape(b, nw, n, c))


class SwinBlock(nn.Module):
    """Pre-norm (GroupNorm) window attention and a 1×1-conv MLP, each residual; `shift` > 0 rolls the map."""

    def __init__(self, dim: int, heads: int, window: int, shift: int, mlp_ratio: float, groups: int):
        super().__init__()
        self.window, self.shift = window, shift
        self.norm1, self.norm2 = nn.GroupNorm(groups, dim), nn.GroupNorm(groups, dim)
        self.attn = WindowAttention(dim, window, heads)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Conv2d(dim, hidden, 1), nn.GELU(), nn.Conv2d(hidden, dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, _, height, width = x.shape
        h = self.norm1(x)
        mask = None
        if self.shift:
            h = torch.roll(h, shifts=(-self.shift, -self.shift), dims=(2, 3))
            mask = shift_mask(height, width, self.window, self.shift, x.device)
        h = _from_windows(self.attn(_to_windows(h, self.window), mask), self.window, height, width)
        if self.shift:
            h = torch.roll(h, shifts=(self.shift, self.shift), dims=(2, 3))
        x = x + h
        return x + self.mlp(self.norm2(x))


class SwinStage(nn.Module):
    """1×1 conv to the embedding width, pairs of regular + shifted Swin blocks, 1×1 conv back; residual."""

    def __init__(self, channels: int, config: SwinUNetConfig):
        super().__init__()
        dim, window = config.swin_embed_dim, config.window_size
        self.embed = nn.Conv2d(channels, dim, 1)
        self.blocks = nn.Sequential(*[
            SwinBlock(dim, config.num_heads, window, 0 if i % 2 == 0 else window // 2, config.mlp_ratio,
                      config.norm_groups)
            for i in range(config.swin_depth)
        ])
        self.unembed = nn.Conv2d(dim, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W), any H, W: padded (reflect) to whole windows inside, cropped back."""
        height, width = x.shape[-2:]
        window = self.blocks[0].window
        extra = (-height % window, -width % window)
        padded = x
        if any(extra):
            mode = "reflect" if extra[0] < height and extra[1] < width else "replicate"
            padded = F.pad(x, (0, extra[1], 0, extra[0]), mode=mode)
        return x + self.unembed(self.blocks(self.embed(padded)))[..., :height, :width]


class _Stage(nn.Module):
    """One residual block, optionally followed by a Swin stage."""

    def __init__(self, channels: int, out_channels: int, emb: int, config: SwinUNetConfig, swin: bool):
        super().__init__()
        self.res = ResBlock(channels, out_channels, emb, config.norm_groups, config.dropout)
        self.swin = SwinStage(out_channels, config) if swin else None

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        x = self.res(x, emb)
        return x if self.swin is None else self.swin(x)


class SwinUNet2d(nn.Module):
    """g(x_t, y, t) → x̂ for 2D slices; see the module docstring for the layout."""

    def __init__(self, config: SwinUNetConfig):
        super().__init__()
        self.config = config
        c, emb = config.model_channels, 4 * config.model_channels
        self.time_embed = nn.Sequential(nn.Linear(c, emb), nn.SiLU(), nn.Linear(emb, emb))
        widths = [c * m for m in config.channel_mult]
        patch = config.patch_size
        self.stem = nn.Sequential(nn.PixelUnshuffle(patch),
                                  nn.Conv2d(2 * config.image_channels * patch**2, widths[0], 3, padding=1))
        self.encoder, skips, ch = nn.ModuleList(), [widths[0]], widths[0]
        for level, width in enumerate(widths):
            for j in range(config.num_res_blocks):
                self.encoder.append(_Stage(ch, width, emb, config, level in config.swin_levels and j == 0))
                ch = width
                skips.append(ch)
            if level < len(widths) - 1:
                self.encoder.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skips.append(ch)
        self.middle = nn.ModuleList([_Stage(ch, ch, emb, config, True), _Stage(ch, ch, emb, config, False)])
        self.decoder = nn.ModuleList()
        for level in reversed(range(len(widths))):
            for j in range(config.num_res_blocks + 1):
                swin = level in config.swin_levels and j == 0
                self.decoder.append(_Stage(ch + skips.pop(), widths[level], emb, config, swin))
                ch = widths[level]
            if level > 0:
                self.decoder.append(nn.Sequential(nn.Upsample(scale_factor=2.0, mode="nearest"),
                                                  nn.Conv2d(ch, ch, 3, padding=1)))
        self.out = nn.Sequential(nn.GroupNorm(config.norm_groups, ch), nn.SiLU(),
                                 nn.Conv2d(ch, config.image_channels * patch**2, 3, padding=1), nn.PixelShuffle(patch))

    @property
    def pad_multiple(self) -> int:
        return self.config.pad_multiple

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """x_t, condition (B, C, H, W), H and W multiples of `pad_multiple`; t (B,) step indices → x̂ (B, C, H, W)."""
        if x_t.shape[-2] % self.pad_multiple or x_t.shape[-1] % self.pad_multiple:
            raise ValueError(f"slice size {tuple(x_t.shape[-2:])} is not a multiple of {self.pad_multiple}: pad it")
        emb = self.time_embed(timestep_embedding(t, self.config.model_channels).to(x_t.dtype))
        h = self.stem(torch.cat([x_t, condition], dim=1))
        skips = [h]
        for block in self.encoder:
            h = block(h, emb) if isinstance(block, _Stage) else block(h)
            skips.append(h)
        for block in self.middle:
            h = block(h, emb)
        for block in self.decoder:
            h = block(torch.cat([h, skips.pop()], dim=1), emb) if isinstance(block, _Stage) else block(h)
        return self.out(h)


def build(config: dict | SwinUNetConfig) -> SwinUNet2d:
    """A network from a config or a model card's "network" dict (lists become tuples)."""
    return SwinUNet2d(SwinUNetConfig.from_dict(config) if isinstance(config, dict) else config)


