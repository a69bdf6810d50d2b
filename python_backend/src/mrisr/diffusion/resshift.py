"""Residual shifting (ResShift; Res-SRDiff §2.2–2.3): a short Markov chain from the HR image x to the LR image y.

Notation of the Res-SRDiff paper with ResShift's names: the shifting sequence β_t of the paper is η_t here
and its γ is κ. Steps run t = 1..T with η_0 = 0 (so x_0 = x), η_1 → 0 and η_T → 1:

- forward marginal (Eq. 4):  q(x_t | x, y) = N(x + η_t (y − x), κ² η_t I)
- prior (Eq. 5):             x_T ≈ y + κ √η_T ε
- posterior (Eq. 8–9):       q(x_s | x_t, x, y) = N((η_s/η_t) x_t + ((η_t − η_s)/η_t) x,
                                                   κ² η_s (η_t − η_s)/η_t I)
  for any s < t; with s = t − 1 the weight η_t − η_s is the paper's α_t (Eq. 1).
- reverse step (Eq. 11):     the network g(x_t, y, t) ≈ x replaces x in the posterior mean (x₀-parameterisation).
- loss (Eq. 12–13):          λ ‖g(x_t, y, t) − x‖² + ℓ_p(g, x), λ = 10 in the paper.

Sampling with fewer steps than the chain has (e.g. 2 of T = 4) uses the same posterior between the
non-adjacent steps s < t: the chain's increments are independent Gaussians, so
x_t = x_s + (η_t − η_s)(y − x) + κ √(η_t − η_s) ε exactly, and Eq. 9 holds with α_t → η_t − η_s.
The sampler knows nothing of slices, patches or files; images are in the paper's [−1, 1] range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from mrisr.errors import InputError
from mrisr.diffusion.noise import Generators, randn
from mrisr.diffusion.scheduler import Denoiser, evenly_spaced, truncated_levels

ResShiftDenoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""(x_t (B, C, H, W), t (B,) long in 1..T, y (B, C, H, W)) → x̂ (B, C, H, W)."""

@dataclass(frozen=True)
class ResShiftSchedule:
    """The non-uniform geometric shifting schedule (Eq. 14) and the noise scale κ.

    Defaults are the public Res-SRDiff code's: κ = 2, p = 0.3, T = 4, √η_1 = min(0.2/κ, 0.2) = 0.1,
    √η_T = 0.99, giving √η = [0.100, 0.520, 0.761, 0.990]. (The paper's text sets √η_1 = 0.04/κ = 0.02,
    √η_T = √0.9999 and T = 15 for training; `min_noise_level=0.04, sqrt_eta_end=0.99995, num_steps=15`.)
    """

    kappa: float = 2.0
    num_steps: int = 4
    power: float = 0.3
    min_noise_level: float = 0.2
    sqrt_eta_end: float = 0.99

    def __post_init__(self) -> None:
        rules = [
            (lambda: self.kappa > 0, "kappa", self.kappa, "must be > 0"),
            (lambda: isinstance(self.num_steps, int) and self.num_steps >= 2, "num_steps", self.num_steps,
             "must be an integer >= 2"),
            (lambda: self.power > 0, "power", self.power, "must be > 0"),
            (lambda: 0 < self.min_noise_level, "min_noise_level", self.min_noise_level, "must be > 0"),
            (lambda: self.sqrt_eta_start < self.sqrt_eta_end <= 1, "sqrt_eta_end", self.sqrt_eta_end,
             "must be in (√η_1, 1] with √η_1 = min(min_noise_level/κ, min_noise_level)"),
        ]
        for ok, name, value, rule in rules:  # in order: later rules rely on earlier ones
            if not ok():
                raise InputError(f"residual-shift schedule {name}={value!r} is invalid: {rule}")

    @property
    def sqrt_eta_start(self) -> float:
        """√η_1 = min(min_noise_level / κ, min_noise_level) (public code; 0.04/κ in the paper's §2.3)."""
        return min(self.min_noise_level / self.kappa, self.min_noise_level)

    @property
    def sqrt_etas(self) -> torch.Tensor:
        """√η_t for t = 1..T (Eq. 14): √η_1 · exp(((t−1)/(T−1))^p · log(√η_T / √η_1)); float64, (T,)."""
        fraction = torch.linspace(0.0, 1.0, self.num_steps, dtype=torch.float64) ** self.power
        return self.sqrt_eta_start * torch.exp(fraction * math.log(self.sqrt_eta_end / self.sqrt_eta_start))

    @property
    def etas(self) -> torch.Tensor:
        """η_t for t = 0..T with η_0 = 0 prepended, so `etas[t]` is η_t; float64, shape (T + 1,)."""
        return torch.cat([torch.zeros(1, dtype=torch.float64), self.sqrt_etas**2])

    @property
    def alphas(self) -> torch.Tensor:
        """α_t = η_t − η_{t−1} for t = 1..T (Eq. 1; α_1 = η_1), float64, shape (T,)."""
        return torch.diff(self.etas)


def _at(values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """values[t] shaped (B, 1, ..., 1) to broadcast over `like`, in its dtype and device."""
    out = values.to(like.device)[t.to(like.device)].to(like.dtype)
    return out.reshape(-1, *([1] * (like.ndim - 1)))


def q_sample(schedule: ResShiftSchedule, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor,
             noise: torch.Tensor) -> torch.Tensor:
    """x_t = x + η_t (y − x) + κ √η_t ε (Eq. 4); x, y, noise (B, C, H, W), t (B,) in 0..T."""
    eta = _at(schedule.etas, t, x)
    return x + eta * (y - x) + schedule.kappa * eta.sqrt() * noise


def posterior(schedule: ResShiftSchedule, x_t: torch.Tensor, x0: torch.Tensor, t: int,
              s: int) -> tuple[torch.Tensor, float]:
    """Mean and variance of q(x_s | x_t, x, y) for 0 ≤ s < t ≤ T (Eq. 9; Eq. 11 with x0 = g(x_t, y, t)).

    mean = (η_s/η_t) x_t + ((η_t − η_s)/η_t) x0, variance = κ² η_s (η_t − η_s)/η_t (a float).
    """
    if not 0 <= s < t <= schedule.num_steps:
        raise ValueError(f"posterior needs 0 <= s < t <= {schedule.num_steps}, got s={s}, t={t}")
    eta_t, eta_s = float(schedule.etas[t]), float(schedule.etas[s])
    mean = (eta_s / eta_t) * x_t + ((eta_t - eta_s) / eta_t) * x0
    return mean, schedule.kappa**2 * eta_s * (eta_t - eta_s) / eta_t


def timesteps(num_train_steps: int, num_inference_steps: int, start_step: int | None = None) -> list[int]:
    """Descending steps t (1-based) from K (default T), evenly spaced, ending at 1; the sampler then goes to x_0.

    T = 4 with 4 steps gives [4, 3, 2, 1]; with 2 steps [4, 1]; with 1 step [4] (x̂ in one call).
    """
    start, steps = truncated_levels(num_train_steps, num_inference_steps, start_step)
    return evenly_spaced(start, 1, steps)


class ResShiftScheduler:
    """The residual-shifting reverse chain (the `mrisr.diffusion.scheduler` interface).

    Timesteps are steps t in 1..T (long); the step after the last lands on x_0. A truncated schedule
    (start_step K < T) starts from y + κ√η_K ε, the K-th marginal centred on the LR image.
    """

    def __init__(self, schedule: ResShiftSchedule):
        self.schedule = schedule
        self._sqrt_etas = torch.cat([torch.zeros(1, dtype=torch.float64), schedule.sqrt_etas])
        self.set_timesteps(schedule.num_steps)

    def set_timesteps(self, num_inference_steps: int, start_step: int | None = None) -> None:
        self.timesteps = torch.tensor(timesteps(self.schedule.num_steps, num_inference_steps, start_step),
                                      dtype=torch.long)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, timestep: int,
                  condition: torch.Tensor | None = None) -> torch.Tensor:
        """x_t = x + η_t (y − x) + κ √η_t ε (Eq. 4) with y = `condition`; without one, y = x₀, which
        is the prior y + κ √η_T ε of Eq. 5 when x₀ is the LR image and t = T."""
        y = x0 if condition is None else condition
        eta = float(self.schedule.etas[timestep])
        return x0 + eta * (y - x0) + self.schedule.kappa * float(self._sqrt_etas[timestep]) * noise

    def step(self, x0: torch.Tensor, index: int, sample: torch.Tensor, generator: Generators = None) -> torch.Tensor:
        """x_s ~ q(x_s | x_t, x̂, y) (Eq. 9 with x̂ = g(x_t, y, t), Eq. 11); the last step (s = 0) returns x̂."""
        t = int(self.timesteps[index])
        s = int(self.timesteps[index + 1]) if index + 1 < len(self.timesteps) else 0
        mean, variance = posterior(self.schedule, sample, x0, t, s)
        if variance == 0:
            return mean
        return mean + math.sqrt(variance) * randn(sample.shape, generator, sample.device, sample.dtype)


def denoiser(network: ResShiftDenoiser, condition: torch.Tensor,
             clip: tuple[float, float] | None = (-1.0, 1.0)) -> Denoiser:
    """Adapter: g(x_t, t, y) conditioned on y (B, C, H, W) as a `Denoiser` (x_t, t) → x̂, clamped to `clip`
    as the public code does (clip_denoised)."""
    def predict(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x0 = network(x_t, t, condition).to(x_t.dtype)
        return x0 if clip is None else x0.clamp(*clip)

    return predict


Perceptual = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""(prediction (B, 1, H, W), target (B, 1, H, W), both in [−1, 1]) → per-image distance (B,)."""


def training_loss(
    network: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    generator: torch.Generator | None,
    *,
    schedule: ResShiftSchedule = ResShiftSchedule(),
    mse_weight: float = 10.0,
    perceptual: Perceptual | None = None,
    perceptual_weight: float = 1.0,
) -> torch.Tensor:
    """Eq. 13: λ ‖g(x_t, y, t) − x‖² + ℓ_p(g, x), averaged over the batch, with t ~ U{1..T}, x_t from Eq. 4.

    network(x_t, t, y) → x̂; x (HR) and y (LR on the HR grid) are (B, C, H, W) in [−1, 1]; the generator
    lives on x's device. λ = 10 as in the paper (the public code uses 4). The perceptual term (LPIPS,
    `mrisr.evaluation.perceptual.lpips_alex`) compares the prediction clamped to [−1, 1] with x, as the public code
    does; the paper's ℓ_p(x_t, x) is read as ℓ_p(g, x) (x_t does not depend on the network).
    """
    t = torch.randint(1, schedule.num_steps + 1, (x.shape[0],), generator=generator, device=x.device)
    x_t = q_sample(schedule, x, y, t, randn(x.shape, generator, x.device, x.dtype))
    prediction = network(x_t, t, y)
    loss = mse_weight * (prediction - x).pow(2).flatten(1).mean(1)
    if perceptual is not None:
        loss = loss + perceptual_weight * perceptual(prediction.clamp(-1.0, 1.0), x).reshape(-1)
    return loss.mean()
