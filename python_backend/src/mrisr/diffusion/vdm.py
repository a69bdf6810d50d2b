"""Continuous-time variance-preserving diffusion (VDM, Kingma et al. 2021) as used by DiffusionIQT, with
partial diffusion and latent alignment (PDM, Zhao et al. 2024, §IV-B/IV-C).

Time t ∈ [0, 1]; cosine schedule in log-SNR λ(t) = −log(cos((t+s)/(1+s)·π/2)^−2 − 1), s = 0.008
(Nichol & Dhariwal 2021, in the public code's continuous form, argument clamped at 1e−5);
α_t = √sigmoid(λ), σ_t = √sigmoid(−λ), so α² + σ² = 1 and x_t = α_t x + σ_t ε (DiffusionIQT Eq. 2).
The denoiser predicts x̂ (x-parameterisation, Algorithm 1). The reverse step from t to s < t is the
VDM posterior (DiffusionIQT Eq. 4; Kingma et al. Eq. 33): with c = −expm1(λ_t − λ_s),
mean = α_s((1 − c) x_t / α_t + c x̂), variance = σ_s² c, and no noise on the last step (Algorithm 2).

Partial diffusion (PDM Eq. 16–19, continuous form): the reverse process starts at t_K from the
diffused condition α_K x_c + σ_K ε. With latent alignment the trajectory's clean end point moves
from x_c to x: m_t = λ_t x + (1 − λ_t) x_c with λ_t = ½(cos(π t / t_K) + 1) (Eq. 17, cosine), and
x_t = α_t m_t + σ_t ε (Eq. 16); training and sampling share it. The sampler evaluates the posterior
of that trajectory with the interpolation weight at the target time s: mean = α_s((1 − c)(x_t/α_t −
m_t) + m_s). This keeps every x_s on the Eq. 16 marginals N(α_s m_s, σ_s²) and returns x̂ at s = 0;
Eq. 19 as printed mixes the two posteriors with λ_t, which lags one step and would end at
λ_{t_1} x̂ + (1 − λ_{t_1}) x_c.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from mrisr.diffusion.noise import Generators, randn
from mrisr.diffusion.scheduler import evenly_spaced, truncated_levels
from mrisr.errors import InputError

OFFSET = 0.008
MAX_TAN2_CLAMP = 1e-5

ConditionalDenoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""(x_t (B, 1, ...), condition x_c (B, 1, ...), t (B,)) → x̂ (B, 1, ...)."""


def log_snr(t: torch.Tensor | float) -> torch.Tensor:
    """λ(t) of the cosine schedule (float64), decreasing from ≈ 8.8 at t = 0 to ≈ −75 at t = 1."""
    t = torch.as_tensor(t, dtype=torch.float64)
    tan2 = torch.cos((t + OFFSET) / (1 + OFFSET) * math.pi / 2) ** -2 - 1
    return -torch.log(torch.clamp(tan2, min=MAX_TAN2_CLAMP))


def alpha_sigma(t: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor]:
    """(α_t, σ_t) = (√sigmoid(λ), √sigmoid(−λ)) in float64."""
    lam = log_snr(t)
    return torch.sigmoid(lam).sqrt(), torch.sigmoid(-lam).sqrt()


def _per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.to(device=like.device, dtype=like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


def q_sample(x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """x_t = α_t x₀ + σ_t ε (DiffusionIQT Eq. 2 from s = 0); t (B,) per sample."""
    alpha, sigma = alpha_sigma(t.detach().cpu())
    return _per_sample(alpha, x0) * x0 + _per_sample(sigma, x0) * noise


@dataclass(frozen=True)
class LatentAlignment:
    """PDM latent alignment (§IV-C): the clean end point of the trajectory moves from the condition x_c
    (at t_K) to the image x (at 0) with the cosine weights of Eq. 17."""

    condition: torch.Tensor
    start_time: float

    def __post_init__(self) -> None:
        if not 0.0 < self.start_time <= 1.0:
            raise InputError(f"latent alignment start time {self.start_time} is out of range: use (0, 1]")

    def weight(self, t: float) -> float:
        """λ_t = ½(cos(π t / t_K) + 1): 1 at t = 0, 0 at t ≥ t_K (Eq. 17, cosine)."""
        return 0.5 * (math.cos(math.pi * min(t / self.start_time, 1.0)) + 1.0)

    def anchor(self, x0: torch.Tensor, t: float) -> torch.Tensor:
        """m_t = λ_t x̂ + (1 − λ_t) x_c, the mean of x_t / α_t on the aligned trajectory (Eq. 16)."""
        lam = self.weight(t)
        return x0 if lam == 1.0 else torch.lerp(self.condition.to(x0.dtype), x0, lam)


class VDMScheduler:
    """The VDM reverse process on the grid t = i/T (the `mrisr.diffusion.scheduler` interface).

    Timesteps are float64 times in (0, 1]; the step after the last one lands on t = 0. A truncated
    schedule (start_step K < T) starts at t_K = K/T (partial diffusion, PDM §IV-B). With an
    `alignment_condition` x_c (B, ...), steps follow the latent-aligned trajectory from t_K (Eq. 16–17).
    """

    def __init__(self, num_steps: int, alignment_condition: torch.Tensor | None = None):
        if num_steps < 1:
            raise InputError(f"steps {num_steps} is out of range: use 1 or more sampling steps")
        self.num_steps, self.alignment_condition = num_steps, alignment_condition
        self.set_timesteps(num_steps)

    def set_timesteps(self, num_inference_steps: int, start_step: int | None = None) -> None:
        """`num_inference_steps` times i/T evenly spaced from t_K = K/T (default 1) down towards 0."""
        start, steps = truncated_levels(self.num_steps, num_inference_steps, start_step)
        self.times = [level / self.num_steps for level in evenly_spaced(start, 0, steps + 1)]
        self.timesteps = torch.tensor(self.times[:-1], dtype=torch.float64)
        condition = self.alignment_condition
        self.alignment = None if condition is None else LatentAlignment(condition, self.times[0])

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, timestep: float) -> torch.Tensor:
        """x_t = α_t x₀ + σ_t ε at one time for the whole batch (DiffusionIQT Eq. 2)."""
        alpha, sigma = alpha_sigma(float(timestep))
        return float(alpha) * x0 + float(sigma) * noise

    def step(self, x0: torch.Tensor, index: int, sample: torch.Tensor, generator: Generators = None) -> torch.Tensor:
        """x_s from x_t by the (aligned) VDM posterior of the module docstring (DiffusionIQT Eq. 4; VDM
        Eq. 33): mean α_s((1 − c)(x_t/α_t − m_t) + m_s), variance σ_s² c; no noise on the last step."""
        t, s = self.times[index], self.times[index + 1]
        m_t = x0 if self.alignment is None else self.alignment.anchor(x0, t)
        m_s = x0 if self.alignment is None else self.alignment.anchor(x0, s)
        delta = float(log_snr(t)) - float(log_snr(s))
        keep, c = math.exp(delta), -math.expm1(delta)  # 1 − c and c
        (alpha_t, _), (alpha_s, sigma_s) = alpha_sigma(t), alpha_sigma(s)
        alpha_t, alpha_s = float(alpha_t), float(alpha_s)
        x = (alpha_s * keep / alpha_t) * sample + alpha_s * m_s - (alpha_s * keep) * m_t
        if index < len(self.timesteps) - 1:
            x = x + float(sigma_s) * math.sqrt(c) * randn(x.shape, generator, x.device, x.dtype)
        return x


def concat_conditioning(network: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> ConditionalDenoiser:
    """Adapter: a network of (x_t ⊕ x_c on channels, log-SNR) → x̂ as a ConditionalDenoiser of t."""

    def denoise(x_t: torch.Tensor, condition: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        noise_level = log_snr(t.detach().cpu()).to(device=x_t.device, dtype=torch.float32)
        return network(torch.cat((x_t, condition.to(x_t.dtype)), dim=1), noise_level)

    return denoise


def training_loss(
    denoiser: ConditionalDenoiser,
    target: torch.Tensor,
    condition: torch.Tensor,
    generator: torch.Generator,
    *,
    alignment_start: float | None = None,
) -> torch.Tensor:
    """‖x − x̂_θ(x_t, x_c, t)‖² averaged (Algorithm 1): t ~ U(0, 1), x_t = α_t x + σ_t ε. With
    `alignment_start` = t_K, latent alignment (PDM Eq. 16): t ~ U(0, t_K), x_t = α_t m_t + σ_t ε.

    target, condition: (B, 1, D, H, W); the generator lives on their device.
    """
    batch = target.shape[0]
    t = torch.rand(batch, generator=generator, device=target.device, dtype=torch.float64)
    noise = torch.randn(target.shape, generator=generator, device=target.device, dtype=target.dtype)
    clean = target
    if alignment_start is not None:
        alignment = LatentAlignment(condition, alignment_start)
        t = t * alignment_start
        weights = torch.tensor([alignment.weight(float(v)) for v in t], dtype=target.dtype, device=target.device)
        clean = torch.lerp(condition, target, _per_sample(weights, target))
    x_t = q_sample(clean, t, noise)
    prediction = denoiser(x_t, condition, t.to(torch.float32))
    return torch.mean((prediction.float() - target.float()) ** 2)
