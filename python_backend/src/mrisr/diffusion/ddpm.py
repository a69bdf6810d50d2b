"""Discrete-time DDPM/DDIM: β schedules, the forward process and one sampler for both.

Used by SR3 (+ partial diffusion, PDM) in pixel space and by DiffMSR's latent diffusion. Timestep
indices run 0..T−1 with ᾱ_t = ∏_{s≤t}(1−β_s) (Ho et al. 2020, Eq. 4); a denoiser predicts x̂₀.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from mrisr.errors import InputError
from mrisr.diffusion.noise import Generators, randn

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""(x_t (B, ...), t (B,) long) → x̂₀ (B, ...)."""

StepCallback = Callable[[int, int], None]
"""(steps done, total steps); may raise to cancel."""


@dataclass(frozen=True)
class DiscreteSchedule:
    """A β schedule of T steps and its cumulative products (float64 for accuracy)."""

    betas: torch.Tensor

    @property
    def num_steps(self) -> int:
        return int(self.betas.numel())

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        return torch.cumprod(1.0 - self.betas, dim=0)

    @classmethod
    def linear(cls, num_steps: int, beta_start: float = 1e-4, beta_end: float = 2e-2) -> "DiscreteSchedule":
        """Linear β (Ho et al.), end points given for T = 1000 and rescaled to T steps."""
        scale = 1000.0 / num_steps
        return cls(torch.linspace(beta_start * scale, min(beta_end * scale, 0.999), num_steps, dtype=torch.float64))

    @classmethod
    def cosine(cls, num_steps: int, offset: float = 0.008) -> "DiscreteSchedule":
        """Cosine ᾱ (Nichol & Dhariwal 2021, Eq. 17), β clipped at 0.999."""
        steps = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
        f = torch.cos((steps + offset) / (1 + offset) * math.pi / 2) ** 2
        return cls(torch.clamp(1 - f[1:] / f[:-1], max=0.999))


def _gather(values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """values[t] shaped (B, 1, ..., 1) to broadcast over `like`, in `like`'s dtype/device."""
    out = values.to(like.device)[t.to(like.device)].to(like.dtype)
    return out.reshape(-1, *([1] * (like.ndim - 1)))


def q_sample(schedule: DiscreteSchedule, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """x_t = √ᾱ_t x₀ + √(1−ᾱ_t) ε (Ho et al. Eq. 4)."""
    abar = _gather(schedule.alphas_cumprod, t, x0)
    return abar.sqrt() * x0 + (1 - abar).sqrt() * noise


def x0_from_eps(schedule: DiscreteSchedule, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Invert the forward process: x̂₀ = (x_t − √(1−ᾱ_t) ε̂) / √ᾱ_t (adapter for ε-predicting networks)."""
    abar = _gather(schedule.alphas_cumprod, t, x_t)
    return (x_t - (1 - abar).sqrt() * eps) / abar.sqrt()


def timesteps(num_train_steps: int, num_inference_steps: int, start_step: int | None = None) -> list[int]:
    """Descending timestep indices: `num_inference_steps` evenly spaced ones from the start step K
    (default T, i.e. full diffusion; K < T is partial diffusion, PDM) down to 0."""
    start = num_train_steps if start_step is None else start_step
    if not 1 <= start <= num_train_steps:
        raise InputError(f"start step {start} is out of range: use 1..{num_train_steps}")
    if not 1 <= num_inference_steps <= start:
        raise InputError(f"steps {num_inference_steps} is out of range: use 1..{start} for start step {start}")
    points = torch.linspace(start - 1, 0, num_inference_steps).round().long().tolist()
    return sorted(set(points), reverse=True)


def sample(
    denoiser: Denoiser,
    x: torch.Tensor,
    schedule: DiscreteSchedule,
    steps: Sequence[int],
    *,
    eta: float = 1.0,
    generator: Generators = None,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Run the reverse process from x = x_{steps[0]} through the descending `steps` to x̂₀.

    DDIM update (Song et al. 2021, Eq. 12) with σ = η·√((1−ᾱ_prev)/(1−ᾱ_t))·√(1−ᾱ_t/ᾱ_prev); η = 1 over
    consecutive steps is exactly DDPM ancestral sampling, η = 0 is deterministic DDIM. No noise is added
    on the last step. With one generator per sample the result does not depend on the batch.
    """
    abar = schedule.alphas_cumprod
    for i, t in enumerate(steps):
        t_batch = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
        x0 = denoiser(x, t_batch)
        if i == len(steps) - 1:
            x = x0
        else:
            a_t, a_prev = float(abar[t]), float(abar[steps[i + 1]])
            eps = (x - math.sqrt(a_t) * x0) / math.sqrt(1 - a_t)
            sigma = eta * math.sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))
            noise = randn(x.shape, generator, x.device, x.dtype)
            x = math.sqrt(a_prev) * x0 + math.sqrt(max(1 - a_prev - sigma**2, 0.0)) * eps + sigma * noise
        if callback is not None:
            callback(i + 1, len(steps))
    return x
