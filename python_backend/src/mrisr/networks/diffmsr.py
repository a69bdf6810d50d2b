"""DiffMSR's networks (Li et al., CVPR 2024, §3.1–3.3): prior extraction, condition extraction, the
latent denoiser and the PLWformer decoder, with the `paper` and `cpu` presets.

All images are slices on the output grid: the condition is the LR target resampled onto it, the HR
target and the HR reference live on it too. Prior and condition extraction pixel-unshuffle their
inputs by `downscale`, run residual convolutions, pool globally and map the result by linear layers
to one compact vector of 4Ĉ numbers per slice (Eq. 1). The denoiser is an MLP on (Z_t, C, t). The
networks know nothing of noise schedules: `t` arrives as a fraction of the diffusion length.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from torch import nn

from mrisr.errors import InputError
from mrisr.networks.plwformer import PLWformer, PLWformerConfig

LEAK = 0.1  # LeakyReLU slope of the public code


@dataclass(frozen=True)
class PriorConfig:
    """Prior extraction (PE) and condition extraction (CE) share this structure (§3.3)."""

    latent_channels: int = 64  # Ĉ: the prior has 4Ĉ numbers
    features: int = 64
    res_blocks: int = 9
    downscale: int = 4  # pixel-unshuffle factor of the output-grid inputs
    image_channels: int = 1

    def __post_init__(self) -> None:
        for name in ("latent_channels", "features", "downscale"):
            if getattr(self, name) < 1:
                raise InputError(f"DiffMSR prior {name}={getattr(self, name)!r} is invalid: must be >= 1")
        if self.res_blocks < 0:
            raise InputError(f"DiffMSR prior res_blocks={self.res_blocks!r} is invalid: must be >= 0")

    @property
    def prior_dim(self) -> int:
        return 4 * self.latent_channels


@dataclass(frozen=True)
class DiffMSRConfig:
    """The whole DiffMSR network; `decoder.prior_dim` must equal 4Ĉ."""

    prior: PriorConfig = field(default_factory=PriorConfig)
    denoiser_layers: int = 5  # linear layers of the latent denoiser (§4.2)
    decoder: PLWformerConfig = field(default_factory=PLWformerConfig)

    def __post_init__(self) -> None:
        if self.decoder.prior_dim != self.prior.prior_dim:
            raise InputError(f"DiffMSR decoder prior_dim={self.decoder.prior_dim} is invalid: it must equal "
                             f"4 x latent_channels = {self.prior.prior_dim}")
        if self.decoder.image_channels != self.prior.image_channels:
            raise InputError(f"DiffMSR image_channels {self.decoder.image_channels} (decoder) and "
                             f"{self.prior.image_channels} (prior) must be equal")
        if self.denoiser_layers < 2:
            raise InputError(f"DiffMSR denoiser_layers={self.denoiser_layers!r} is invalid: must be >= 2")

    @property
    def pad_multiple(self) -> int:
        """Slice sides must be multiples of this (both pixel-unshuffle factors)."""
        return math.lcm(self.prior.downscale, self.decoder.unshuffle)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DiffMSRConfig":
        """The config a model card stores (`to_dict` output); unknown keys are errors."""
        try:
            prior = PriorConfig(**data.get("prior", {}))
            decoder = PLWformerConfig(**data.get("decoder", {}))
            rest = {k: v for k, v in data.items() if k not in ("prior", "decoder")}
            return cls(prior=prior, decoder=decoder, **rest)
        except TypeError as error:
            raise InputError(f"DiffMSR network config is invalid: {error}") from None

    def without_reference(self) -> "DiffMSRConfig":
        """The paper's "w/o reference" variant of this configuration (no reference embedding, no CATL)."""
        return replace(self, decoder=replace(self.decoder, use_reference=False))


PRESETS: dict[str, DiffMSRConfig] = {
    # §4.2: C = 64, 4 heads, window 16, k = 2, Ĉ = 64, 5 denoiser layers; blocks [6, 6, 6, 6] plus the
    # public code's refinement layer of 6 blocks, 9 residual blocks in PE/CE: ≈ 6.8 M parameters.
    "paper": DiffMSRConfig(),
    # CPU: C = 32, three layers of two blocks, one CATL block, Ĉ = 32, PE/CE on a grid 8× coarser; the
    # CATL bias starts local so the reference helps within a short CPU training.
    "cpu": DiffMSRConfig(
        prior=PriorConfig(latent_channels=32, features=32, res_blocks=2, downscale=8),
        decoder=PLWformerConfig(channels=32, layers=(2, 2, 2), heads=2, catl_blocks=1, catl_locality_init=4.0,
                                prior_dim=128, ffn_expansion=2.0, upsampler="subpixel"),
    ),
}


def preset(name: str) -> DiffMSRConfig:
    if name not in PRESETS:
        raise InputError(f"unknown DiffMSR preset {name!r}: choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


class _ResBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1), nn.LeakyReLU(LEAK),
                                  nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class PriorExtractor(nn.Module):
    """PE (Eq. 1) with `inputs` = 2 images (HR target, condition) or CE with 1 image (the condition).

    Pixel-unshuffle → 3×3 conv → residual blocks → three 3×3 convs up to 4Ĉ channels → global
    average pooling → two linear layers; every activation is a LeakyReLU(0.1).
    """

    def __init__(self, config: PriorConfig, inputs: int):
        super().__init__()
        self.downscale = config.downscale
        f, p = config.features, config.prior_dim
        in_channels = inputs * config.image_channels * config.downscale**2
        act = nn.LeakyReLU(LEAK)
        self.trunk = nn.Sequential(
            nn.Conv2d(in_channels, f, 3, padding=1), act,
            *[_ResBlock(f) for _ in range(config.res_blocks)],
            nn.Conv2d(f, 2 * f, 3, padding=1), act,
            nn.Conv2d(2 * f, 2 * f, 3, padding=1), act,
            nn.Conv2d(2 * f, p, 3, padding=1), act,
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.mlp = nn.Sequential(nn.Linear(p, p), act, nn.Linear(p, p), act)

    def forward(self, *images: torch.Tensor) -> torch.Tensor:
        """images: each (B, c, H, W) with H, W multiples of `downscale` → (B, 4Ĉ)."""
        stacked = torch.cat([nn.functional.pixel_unshuffle(x, self.downscale) for x in images], dim=1)
        return self.mlp(self.trunk(stacked))


class LatentDenoiser(nn.Module):
    """ε_θ(Z_t, C, t) of Eq. 9: an MLP on [Z_t, C, t] with LeakyReLUs and a linear last layer."""

    def __init__(self, prior_dim: int, layers: int):
        super().__init__()
        blocks: list[nn.Module] = [nn.Linear(2 * prior_dim + 1, prior_dim), nn.LeakyReLU(LEAK)]
        for _ in range(layers - 2):
            blocks += [nn.Linear(prior_dim, prior_dim), nn.LeakyReLU(LEAK)]
        self.mlp = nn.Sequential(*blocks, nn.Linear(prior_dim, prior_dim))

    def forward(self, latent: torch.Tensor, condition: torch.Tensor, t_fraction: torch.Tensor) -> torch.Tensor:
        """latent, condition (B, 4Ĉ), t_fraction (B,) in (0, 1] → prediction (B, 4Ĉ)."""
        t = t_fraction.to(latent.dtype).reshape(-1, 1)
        return self.mlp(torch.cat([latent, condition, t], dim=1))


class DiffMSRNetwork(nn.Module):
    """PE (training only), CE, the latent denoiser and the PLWformer decoder of one configuration."""

    def __init__(self, config: DiffMSRConfig):
        super().__init__()
        self.config = config
        self.prior_extractor = PriorExtractor(config.prior, inputs=2)
        self.condition_extractor = PriorExtractor(config.prior, inputs=1)
        self.denoiser = LatentDenoiser(config.prior.prior_dim, config.denoiser_layers)
        self.decoder = PLWformer(config.decoder)

    @property
    def uses_reference(self) -> bool:
        return self.config.decoder.use_reference

    def extract_prior(self, target: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """Z = PE(Concat(PixelUnshuffle(I_HR), I_LR)) (Eq. 1): (B, c, H, W) twice → (B, 4Ĉ)."""
        return self.prior_extractor(target, condition)

    def extract_condition(self, condition: torch.Tensor) -> torch.Tensor:
        """C = CE(I_LR): (B, c, H, W) → (B, 4Ĉ)."""
        return self.condition_extractor(condition)

    def decode(self, condition: torch.Tensor, reference: torch.Tensor | None, prior: torch.Tensor) -> torch.Tensor:
        """I_SR = PLWformer(I_LR, I_ref, Z): (B, c, H, W) → (B, c, H, W)."""
        return self.decoder(condition, reference, prior)

    def parameter_counts(self) -> dict[str, int]:
        """Parameters per part and in total."""
        parts = {"prior_extraction": self.prior_extractor, "condition_extraction": self.condition_extractor,
                 "denoiser": self.denoiser, "plwformer": self.decoder}
        counts = {name: sum(p.numel() for p in part.parameters()) for name, part in parts.items()}
        counts["total"] = sum(counts.values())
        return counts


def build_network(config: dict[str, Any] | DiffMSRConfig) -> DiffMSRNetwork:
    """The network of a model card's "network" entry (or of a config object)."""
    return DiffMSRNetwork(config if isinstance(config, DiffMSRConfig) else DiffMSRConfig.from_dict(config))
