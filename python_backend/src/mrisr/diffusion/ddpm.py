"""Discrete-time DDPM/DDIM: β schedules, the forward process and one sampler for both.

Used by SR3 (+ partial diffusion, PDM) in pixel space and by DiffMSR's latent diffusion. Timestep
indices run 0..T−1 with ᾱ_t = ∏_{s≤t}(1−β_s) (Ho et al. 2020, Eq. 4); a denoiser predicts x̂₀ and
`DDPMScheduler` runs it through `mrisr.diffusion.scheduler.sample`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from mrisr.diffusion.noise import Generators, randn
from mrisr.diffusion.scheduler import evenly_spaced, truncated_levels


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
    (default T, i.e. full diffusion; K < T is partial diffusion, PDM) down to 0 (index = step − 1)."""
    start, steps = truncated_levels(num_train_steps, num_inference_steps, start_step)
    return evenly_spaced(start - 1, 0, steps)


class DDPMScheduler:
    """DDPM/DDIM reverse process over a `DiscreteSchedule` (the `mrisr.diffusion.scheduler` interface).

    Timesteps are indices 0..T−1. `eta` = 1 over consecutive steps is DDPM ancestral sampling, 0 is
    deterministic DDIM (Song et al. 2021, Eq. 12).
    """

    def __init__(self, schedule: DiscreteSchedule, eta: float = 1.0):
        self.schedule, self.eta = schedule, eta
        self._alphas_cumprod = schedule.alphas_cumprod
        self.timesteps = torch.tensor(timesteps(schedule.num_steps, schedule.num_steps), dtype=torch.long)

    def set_timesteps(self, num_inference_steps: int, start_step: int | None = None) -> None:
        """`num_inference_steps` indices evenly spaced from step K (default T) down to index 0."""
        levels = timesteps(self.schedule.num_steps, num_inference_steps, start_step)
        self.timesteps = torch.tensor(levels, dtype=torch.long)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, timestep: int) -> torch.Tensor:
        """x_t = √ᾱ_t x₀ + √(1−ᾱ_t) ε at index `timestep` for the whole batch (Ho et al. Eq. 4)."""
        t = torch.full((x0.shape[0],), int(timestep), dtype=torch.long, device=x0.device)
        return q_sample(self.schedule, x0, t, noise)

    def step(self, x0: torch.Tensor, index: int, sample: torch.Tensor, generator: Generators = None) -> torch.Tensor:
        """x_prev = √ᾱ_prev x̂₀ + √(1−ᾱ_prev−σ²) ε̂ + σ z (Song et al. Eq. 12), with
        σ = η·√((1−ᾱ_prev)/(1−ᾱ_t))·√(1−ᾱ_t/ᾱ_prev) and ε̂ = (x_t − √ᾱ_t x̂₀)/√(1−ᾱ_t); x̂₀ on the last step."""
        if index == len(self.timesteps) - 1:
            return x0
        abar = self._alphas_cumprod
        a_t, a_prev = float(abar[self.timesteps[index]]), float(abar[self.timesteps[index + 1]])
        eps = (sample - math.sqrt(a_t) * x0) / math.sqrt(1 - a_t)
        sigma = self.eta * math.sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))
        noise = randn(sample.shape, generator, sample.device, sample.dtype)
        return math.sqrt(a_prev) * x0 + math.sqrt(max(1 - a_prev - sigma**2, 0.0)) * eps + sigma * noise
