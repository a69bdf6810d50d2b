"""PLWformer: DiffMSR's prior-guided large-window Transformer decoder (Li et al., CVPR 2024, §3.2).

The decoder works on a feature grid `unshuffle` times coarser than the output grid: the condition
(the LR target already on the output grid) and the HR reference are pixel-unshuffled and embedded by
3×3 convolutions, fused by CATL cross-attention (queries from the target, keys/values from the
reference), refined by PLWformer layers and turned back into an image by a reconstruction module
plus a global residual on the condition.

Every PLWformer block is modulated by the latent prior Z ∈ R^{4Ĉ} (Eq. 2):
F' = L(Z) ⊙ LN(F) + L(Z), before both the prior-guided large-window self-attention (PL-MSA, Eq. 3:
windows of L×L queries attend to keys/values whose r×r neighbourhoods were permuted into channels,
SRFormer-style, with an aligned relative position bias) and the gated depth-wise-conv feed-forward
(PG-FFN, Eq. 4). `use_reference=False` is the paper's "w/o reference" ablation (Table 2): no
reference embedding and no CATL; the target features go straight into the PLWformer layers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mrisr.errors import InputError
from mrisr.networks.padding import pad_to_multiple

UPSAMPLERS = ("progressive", "subpixel")


def _require(ok: bool, field: str, value: object, rule: str) -> None:
    if not ok:
        raise InputError(f"PLWformer {field}={value!r} is invalid: {rule}")


@dataclass(frozen=True)
class PLWformerConfig:
    """Sizes of the decoder; the paper's §4.2 values are the defaults (C = 64, window 16, k = 2)."""

    channels: int = 64  # C
    layers: tuple[int, ...] = (6, 6, 6, 6, 6)  # blocks per PLWformer layer
    heads: int = 4
    window: int = 16  # L: attention window side on the feature grid
    kv_reduction: int = 2  # k: token-reduction factor of keys and values
    ffn_expansion: float = 2.2
    catl_blocks: int = 2
    catl_locality_init: float = 0.0  # initial CATL bias towards the same position (public code: 0)
    unshuffle: int = 4  # feature grid = output grid / unshuffle
    prior_dim: int = 256  # 4Ĉ
    image_channels: int = 1  # 1: magnitude; 2: real and imaginary parts
    use_reference: bool = True
    upsampler: str = "progressive"

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(int(n) for n in self.layers))
        _require(self.channels > 0 and self.channels % self.heads == 0, "channels", self.channels,
                 f"must be a positive multiple of heads={self.heads}")
        _require(self.window % self.kv_reduction == 0, "window", self.window,
                 f"must be a multiple of kv_reduction={self.kv_reduction}")
        _require(self.channels % self.kv_reduction**2 == 0, "kv_reduction", self.kv_reduction,
                 f"k² must divide channels={self.channels}")
        _require(len(self.layers) > 0 and min(self.layers) > 0, "layers", self.layers, "must be positive block counts")
        _require(self.upsampler in UPSAMPLERS, "upsampler", self.upsampler, f"use one of {', '.join(UPSAMPLERS)}")
        power_of_two = self.unshuffle >= 1 and self.unshuffle & (self.unshuffle - 1) == 0
        _require(power_of_two, "unshuffle", self.unshuffle, "must be a power of two (1, 2, 4, 8)")
        _require(self.image_channels in (1, 2), "image_channels", self.image_channels, "must be 1 or 2")


def windowed_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """softmax(q kᵀ / √d + bias) v for (N, heads, n, d) queries, (N, heads, m, d) keys/values, (heads, n, m) bias.

    PyTorch's fused kernel on CUDA; on CPU the explicit product, which is about twice as fast there
    as the fused kernel's masked path for these small windows.
    """
    if q.is_cuda:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
    scores = torch.matmul(q * q.shape[-1] ** -0.5, k.transpose(-2, -1))
    scores += bias.to(q.dtype)
    return torch.matmul(scores.softmax(-1), v)


def to_windows(x: torch.Tensor, window: int, group: int = 1) -> torch.Tensor:
    """(B, H, W, C) → (B·H/L·W/L, (L/g)², g²·C): L×L windows whose g×g token groups are permuted into
    channels (channel order: row in group, column in group, C); g = 1 is plain window partitioning."""
    b, h, w, c = x.shape
    side = window // group
    x = x.reshape(b, h // window, side, group, w // window, side, group, c)
    return x.permute(0, 1, 4, 2, 5, 3, 6, 7).reshape(-1, side * side, group * group * c)


def from_windows(windows: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Inverse of `to_windows` with g = 1: (B·nW, L², C) → (B, H, W, C)."""
    window, c = math.isqrt(windows.shape[1]), windows.shape[-1]
    x = windows.reshape(-1, height // window, width // window, window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, height, width, c)


def _heads(tokens: torch.Tensor, heads: int) -> torch.Tensor:
    """(N, n, C) → (N, heads, n, C/heads)."""
    return tokens.unflatten(-1, (heads, -1)).transpose(1, 2)


def _merge_heads(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(N, heads, L², d) window outputs → (B, H, W, heads·d)."""
    return from_windows(x.transpose(1, 2).flatten(2), height, width)


def relative_position_index(query_side: int, key_side: int, stride: int) -> torch.Tensor:
    """(Lq², Lk²) indices into a ((2·Lk − 1)², heads) bias table.

    A query at (i, j) of an Lq-window sits at (i // stride, j // stride) of the Lk = Lq / stride key
    grid; the bias depends on its offset to the key position ("aligned" relative position bias).
    """
    q = torch.stack(torch.meshgrid(torch.arange(query_side), torch.arange(query_side), indexing="ij")).flatten(1)
    k = torch.stack(torch.meshgrid(torch.arange(key_side), torch.arange(key_side), indexing="ij")).flatten(1)
    offset = (q // stride)[:, :, None] - k[:, None, :] + key_side - 1  # (2, Lq², Lk²)
    return offset[0] * (2 * key_side - 1) + offset[1]


def _position_bias(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """B of Eq. 3: the (entries, heads) table gathered at an (n, m) index → (heads, n, m)."""
    return table.index_select(0, index.flatten()).unflatten(0, index.shape).permute(2, 0, 1)


class PriorModulation(nn.Module):
    """Eq. 2: F' = L(Z) ⊙ LN(F) + L(Z), one linear map of the prior giving per-channel scale and shift."""

    def __init__(self, channels: int, prior_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.linear = nn.Linear(prior_dim, 2 * channels, bias=False)

    def forward(self, x: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        """x (B, H, W, C), prior (B, 4Ĉ) → (B, H, W, C)."""
        scale, shift = self.linear(prior)[:, None, None, :].chunk(2, dim=-1)
        return self.norm(x) * scale + shift


class PermutedWindowAttention(nn.Module):
    """PL-MSA (Eq. 3): softmax(Q K_pᵀ / √d + B) V_p inside L×L windows.

    K and V are embedded with C/k² channels and every k×k group of tokens is permuted into one
    token of C channels, so L² queries attend to L²/k² keys without thinning the heads.
    """

    def __init__(self, channels: int, heads: int, window: int, reduction: int):
        super().__init__()
        self.heads, self.window, self.reduction = heads, window, reduction
        self.q = nn.Linear(channels, channels)
        self.kv = nn.Linear(channels, 2 * channels // reduction**2)
        self.proj = nn.Linear(channels, channels)
        key_side = window // reduction
        self.bias_table = nn.Parameter(torch.zeros((2 * key_side - 1) ** 2, heads))
        nn.init.trunc_normal_(self.bias_table, std=0.02)
        self.register_buffer("bias_index", relative_position_index(window, key_side, reduction), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) with H, W multiples of the window → (B, H, W, C)."""
        height, width = x.shape[1:3]
        q = _heads(to_windows(self.q(x), self.window), self.heads)
        k, v = self.kv(x).chunk(2, dim=-1)
        k = _heads(to_windows(k, self.window, self.reduction), self.heads)
        v = _heads(to_windows(v, self.window, self.reduction), self.heads)
        bias = _position_bias(self.bias_table, self.bias_index)  # (heads, L², L²/k²)
        return self.proj(_merge_heads(windowed_attention(q, k, v, bias), height, width))


class CrossWindowAttention(nn.Module):
    """CATL attention: queries from the target window, keys and values from the same reference window.

    With near-zero biases a new model averages the reference over the whole window; `locality_init`
    > 0 starts the bias peaked on the same position so reference detail reaches the target at once.
    """

    def __init__(self, channels: int, heads: int, window: int, locality_init: float = 0.0):
        super().__init__()
        self.heads, self.window = heads, window
        self.q = nn.Linear(channels, channels)
        self.kv = nn.Linear(channels, 2 * channels)
        self.proj = nn.Linear(channels, channels)
        self.bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        nn.init.trunc_normal_(self.bias_table, std=0.02)
        with torch.no_grad():  # offset (0, 0): a query starts out attending to its own reference position
            self.bias_table[(window - 1) * (2 * window - 1) + window - 1] += locality_init
        self.register_buffer("bias_index", relative_position_index(window, window, 1), persistent=False)

    def forward(self, target: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """target, reference (B, H, W, C) with H, W multiples of the window → (B, H, W, C)."""
        height, width = target.shape[1:3]
        q = _heads(to_windows(self.q(target), self.window), self.heads)
        k, v = (_heads(to_windows(t, self.window), self.heads) for t in self.kv(reference).chunk(2, dim=-1))
        bias = _position_bias(self.bias_table, self.bias_index)
        return self.proj(_merge_heads(windowed_attention(q, k, v, bias), height, width))


class GatedFeedForward(nn.Module):
    """Eq. 4 without the residual: Φ = 1×1 conv + 3×3 depth-wise conv, GELU(Φ₁) ⊙ Φ₂, then a 1×1 conv."""

    def __init__(self, channels: int, expansion: float):
        super().__init__()
        hidden = int(channels * expansion)
        self.project_in = nn.Linear(channels, 2 * hidden, bias=False)
        self.depthwise = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden, bias=False)
        self.project_out = nn.Linear(hidden, channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) → (B, H, W, C)."""
        y = self.depthwise(self.project_in(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        gate, value = y.chunk(2, dim=-1)
        return self.project_out(F.gelu(gate) * value)


class PLWBlock(nn.Module):
    """One PLWformer block: prior-modulated PL-MSA and prior-modulated PG-FFN, each with a residual."""

    def __init__(self, config: PLWformerConfig):
        super().__init__()
        c = config.channels
        self.attention_modulation = PriorModulation(c, config.prior_dim)
        self.attention = PermutedWindowAttention(c, config.heads, config.window, config.kv_reduction)
        self.ffn_modulation = PriorModulation(c, config.prior_dim)
        self.ffn = GatedFeedForward(c, config.ffn_expansion)

    def forward(self, x: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        """x (B, H, W, C) with H, W multiples of the window, prior (B, 4Ĉ) → (B, H, W, C)."""
        x = x + self.attention(self.attention_modulation(x, prior))
        return x + self.ffn(self.ffn_modulation(x, prior))


class CATLBlock(nn.Module):
    """Cross-attention Transformer block fusing reference features into the target features."""

    def __init__(self, config: PLWformerConfig):
        super().__init__()
        c = config.channels
        self.norm = nn.LayerNorm(c)  # shared by target and reference, as in the public code
        self.attention = CrossWindowAttention(c, config.heads, config.window, config.catl_locality_init)
        self.ffn_norm = nn.LayerNorm(c)
        self.ffn = GatedFeedForward(c, config.ffn_expansion)

    def forward(self, x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """x, reference (B, H, W, C) → (B, H, W, C)."""
        x = x + self.attention(self.norm(x), self.norm(reference))
        return x + self.ffn(self.ffn_norm(x))


class _Layer(nn.Module):
    """Blocks followed by a 3×3 convolution, with a residual around the whole layer."""

    def __init__(self, blocks: list[nn.Module], channels: int):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
        """x (B, H, W, C), extra: the prior (B, 4Ĉ) or the reference features (B, H, W, C)."""
        y = x
        for block in self.blocks:
            y = block(y, extra)
        return x + self.conv(y.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


def _reconstruction(config: PLWformerConfig) -> nn.Sequential:
    """Feature grid → output grid: ×2 conv + pixel-shuffle stages and a 3×3 conv, or one sub-pixel conv."""
    c, out = config.channels, config.image_channels
    if config.upsampler == "subpixel":
        return nn.Sequential(nn.Conv2d(c, out * config.unshuffle**2, 3, padding=1), nn.PixelShuffle(config.unshuffle))
    stages: list[nn.Module] = []
    for _ in range(int(math.log2(config.unshuffle))):
        stages += [nn.Conv2d(c, 4 * c, 3, padding=1), nn.PixelShuffle(2)]
    return nn.Sequential(*stages, nn.Conv2d(c, out, 3, padding=1))


class PLWformer(nn.Module):
    """The decoder: (condition, reference, prior) → image on the condition's grid."""

    def __init__(self, config: PLWformerConfig):
        super().__init__()
        self.config = config
        c, f = config.channels, config.unshuffle
        self.embed = nn.Conv2d(config.image_channels * f * f, c, 3, padding=1)
        if config.use_reference:
            self.reference_embed = nn.Conv2d(config.image_channels * f * f, c, 3, padding=1)
            self.catl = _Layer([CATLBlock(config) for _ in range(config.catl_blocks)], c)
        self.layers = nn.ModuleList(_Layer([PLWBlock(config) for _ in range(n)], c) for n in config.layers)
        self.reconstruction = _reconstruction(config)

    def _features(self, condition: torch.Tensor, reference: torch.Tensor | None) -> torch.Tensor:
        """Embedded target (fused with the reference by CATL when used): (B, H', W', C), padded to windows."""
        f, window = self.config.unshuffle, self.config.window
        x = pad_to_multiple(self.embed(F.pixel_unshuffle(condition, f)), window).permute(0, 2, 3, 1)
        if not self.config.use_reference:
            return x
        if reference is None:
            raise InputError("this PLWformer fuses a reference contrast: pass the reference slices "
                             "(or use a model trained without reference)")
        ref = pad_to_multiple(self.reference_embed(F.pixel_unshuffle(reference, f)), window).permute(0, 2, 3, 1)
        return self.catl(x, ref)

    def forward(self, condition: torch.Tensor, reference: torch.Tensor | None, prior: torch.Tensor) -> torch.Tensor:
        """condition, reference (B, c, H, W) with H, W multiples of `unshuffle`; prior (B, 4Ĉ) → (B, c, H, W).

        The reference is ignored (may be None) when the decoder was built without reference.
        """
        f = self.config.unshuffle
        height, width = condition.shape[-2:]
        if height % f or width % f:
            raise ValueError(f"slice size {height}x{width} is not a multiple of the unshuffle factor {f}")
        x = self._features(condition, reference)
        for layer in self.layers:
            x = layer(x, prior)
        x = x[:, : height // f, : width // f].permute(0, 3, 1, 2)
        return condition + self.reconstruction(x)
