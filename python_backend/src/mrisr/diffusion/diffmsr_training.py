"""DiffMSR's latent diffusion (§3.3–3.4) and its two training stages (Eq. 5, Eq. 10).

The prior Z ∈ R^{4Ĉ} of each slice is diffused with a short discrete DDPM (T = 4, β from 0.1 to
0.99 spaced linearly in √β, as in the public code) and denoised by `LatentDenoiser`, conditioned on
C = CE(I_LR). The reverse chain is `mrisr.diffusion.ddpm.sample`, for training and inference alike,
with the same T: the public code trains with T = 8 and tests with T = 4; a model card records T here
and the method refuses a mismatch.

Stage 1 (Eq. 5) trains PE and the PLWformer jointly with λ₁‖I_SR − I_HR‖₁ + λ₂ L_dc. Stage 2
(Eq. 10) keeps PE fixed, runs the whole reverse chain from Z_T ~ q(Z_T | Z) (Eq. 6) to Ẑ and trains CE,
the denoiser and the PLWformer with λ₁ L_img + λ₂ L_dc + L_diff, L_diff = mean |Ẑ − Z|.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from mrisr.errors import InputError
from mrisr.simulation.kspace import kspace_dc_loss
from mrisr.networks.diffmsr import DiffMSRNetwork
from mrisr.diffusion import ddpm

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


@dataclass(frozen=True)
class LossWeights:
    """λ₁ (image L1) and λ₂ (k-space data consistency) of Eq. 5 and Eq. 10."""

    image: float = 1.0
    kspace: float = 0.001


def latent_denoiser(network: DiffMSRNetwork, condition: torch.Tensor, diffusion: LatentDiffusionConfig,
                    schedule: ddpm.DiscreteSchedule) -> ddpm.Denoiser:
    """Adapter: (Z_t (B, 4Ĉ), t (B,)) → Ẑ₀ for `ddpm.sample`, conditioned on C (B, 4Ĉ)."""
    def denoise(latent: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = network.denoiser(latent, condition, (t.to(latent.dtype) + 1) / diffusion.num_train_steps)
        if diffusion.prediction_type == "epsilon":
            return ddpm.x0_from_eps(schedule, latent, t, out)
        return out

    return denoise


def sample_prior(network: DiffMSRNetwork, condition: torch.Tensor, diffusion: LatentDiffusionConfig,
                 steps: int, generators: Sequence[torch.Generator], callback: ddpm.StepCallback | None = None
                 ) -> torch.Tensor:
    """Ẑ for each slice (§3.4): Z_T ~ N(0, I) from its own generator, then `steps` reverse steps.

    condition (B, 4Ĉ) → (B, 4Ĉ). One chain per slice, so a slice's prior depends only on its own
    generator, never on the batch it was run in; `callback` runs after every step of every chain.
    """
    if len(generators) != condition.shape[0]:
        raise ValueError(f"{len(generators)} generators for {condition.shape[0]} slices")
    schedule = diffusion.schedule()
    times = ddpm.timesteps(diffusion.num_train_steps, steps)
    priors = []
    for i, generator in enumerate(generators):
        c = condition[i:i + 1].float()
        start = torch.randn(c.shape, generator=generator, device=c.device, dtype=c.dtype)
        denoiser = latent_denoiser(network, c, diffusion, schedule)
        priors.append(ddpm.sample(denoiser, start, schedule, times, eta=diffusion.eta, generator=generator,
                                  callback=callback))
    return torch.cat(priors)


def _image_losses(network: DiffMSRNetwork, batch: dict[str, torch.Tensor], prior: torch.Tensor,
                  lr_shape: Sequence[int]) -> dict[str, torch.Tensor]:
    """L_img = ‖I_SR − I_HR‖₁ and L_dc of the decoded slices."""
    output = network.decode(batch["condition"], batch.get("reference"), prior)
    return {"image": F.l1_loss(output, batch["target"]), "kspace": kspace_dc_loss(output, batch["target"], lr_shape)}


def stage1_loss(network: DiffMSRNetwork, batch: dict[str, torch.Tensor], lr_shape: Sequence[int],
                weights: LossWeights = LossWeights()) -> tuple[torch.Tensor, dict[str, float]]:
    """Eq. 5 for PE + PLWformer: λ₁ L_img + λ₂ L_dc with Z = PE(I_HR, I_LR).

    batch: "target" (B, c, H, W) HR slices, "condition" (B, c, H, W) the LR on the same grid,
    "reference" (B, c, H, W) or absent for the no-reference variant; `lr_shape` = (h, w), the
    acquisition's in-plane size. Returns the loss and its parts as floats.
    """
    prior = network.extract_prior(batch["target"], batch["condition"])
    parts = _image_losses(network, batch, prior, lr_shape)
    loss = weights.image * parts["image"] + weights.kspace * parts["kspace"]
    return loss, {k: float(v.detach()) for k, v in parts.items()}


def stage2_loss(network: DiffMSRNetwork, batch: dict[str, torch.Tensor], lr_shape: Sequence[int],
                generator: torch.Generator, diffusion: LatentDiffusionConfig = LatentDiffusionConfig(),
                weights: LossWeights = LossWeights()) -> tuple[torch.Tensor, dict[str, float]]:
    """Eq. 10 for CE + denoiser + PLWformer: λ₁ L_img + λ₂ L_dc + L_diff, with PE frozen.

    Z = PE(I_HR, I_LR) (no gradient), Z_T = q_sample(Z, T − 1, ε) (Eq. 6), Ẑ = the full T-step reverse
    chain (Eq. 9, the sampler used at inference, with gradients), L_diff = mean |Ẑ − Z|.
    """
    with torch.no_grad():
        target_prior = network.extract_prior(batch["target"], batch["condition"])
    schedule = diffusion.schedule()
    last = diffusion.num_train_steps - 1
    noise = torch.randn(target_prior.shape, generator=generator, device=target_prior.device)
    t = torch.full((target_prior.shape[0],), last, dtype=torch.long, device=target_prior.device)
    start = ddpm.q_sample(schedule, target_prior, t, noise)
    denoiser = latent_denoiser(network, network.extract_condition(batch["condition"]), diffusion, schedule)
    times = ddpm.timesteps(diffusion.num_train_steps, diffusion.num_train_steps)
    prior = ddpm.sample(denoiser, start, schedule, times, eta=diffusion.eta, generator=generator)
    parts = _image_losses(network, batch, prior, lr_shape)
    parts["diffusion"] = F.l1_loss(prior, target_prior)
    loss = weights.image * parts["image"] + weights.kspace * parts["kspace"] + parts["diffusion"]
    return loss, {k: float(v.detach()) for k, v in parts.items()}
