"""The 3D U-Net of DiffusionIQT (Kim et al. 2023, §2.2 and Appendix A.1) with its cross-batch mechanism.

The network maps the noisy image x_t concatenated with the condition x_c (B, 2, D, H, W) and the
noise level (log-SNR, (B,)) to the predicted clean image x̂ (B, 1, D, H, W) (x-parameterisation).

Cross-batch mechanism. The paper's mini-batch is a block of 27 = 3×3×3 adjacent, non-overlapping 32³
patches; self-attention takes its keys and values from all patches of the block, and every 3³
convolution pads each patch with the real neighbouring voxels instead of zeros. Inside the network
activations are kept, as in the paper, as that batch of patches (B·27, C, s, s, s), so GroupNorm and
squeeze-excitation statistics are per patch and run as native per-sample kernels. A `Layout` runs the
two operations that couple patches:
  * `BlockLayout` (used for inference and training) assembles the block for each 3³ convolution,
    convolves it with zero padding and splits it again: exactly the neighbour-padded per-patch
    convolution, with zeros only where the block ends; attention runs on the assembled block, so its
    key softmax and the keys·values product cover the tokens of all 27 patches;
  * a reference layout in the tests pads every patch with its neighbours' voxels (PatchGrid
    neighbours of `mrisr.inference.tiling.split_block`) and gathers keys/values across patches explicitly;
    both give the same output to float tolerance (tests/test_diffusioniqt_network.py).
Per-patch operations need no coupling: GroupNorm and SE statistics (per sample = per patch, as in the
public code; statistics over the whole 96³ block would NOT be identical and are not offered), 1×1
convolutions, and channel shuffles: space-to-depth 2×2×2 + 1×1 conv (run as the identical 2×2×2
stride-2 conv) and 1×1 conv + pixel shuffle never mix patches, since patch sides (32, 16) are even.
Not identical to the per-patch form: nothing, up to float rounding; versus the public code the token
up-sampling uses align_corners=False (local, so per-patch computable), dropout is omitted, the
bottleneck block also has squeeze-excitation, and skips are scaled by 1/√2 as the paper states.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from mrisr.errors import InputError
from mrisr.networks.config import CardConfig
from mrisr.networks.config import parameter_count as count_parameters  # noqa: F401 - public name of this module


@dataclass(frozen=True)
class IQTUNetConfig(CardConfig):
    """Widths and depths of the U-Net. Level l runs at 1/2^l of the patch side; the encoder of level l
    works at width (init_channels, *channels)[l] and its down-projection widens to channels[l]; the
    decoder and bottleneck work at channels[l] (public code layout: filters [64, 128, 256])."""

    in_channels: int = 2
    out_channels: int = 1
    init_channels: int = 64
    channels: tuple[int, ...] = (64, 128, 256)
    blocks: tuple[int, ...] = (2, 2, 2)  # residual blocks per level after the first
    attention: tuple[bool, ...] = (True, True, True)  # encoder transformer per level
    token_sizes: tuple[int, ...] = (16, 8, 4)  # depth-wise tokeniser kernel = stride per level
    deep_feature: bool = True  # bottleneck transformer + residual block
    final_block: bool = True  # residual block before the output conv (public code: final_resnet_block)
    heads: int = 8
    head_channels: int = 64  # embedding size C = heads × head_channels = 512 at the paper preset
    feedforward_mult: int = 2
    groups: int = 8
    se_reduction: int = 16
    fourier_features: int = 16
    parts: int = 3  # patches per block side: 3 → 27 patches

    def __post_init__(self) -> None:
        levels = len(self.channels)
        for name in ("blocks", "attention", "token_sizes"):
            if len(getattr(self, name)) != levels:
                raise InputError(f"network config {name}={getattr(self, name)} needs {levels} entries, one per level")
        widths = (self.init_channels, *self.channels)
        if any(w % self.groups for w in widths):
            raise InputError(f"network config widths {widths} must all be multiples of groups={self.groups}")
        if any(p < 1 or p & (p - 1) for p in self.token_sizes) or self.parts < 1:
            raise InputError(f"network config token_sizes={self.token_sizes} must be powers of two, parts >= 1")

    @property
    def levels(self) -> int:
        return len(self.channels)

    @property
    def time_channels(self) -> int:
        return 4 * self.init_channels

    @property
    def patch_multiple(self) -> int:
        """Patch sides must be multiples of this: down-sampling needs 2^(levels−1), level l's
        tokeniser needs the block side parts·s/2^l to be a multiple of token_sizes[l]."""
        tokens = [t * 2**level for level, t in enumerate(self.token_sizes)]
        return math.lcm(2 ** (self.levels - 1), *(n // math.gcd(n, self.parts) for n in tokens))


PRESETS: dict[str, IQTUNetConfig] = {
    # Paper / public-code widths, attention in all encoder levels and the bottleneck: N = 6³ = 216
    # tokens per 96³ block at every level, C = 8 heads × 64 = 512.
    "paper": IQTUNetConfig(),
    # Small enough to train on a CPU in hours and to run a whole head volume in minutes: 16 channels and
    # three residual blocks at full resolution (the cost there is dominated by per-voxel Mish/GroupNorm),
    # capacity at the coarser levels, no final block.
    "cpu": IQTUNetConfig(init_channels=16, channels=(16, 32, 96), blocks=(0, 0, 2), attention=(False, True, True),
                         token_sizes=(8, 4, 2), heads=4, head_channels=16, groups=4, se_reduction=8,
                         final_block=False),
}




class Layout(Protocol):
    """How the patch batch (B·parts³, C, s, s, s) couples patches: 3³ convolutions with neighbour
    padding (`conv`) and assembling blocks for attention (`merge`/`split`)."""

    def conv(self, conv: nn.Conv3d, x: torch.Tensor) -> torch.Tensor: ...
    def merge(self, x: torch.Tensor) -> torch.Tensor: ...
    def split(self, x: torch.Tensor) -> torch.Tensor: ...


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    kind = x.device.type
    return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else x.dtype


class BlockLayout:
    """Runs 3³ convolutions on the assembled block (B, C, parts·s, ...) in channels-last memory and the
    autocast dtype: one copy in, one copy out per convolution."""

    def __init__(self, parts: int = 3):
        self.parts = parts

    def _block_view(self, block: torch.Tensor) -> torch.Tensor:
        """(B, C, D, H, W) block → (B, a, a, a, C, s, s, s) view in patch order."""
        b, c, d = block.shape[:3]
        a = self.parts
        view = block.permute(0, 2, 3, 4, 1)
        for axis in (1, 3, 5):
            view = view.unflatten(axis, (a, d // a))
        return view.permute(0, 1, 3, 5, 7, 2, 4, 6)

    def merge(self, x: torch.Tensor) -> torch.Tensor:
        n, c, s = x.shape[:3]
        a = self.parts
        block = torch.empty((n // a**3, c, a * s, a * s, a * s), dtype=_compute_dtype(x), device=x.device,
                            memory_format=torch.channels_last_3d)
        self._block_view(block).copy_(x.view(n // a**3, a, a, a, c, s, s, s))
        return block

    def split(self, block: torch.Tensor) -> torch.Tensor:
        b, c, d = block.shape[:3]
        s = d // self.parts
        return self._block_view(block).reshape(b * self.parts**3, c, s, s, s)

    def conv(self, conv: nn.Conv3d, x: torch.Tensor) -> torch.Tensor:
        return self.split(conv(self.merge(x)))


class ChannelNorm(nn.Module):
    """Layer norm over channels at every voxel, gain only (the public code's ChanLayerNorm)."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x.permute(0, 2, 3, 4, 1), (x.shape[1],), self.weight, None, 1e-5)
        return y.permute(0, 4, 1, 2, 3)


def _accurate(x: torch.Tensor) -> torch.Tensor:
    """Half-precision tensors in float32 (softmax, FiLM affine); others unchanged."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def film_group_norm(norm: nn.GroupNorm, x: torch.Tensor, film: torch.Tensor | None) -> torch.Tensor:
    """GroupNorm per sample (= per patch) then FiLM x·(1 + scale) + shift; film (1 or N, 2C). One FiLM
    for the whole batch (all patches at one noise level) is folded into the GroupNorm affine."""
    if film is None:
        return norm(x)
    scale, shift = _accurate(film).chunk(2, dim=1)
    weight, bias = norm.weight * (1 + scale), norm.bias * (1 + scale) + shift
    if film.shape[0] == 1:
        return F.group_norm(x, norm.num_groups, weight[0], bias[0], norm.eps)
    y = F.group_norm(x, norm.num_groups, None, None, norm.eps)
    return torch.addcmul(bias.to(y.dtype)[..., None, None, None], y, weight.to(y.dtype)[..., None, None, None])


class ConvUnit(nn.Module):
    """GroupNorm (per patch) → optional FiLM → Mish → 3³ convolution with cross-batch padding."""

    def __init__(self, channels: int, out_channels: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels)
        self.conv = nn.Conv3d(channels, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor, layout: Layout, film: torch.Tensor | None = None) -> torch.Tensor:
        h = F.mish(film_group_norm(self.norm, x, film), inplace=not torch.is_grad_enabled())  # h is ours
        return layout.conv(self.conv, h)


class ResidualBlock(nn.Module):
    """2 × [GroupNorm → Mish → Conv3d 3³], time FiLM in the second, squeeze-excitation, 1×1 residual conv."""

    def __init__(self, channels: int, out_channels: int, config: IQTUNetConfig):
        super().__init__()
        self.unit1 = ConvUnit(channels, out_channels, config.groups)
        self.unit2 = ConvUnit(out_channels, out_channels, config.groups)
        self.film = nn.Sequential(nn.Mish(), nn.Linear(config.time_channels, 2 * out_channels))
        hidden = max(1, out_channels // config.se_reduction)
        self.excite = nn.Sequential(nn.Linear(out_channels, hidden, bias=False), nn.ReLU(),
                                    nn.Linear(hidden, out_channels, bias=False), nn.Sigmoid())
        self.skip = nn.Conv3d(channels, out_channels, 1) if channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, time: torch.Tensor, layout: Layout) -> torch.Tensor:
        """x (B·n, C, s, s, s) patches of B blocks; time (1 or B, time_channels)."""
        film = self.film(time)
        if film.shape[0] > 1:
            film = film.repeat_interleave(x.shape[0] // film.shape[0], dim=0)
        h = self.unit2(self.unit1(x, layout), layout, film)
        squeezed = h.flatten(2).sum(dim=2) / h[0, 0].numel()  # per patch (a flat sum is the fast reduction)
        gate = self.excite(squeezed)
        return torch.addcmul(self.skip(x), h, gate.to(h.dtype)[..., None, None, None])


class Tokens(nn.Module):
    """Depth-wise separable conv with kernel = stride = token size (tokeniser, Appendix A.1) and the way
    back: trilinear up-sampling + depth-wise separable 3³ conv."""

    def __init__(self, channels: int, size: int):
        super().__init__()
        self.size = size
        self.norm = ChannelNorm(channels)
        self.down = nn.Sequential(nn.Conv3d(channels, channels, size, stride=size, groups=channels),
                                  nn.Conv3d(channels, channels, 1))
        self.up = nn.Sequential(nn.Conv3d(channels, channels, 3, padding=1, groups=channels),
                                nn.Conv3d(channels, channels, 1), ChannelNorm(channels))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.norm(x))

    def restore(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.size > 1:
            tokens = F.interpolate(tokens, scale_factor=self.size, mode="trilinear", align_corners=False)
        return self.up(tokens)


class EfficientAttention(nn.Module):
    """Linear attention of Shen et al. (2021): keys·values first, so the cost is linear in the number
    of tokens; the keys and values come from all tokens of the block (all 27 patches: cross-batch)."""

    def __init__(self, channels: int, config: IQTUNetConfig, token_size: int):
        super().__init__()
        inner = config.heads * config.head_channels
        self.heads, self.scale = config.heads, config.head_channels**-0.5
        self.tokens = Tokens(channels, token_size)
        self.norm = ChannelNorm(channels)
        self.to_qkv = nn.ModuleList(
            nn.Sequential(nn.Conv3d(channels, inner, 1, bias=False),
                          nn.Conv3d(inner, inner, 3, padding=1, groups=inner, bias=False)) for _ in range(3))
        self.out = nn.Sequential(nn.Conv3d(inner, channels, 1, bias=False), ChannelNorm(channels))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """q, k, v (B, heads, d, N) → (B, heads, d, N): softmax(q) over d, softmax(k) over all N tokens."""
        q = q.softmax(dim=2) * self.scale
        context = torch.einsum("bhdn,bhen->bhde", k.softmax(dim=3), v)
        return torch.einsum("bhde,bhdn->bhen", context, q)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.norm(self.tokens.embed(x))
        grid = tokens.shape[2:]
        q, k, v = (f(tokens).flatten(2).unflatten(1, (self.heads, -1)) for f in self.to_qkv)
        out = self.attend(_accurate(q), _accurate(k), _accurate(v)).to(tokens.dtype).flatten(1, 2).unflatten(2, grid)
        return self.tokens.restore(self.out(F.mish(out)))


class Transformer(nn.Module):
    """x + attention(x), then x + feed-forward(x) (channel norm → 1×1 → GELU → channel norm → 1×1)."""

    def __init__(self, channels: int, config: IQTUNetConfig, token_size: int):
        super().__init__()
        hidden = channels * config.feedforward_mult
        self.attention = EfficientAttention(channels, config, token_size)
        self.feedforward = nn.Sequential(ChannelNorm(channels), nn.Conv3d(channels, hidden, 1, bias=False), nn.GELU(),
                                         ChannelNorm(hidden), nn.Conv3d(hidden, channels, 1, bias=False))

    def forward(self, x: torch.Tensor, layout: Layout) -> torch.Tensor:
        """x (B·n, C, s, s, s) patches → same; attention and feed-forward run on the assembled blocks."""
        block = layout.merge(x)
        block = block + self.attention(block)
        return layout.split(block + self.feedforward(block))


class PixelShuffleUp(nn.Module):
    """1×1 conv to 8·C_out → Mish → 3D pixel shuffle (×2 per axis); ICNR initialisation."""

    def __init__(self, channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv3d(channels, out_channels * 8, 1)
        with torch.no_grad():
            base = torch.empty(out_channels, channels, 1, 1, 1)
            nn.init.kaiming_uniform_(base)
            self.conv.weight.copy_(base.repeat_interleave(8, dim=0))
            self.conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.mish(self.conv(x))
        b, c8, d, h, w = y.shape
        y = y.view(b, c8 // 8, 2, 2, 2, d, h, w).permute(0, 1, 5, 2, 6, 3, 7, 4)
        return y.reshape(b, c8 // 8, 2 * d, 2 * h, 2 * w)


def space_to_depth_conv(channels: int, out_channels: int) -> nn.Conv3d:
    """Channel-shuffle down-sampling: space-to-depth 2×2×2 then a 1×1 conv is exactly a 2×2×2 conv of
    stride 2 (same weights, rearranged; see tests), which is what runs here."""
    return nn.Conv3d(channels, out_channels, 2, stride=2)


class FourierTime(nn.Module):
    """Learned Fourier features of the log-SNR → MLP (time embedding of every residual block)."""

    def __init__(self, features: int, channels: int):
        super().__init__()
        self.weights = nn.Parameter(torch.randn(features // 2))
        self.mlp = nn.Sequential(nn.Linear(features + 1, channels), nn.Mish(), nn.Linear(channels, channels))

    def forward(self, noise_level: torch.Tensor) -> torch.Tensor:
        x = noise_level.to(self.weights.dtype)[:, None]
        phase = 2 * math.pi * x * self.weights[None]
        return self.mlp(torch.cat((x, phase.sin(), phase.cos()), dim=1))


class EncoderLevel(nn.Module):
    def __init__(self, level: int, config: IQTUNetConfig):
        super().__init__()
        width = (config.init_channels, *config.channels)[level]
        self.first = ResidualBlock(width, width, config)
        self.transformer = Transformer(width, config, config.token_sizes[level]) if config.attention[level] else None
        self.rest = nn.ModuleList(ResidualBlock(width, width, config) for _ in range(config.blocks[level]))
        last = level == config.levels - 1
        out = config.channels[level]
        self.down = nn.Conv3d(width, out, 1) if last else space_to_depth_conv(width, out)

    def forward(self, x: torch.Tensor, time: torch.Tensor, layout: Layout) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.first(x, time, layout)
        if self.transformer is not None:
            x = x + self.transformer(x, layout)  # skip connection after the transformer block (§2.2)
        for block in self.rest:
            x = block(x, time, layout)
        return x, self.down(x)


class DecoderLevel(nn.Module):
    """Up-sampling (pixel shuffle) + skip (scaled by 1/√2) + residual blocks; level 0 has no up-sampling."""

    def __init__(self, level: int, config: IQTUNetConfig):
        super().__init__()
        widths = (config.init_channels, *config.channels)
        width, incoming = widths[level], config.channels[level]
        self.up = PixelShuffleUp(incoming, width) if level > 0 else None
        first_in = width + widths[level - 1] if level > 0 else incoming
        self.first = ResidualBlock(first_in, width, config)
        self.rest = nn.ModuleList(ResidualBlock(width, width, config) for _ in range(config.blocks[level]))

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None, time: torch.Tensor, layout: Layout) -> torch.Tensor:
        if self.up is not None:
            x = torch.cat((self.up(x), skip * 2**-0.5), dim=1)
        x = self.first(x, time, layout)
        for block in self.rest:
            x = block(x, time, layout)
        return x


class IQTUNet3D(nn.Module):
    """DiffusionIQT's U-Net: (x_t ⊕ x_c (B, 2, D, H, W), log-SNR (B,)) → x̂ (B, 1, D, H, W).

    D, H, W are blocks of config.parts patches per side (e.g. 96 = 3 × 32); patch sides must be
    multiples of config.patch_multiple. Pass `layout` only to run another (reference) layout.
    Under autocast the output has the autocast dtype and channels-last memory.
    """

    def __init__(self, config: IQTUNetConfig = IQTUNetConfig()):
        super().__init__()
        self.config = config
        width0 = config.init_channels
        self.time = FourierTime(config.fourier_features, config.time_channels)
        self.init_conv = nn.Conv3d(config.in_channels, width0, 3, padding=1)
        self.encoder = nn.ModuleList(EncoderLevel(level, config) for level in range(config.levels))
        bottom = config.channels[-1]
        self.middle_transformer = Transformer(bottom, config, config.token_sizes[-1]) if config.deep_feature else None
        self.middle = ResidualBlock(bottom, bottom, config)
        self.decoder = nn.ModuleList(DecoderLevel(level, config) for level in reversed(range(config.levels)))
        self.final = ResidualBlock(width0, width0, config) if config.final_block else None
        self.final_conv = nn.Conv3d(width0, config.out_channels, 1)

    def check_shape(self, x: torch.Tensor) -> None:
        parts, multiple = self.config.parts, self.config.patch_multiple
        if x.ndim != 5 or x.shape[1] != self.config.in_channels or len(set(x.shape[2:])) != 1 \
                or x.shape[2] % (parts * multiple):
            raise ValueError(f"input of shape {tuple(x.shape)}: expected (B, {self.config.in_channels}, S, S, S) "
                             f"with S a multiple of {parts} patches × {multiple} voxels")

    def forward(self, x: torch.Tensor, noise_level: torch.Tensor, layout: Layout | None = None) -> torch.Tensor:
        self.check_shape(x)
        layout = layout or BlockLayout(self.config.parts)
        if noise_level.numel() > 1 and bool((noise_level == noise_level[0]).all()):
            noise_level = noise_level[:1]  # one time embedding (and folded FiLM) for the whole batch
        time = self.time(noise_level)
        h = layout.conv(self.init_conv, layout.split(x))
        skips = []
        for level in self.encoder:
            skip, h = level(h, time, layout)
            skips.append(skip)
        if self.middle_transformer is not None:
            h = self.middle_transformer(h, layout)  # deep-feature extraction at the bottleneck
        h = self.middle(h, time, layout)
        for level, decoder in zip(reversed(range(len(skips))), self.decoder):
            h = decoder(h, skips[level - 1] if level > 0 else None, time, layout)
        if self.final is not None:
            h = self.final(h, time, layout)
        return layout.merge(self.final_conv(h))
