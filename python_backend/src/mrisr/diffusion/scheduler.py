"""The one scheduler interface every sampler of `mrisr.diffusion` implements, and the one sampling loop.

In the spirit of diffusers' schedulers, a scheduler exposes

- `set_timesteps(num_inference_steps, start_step=None)`: the descending levels the reverse process
  visits. A scheduler has a grid of T levels (DDPM: T training steps; VDM: t = i/T; residual
  shifting: the T steps of the chain). `start_step` K ≤ T truncates the schedule: the reverse process
  starts at level K instead of T, and `num_inference_steps` ≤ K levels are spaced evenly from K down.
  Partial diffusion (PDM, Zhao et al. 2024, §IV-B) is exactly this truncation, for any sampler.
- `add_noise(x0, noise, timestep)`: a draw of the forward process at `timestep` (the start of a
  truncated chain is `add_noise(condition, noise, timesteps[0])`, PDM Eq. 3).
- `step(x0, index, sample, generator=None)`: one reverse step from `timesteps[index]` to the next level
  (or to the clean end after the last), given the denoiser's x̂₀. No noise is added on the last step.

Every model is adapted to a `Denoiser` that predicts x̂₀ (ε-, v- or residual-shift parameterisations are
adapters around the network), so `sample` runs any model with any scheduler. Schedulers know nothing of
patches, slices or files, and `sample` adds no `torch.no_grad`: training may backpropagate through it.
"""

from __future__ import annotations

from typing import Callable, Protocol

import torch

from mrisr.diffusion.noise import Generators
from mrisr.errors import InputError

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""(x_t (B, ...), t (B,) in the scheduler's timestep dtype) → x̂₀ (B, ...)."""

StepCallback = Callable[[int, int], None]
"""(steps done, total steps); may raise to cancel."""


class Scheduler(Protocol):
    """What `sample` needs of a noise schedule; see the module docstring."""

    timesteps: torch.Tensor
    """The levels the denoiser is evaluated at, descending, shape (num_inference_steps,)."""

    def set_timesteps(self, num_inference_steps: int, start_step: int | None = None) -> None: ...

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, timestep: int | float) -> torch.Tensor: ...

    def step(self, x0: torch.Tensor, index: int, sample: torch.Tensor,
             generator: Generators = None) -> torch.Tensor: ...


def evenly_spaced(first: int, last: int, count: int) -> list[int]:
    """`count` integer levels from `first` down to `last`, evenly spaced and rounded, without repeats."""
    points = torch.linspace(first, last, count).round().long().tolist()
    return sorted(set(points), reverse=True)


def truncated_levels(num_steps: int, num_inference_steps: int, start_step: int | None) -> tuple[int, int]:
    """Check a truncated schedule: start level K (default T) in 1..T and 1 ≤ steps ≤ K; returns (K, steps)."""
    start = num_steps if start_step is None else start_step
    if not 1 <= start <= num_steps:
        raise InputError(f"start step {start} is out of range: use 1..{num_steps}")
    if not 1 <= num_inference_steps <= start:
        raise InputError(f"steps {num_inference_steps} is out of range: use 1..{start} for start step {start}")
    return start, num_inference_steps


def timestep_batch(scheduler: Scheduler, index: int, like: torch.Tensor) -> torch.Tensor:
    """timesteps[index] repeated for the batch of `like`: (B,) on its device, in the timesteps' dtype."""
    t = scheduler.timesteps[index]
    return torch.full((like.shape[0],), t.item(), dtype=t.dtype, device=like.device)


def sample(
    denoiser: Denoiser,
    x: torch.Tensor,
    scheduler: Scheduler,
    *,
    generator: Generators = None,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Run the reverse process from x = x_{timesteps[0]} through `scheduler.timesteps` to x̂₀.

    x: (B, ...); with one generator per batch element (a list) results do not depend on the batch.
    `callback(i, n)` runs after each of the n steps.
    """
    total = len(scheduler.timesteps)
    for index in range(total):
        x0 = denoiser(x, timestep_batch(scheduler, index, x)).to(x.dtype)
        x = scheduler.step(x0, index, x, generator)
        if callback is not None:
            callback(index + 1, total)
    return x

