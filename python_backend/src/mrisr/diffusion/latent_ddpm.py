"""DiffMSR's latent DDPM (§3.3–3.4): its configuration, the denoiser adapter and the prior sampler.

The prior Z ∈ R^{4Ĉ} of each slice is diffused with a short discrete DDPM (T = 4, β from 0.1 to
0.99 spaced linearly in √β, as in the public code) and denoised by `LatentDenoiser`, conditioned on
C = CE(I_LR). The reverse chain is the shared sampler with `ddpm.DDPMScheduler`, for training
(`mrisr.training.diffmsr_losses`, Eq. 10) and inference alike, with the same T: the public code trains
with T = 8 and tests with T = 4; a model card records T here and the method refuses a mismatch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from mrisr.diffusion import ddpm
from mrisr.diffusion.scheduler import Denoiser, StepCallback, sample
from mrisr.errors import InputError
from mrisr.networks.diffmsr import DiffMSRNetwork

PREDICTION_TYPES = ("epsilon", "sample")


@dataclass(frozen=True)
class LatentDiffusionConfig:
    """The latent DDPM a DiffMSR model was trained with (stored in its model card)."""

    num_train_steps: int = 4  # T
    beta_start: float = 0.1
    beta_end: float = 0.99
    prediction_type: str = "sample"  # x̂₀ (public code family); "epsilon": ε_θ of Eq. 9
    eta: float = 1.0  # 1: DDPM ancestral steps (Eq. 9); 0: deterministic DDIM

    def __post_init__(self) -> None:
        if not (isinstance(self.num_train_steps, int) and self.num_train_steps >= 1):
            raise InputError(f"latent diffusion num_train_steps={self.num_train_steps!r} is invalid: must be >= 1")
        if not 0 < self.beta_start <= self.beta_end < 1:
            raise InputError(f"latent diffusion betas ({self.beta_start}, {self.beta_end}) are invalid: "
                             f"need 0 < beta_start <= beta_end < 1")
        if self.prediction_type not in PREDICTION_TYPES:
            raise InputError(f"latent diffusion prediction_type={self.prediction_type!r} is invalid: "
                             f"use one of {', '.join(PREDICTION_TYPES)}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LatentDiffusionConfig":
        try:
            return cls(**data)
        except TypeError as error:
            raise InputError(f"latent diffusion config is invalid: {error}") from None

    def schedule(self) -> ddpm.DiscreteSchedule:
        """β_t = (√β_start + (√β_end − √β_start)·t/(T−1))², t = 0..T−1; ᾱ_{T−1} ≈ 0.0025 for T = 4."""
        roots = torch.linspace(self.beta_start**0.5, self.beta_end**0.5, self.num_train_steps, dtype=torch.float64)
        return ddpm.DiscreteSchedule(roots**2)

    def scheduler(self) -> ddpm.DDPMScheduler:
        """The DDPM/DDIM scheduler of this latent diffusion (η of the config), all T steps set."""
        return ddpm.DDPMScheduler(self.schedule(), self.eta)


def latent_denoiser(network: DiffMSRNetwork, condition: torch.Tensor, diffusion: LatentDiffusionConfig,
                    schedule: ddpm.DiscreteSchedule) -> Denoiser:
    """Adapter: (Z_t (B, 4Ĉ), t (B,)) → Ẑ₀ for the DDPM scheduler, conditioned on C (B, 4Ĉ)."""
    def denoise(latent: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = network.denoiser(latent, condition, (t.to(latent.dtype) + 1) / diffusion.num_train_steps)
        if diffusion.prediction_type == "epsilon":
            return ddpm.x0_from_eps(schedule, latent, t, out)
        return out

    return denoise


def sample_prior(network: DiffMSRNetwork, condition: torch.Tensor, diffusion: LatentDiffusionConfig,
                 steps: int, generators: Sequence[torch.Generator], callback: StepCallback | None = None
                 ) -> torch.Tensor:
    """Ẑ for each slice (§3.4): Z_T ~ N(0, I) from its own generator, then `steps` reverse steps.

    condition (B, 4Ĉ) → (B, 4Ĉ). One chain per slice, so a slice's prior depends only on its own
    generator, never on the batch it was run in; `callback` runs after every step of every chain.
    """
    if len(generators) != condition.shape[0]:
        raise ValueError(f"{len(generators)} generators for {condition.shape[0]} slices")
    scheduler = diffusion.scheduler()
    scheduler.set_timesteps(steps)
    priors = []
    for i, generator in enumerate(generators):
        c = condition[i:i + 1].float()
        start = torch.randn(c.shape, generator=generator, device=c.device, dtype=c.dtype)
        denoiser = latent_denoiser(network, c, diffusion, scheduler.schedule)
        priors.append(sample(denoiser, start, scheduler, generator=generator, callback=callback))
    return torch.cat(priors)
