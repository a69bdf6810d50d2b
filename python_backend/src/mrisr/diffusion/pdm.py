"""Partial diffusion with latent alignment (PDM; Zhao et al., IEEE TMI 2024, §IV-B/C, Eq. 16–19).

Built on `ddpm` (schedules, q_sample, timesteps, the one sampler); this module adds only the PDM parts.

Indexing. The paper counts steps t = 0..T with x_0 the clean image and ᾱ_t = ∏_{τ≤t} α_τ; `ddpm` indexes
the T noisy steps 0..T−1. Paper step t is `ddpm` index t − 1 throughout, so "start step K" (paper) is
index K − 1, which is exactly where `ddpm.timesteps(T, n, start_step=K)` starts.

Partial diffusion (§IV-B). Denoising starts from the LR latent x_K^LR = √ᾱ_K y + √(1−ᾱ_K) ε (Eq. 3) in
place of x_K^HR and runs K steps (or fewer, DDIM-style) instead of T; training covers t ∈ {1..K} only.

Latent alignment (§IV-C). Training latents follow the new trajectory (Eq. 16)

    x̂_t = √ᾱ_t (λ_t x + (1 − λ_t) y) + √(1−ᾱ_t) ε,   λ_t = ½ (cos(π t / K) + 1)  (Eq. 17, cosine)

so x̂_K = x_K^LR and x̂_0 = x. With one ε shared by the HR and LR latents (the only reading under which
Eq. 16's variance is (1−ᾱ_t)), the aligned posterior mean of Eq. 19, λ_t μ̃_t(x_t^HR, x) + (1−λ_t)
μ̃_t(x_t^LR, y), equals μ̃_t(x̂_t, z_t) with z_t = λ_t x + (1−λ_t) y, because μ̃_t (Eq. 5) is linear. The
KL target of Eq. 18 is therefore met by an ε-network predicting the ε of Eq. 16 (or an x₀-network
predicting z_t), and sampling is the ordinary DDPM/DDIM reverse process from x_K^LR (`ddpm.DDPMScheduler` truncated at K, run by `scheduler.sample`).

Property of Eq. 19 as written (kept, documented): it uses λ_t, not λ_{t−1}, so the mean of x̂_{t−1}
lags the Eq. 16 marginal by one λ-step, and the final step returns z_1 = λ_1 x + (1−λ_1) y rather than x
(λ_1 = 0.996 at K = 25; at K = 1, λ_1 = 0 and the model can only return y).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from mrisr.errors import InputError
from mrisr.diffusion import ddpm
from mrisr.diffusion.noise import Generators
from mrisr.diffusion.scheduler import Denoiser, StepCallback
from mrisr.diffusion.scheduler import sample as sample_with
from mrisr.device import autocast

ALIGNMENT_SCHEDULES = ("cosine", "linear")
LOSSES = ("l1", "l2")

SR3Network = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""(x_t (B, C, H, W), condition y (B, C, H, W), noise level √ᾱ_t (B,)) → ε̂ or x̂₀ (B, C, H, W)."""


def _check_start(schedule: ddpm.DiscreteSchedule, start_step: int) -> None:
    if not 1 <= start_step <= schedule.num_steps:
        raise InputError(f"start step {start_step} is out of range: use 1..{schedule.num_steps}")


def alignment_weights(start_step: int, kind: str = "cosine") -> torch.Tensor:
    """λ_0..λ_K of Eq. 17 as a (K + 1,) float64 tensor: λ_0 = 1 (HR), λ_K = 0 (LR), decreasing."""
    if kind not in ALIGNMENT_SCHEDULES:
        raise InputError(f"alignment schedule {kind!r} is invalid: use one of {', '.join(ALIGNMENT_SCHEDULES)}")
    if start_step < 1:
        raise InputError(f"start step {start_step} is out of range: use 1 or more")
    t = torch.arange(start_step + 1, dtype=torch.float64) / start_step
    return 0.5 * (torch.cos(math.pi * t) + 1) if kind == "cosine" else 1 - t


def aligned_clean(x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, start_step: int,
                  kind: str = "cosine") -> torch.Tensor:
    """z_t = λ_t x + (1 − λ_t) y for `ddpm` indices t (paper step t + 1): the mean of Eq. 16 over √ᾱ_t.

    x, y: (B, ...) HR target and LR condition; t: (B,) long in 0..K−1.
    """
    lam = alignment_weights(start_step, kind).to(x.device)[t.to(x.device) + 1].to(x.dtype)
    lam = lam.reshape(-1, *([1] * (x.ndim - 1)))
    return lam * x + (1 - lam) * y


def noise_level(schedule: ddpm.DiscreteSchedule, t: torch.Tensor) -> torch.Tensor:
    """√ᾱ_t (B,) float32 for `ddpm` indices t (B,): what the SR3 network is conditioned on."""
    return schedule.alphas_cumprod.to(t.device)[t].sqrt().float()


def _prediction_of(network: SR3Network, prediction: str | None) -> str:
    kind = prediction or getattr(getattr(network, "config", None), "prediction", None)
    if kind not in ("eps", "x0"):
        raise InputError(f"prediction {kind!r} is invalid: use eps or x0 (or give the network a config.prediction)")
    return kind


def training_loss(
    network: SR3Network,
    x: torch.Tensor,
    y: torch.Tensor,
    schedule: ddpm.DiscreteSchedule,
    generator: torch.Generator | None,
    start_step: int | None = None,
    align: bool = True,
    prediction: str | None = None,
    loss: str = "l1",
    alignment: str = "cosine",
) -> torch.Tensor:
    """SR3/PDM denoising loss for a batch, a scalar.

    x: HR target (B, C, H, W) and y: LR condition on the same grid, both in the model range [−1, 1].
    start_step K trains partial diffusion (t ∈ 1..K, §IV-B), None all T steps; with `align` the latents
    follow Eq. 16 and the targets Eq. 18–19 (ε of Eq. 16, or z_t for x₀-networks), at K = T when
    start_step is None. Plain SR3 (the paper's baseline) is start_step=None, align=False.
    `prediction` None takes the network's config.prediction. L1 is SR3's (and its public code's) default.
    """
    if loss not in LOSSES:
        raise InputError(f"loss {loss!r} is invalid: use one of {', '.join(LOSSES)}")
    kind = _prediction_of(network, prediction)
    steps = schedule.num_steps if start_step is None else start_step
    _check_start(schedule, steps)
    t = torch.randint(0, steps, (x.shape[0],), generator=generator, device=x.device)
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    clean = aligned_clean(x, y, t, steps, alignment) if align else x
    output = network(ddpm.q_sample(schedule, clean, t, noise), y, noise_level(schedule, t))
    target = noise if kind == "eps" else clean
    return F.l1_loss(output, target) if loss == "l1" else F.mse_loss(output, target)


def denoiser(
    network: SR3Network,
    y: torch.Tensor,
    schedule: ddpm.DiscreteSchedule,
    prediction: str | None = None,
    clip: float | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> Denoiser:
    """Adapter: the SR3 network conditioned on y (B, C, H, W) as a `Denoiser` (x_t, t) → x̂₀.

    ε-networks go through x̂₀ = (x_t − √(1−ᾱ_t) ε̂)/√ᾱ_t (`ddpm.x0_from_eps`); x̂₀ is clipped to
    [−clip, clip] when `clip` is given (SR3 clips to [−1, 1]). `autocast_dtype` runs the network in half
    precision on CUDA; the sampler's arithmetic stays in x's dtype.
    """
    kind = _prediction_of(network, prediction)

    def predict(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with autocast(x_t.device, autocast_dtype):
            output = network(x_t, y, noise_level(schedule, t)).to(x_t.dtype)
        x0 = ddpm.x0_from_eps(schedule, x_t, t, output) if kind == "eps" else output
        return x0 if clip is None else x0.clamp(-clip, clip)

    return predict


def sample(
    denoise: Denoiser,
    y: torch.Tensor,
    schedule: ddpm.DiscreteSchedule,
    noise: torch.Tensor,
    start_step: int | None = None,
    steps: int | None = None,
    *,
    eta: float = 1.0,
    generator: Generators = None,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """PDM sampling: the DDPM scheduler truncated at K (`steps` evenly spaced steps of K, default all K:
    DDPM ancestral with η = 1; fewer: DDIM, Table V), started from x_K^LR = √ᾱ_K y + √(1−ᾱ_K) ε (Eq. 3
    applied to the condition y, with the given initial `noise`), through the shared sampler to x̂₀.

    y, noise: (B, C, H, W); start_step None = T (full SR3 from ≈ N(0, I): √ᾱ_T y is 0.07 y for linear
    β 1e-4..0.1, T = 100). Returns (B, C, H, W).
    """
    scheduler = ddpm.DDPMScheduler(schedule, eta)
    start = schedule.num_steps if start_step is None else start_step
    scheduler.set_timesteps(start if steps is None else steps, start)
    x = scheduler.add_noise(y, noise, int(scheduler.timesteps[0]))
    return sample_with(denoise, x, scheduler, generator=generator, callback=callback)


def sr3_schedule(num_steps: int = 100, kind: str = "linear", beta_start: float = 1e-4,
                 beta_end: float = 0.1) -> ddpm.DiscreteSchedule:
    """SR3's β schedule: linear from `beta_start` to `beta_end` over exactly `num_steps` steps (SR3's
    100-step inference schedule: 1e-4 → 0.1), or the cosine schedule; via `ddpm.DiscreteSchedule`."""
    if kind == "cosine":
        return ddpm.DiscreteSchedule.cosine(num_steps)
    if kind != "linear":
        raise InputError(f"beta schedule {kind!r} is invalid: use linear or cosine")
    scale = num_steps / 1000.0  # ddpm.DiscreteSchedule.linear takes end points for T = 1000
    return ddpm.DiscreteSchedule.linear(num_steps, beta_start * scale, beta_end * scale)
