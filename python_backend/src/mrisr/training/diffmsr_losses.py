"""DiffMSR's two training stages (Li et al. 2024, Eq. 5 and Eq. 10).

Stage 1 (Eq. 5) trains PE and the PLWformer jointly with λ₁‖I_SR − I_HR‖₁ + λ₂ L_dc. Stage 2
(Eq. 10) keeps PE fixed, runs the whole reverse chain from Z_T ~ q(Z_T | Z) (Eq. 6) to Ẑ with the
sampler inference uses (`mrisr.diffusion.latent_ddpm`) and trains CE, the denoiser and the PLWformer
with λ₁ L_img + λ₂ L_dc + L_diff, L_diff = mean |Ẑ − Z|.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from mrisr.diffusion.latent_ddpm import LatentDiffusionConfig, latent_denoiser
from mrisr.diffusion.scheduler import sample
from mrisr.networks.diffmsr import DiffMSRNetwork
from mrisr.simulation.kspace import kspace_dc_loss


@dataclass(frozen=True)
class LossWeights:
    """λ₁ (image L1) and λ₂ (k-space data consistency) of Eq. 5 and Eq. 10."""

    image: float = 1.0
    kspace: float = 0.001


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
    scheduler = diffusion.scheduler()
    noise = torch.randn(target_prior.shape, generator=generator, device=target_prior.device)
    start = scheduler.add_noise(target_prior, noise, int(scheduler.timesteps[0]))
    denoiser = latent_denoiser(network, network.extract_condition(batch["condition"]), diffusion, scheduler.schedule)
    prior = sample(denoiser, start, scheduler, generator=generator)
    parts = _image_losses(network, batch, prior, lr_shape)
    parts["diffusion"] = F.l1_loss(prior, target_prior)
    loss = weights.image * parts["image"] + weights.kspace * parts["kspace"] + parts["diffusion"]
    return loss, {k: float(v.detach()) for k, v in parts.items()}
