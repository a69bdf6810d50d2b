"""One contract every scheduler of `mrisr.diffusion` meets (the `scheduler.Scheduler` interface): DDPM,
DDIM, DiffMSR's latent DDPM, VDM (plain and latent-aligned) and residual shifting."""

from typing import Callable

import pytest
import torch

from mrisr.diffusion.ddpm import DDPMScheduler, DiscreteSchedule
from mrisr.diffusion.latent_ddpm import LatentDiffusionConfig
from mrisr.diffusion.resshift import ResShiftSchedule, ResShiftScheduler
from mrisr.diffusion.scheduler import Scheduler, sample
from mrisr.diffusion.vdm import VDMScheduler
from mrisr.errors import InputError

SHAPE = (3, 1, 6, 6)
ALIGNMENT_CONDITION = torch.linspace(-1, 1, 3 * 36).reshape(SHAPE)

# name → (factory, T, stochastic, tolerance of the oracle round trip)
SCHEDULERS: dict[str, tuple[Callable[[], Scheduler], int, bool, float]] = {
    "ddpm": (lambda: DDPMScheduler(DiscreteSchedule.linear(100), eta=1.0), 100, True, 1e-5),
    "ddim": (lambda: DDPMScheduler(DiscreteSchedule.cosine(100), eta=0.0), 100, False, 1e-5),
    "latent_ddpm": (lambda: LatentDiffusionConfig().scheduler(), 4, True, 1e-5),
    "vdm": (lambda: VDMScheduler(20), 20, True, 0.01),  # the last posterior mean keeps ≈ 0.002·ε
    "vdm_aligned": (lambda: VDMScheduler(20, ALIGNMENT_CONDITION), 20, True, 0.01),
    "resshift": (lambda: ResShiftScheduler(ResShiftSchedule()), 4, True, 1e-5),
}
# (num_inference_steps, start_step) as fractions of T: full, strided, truncated, truncated and strided
PLANS = [(1.0, None), (0.5, None), (0.25, 0.25), (0.25, 0.5)]


def _plan(total: int, steps: float, start: float | None) -> tuple[int, int | None]:
    start_step = None if start is None else max(1, round(start * total))
    return max(1, round(steps * total)), start_step


@pytest.fixture(params=list(SCHEDULERS))
def kind(request) -> str:
    return request.param


@pytest.mark.parametrize("steps, start", PLANS)
def test_timesteps_decrease_and_a_truncated_schedule_is_the_tail_of_the_full_one(kind, steps, start):
    factory, total, _, _ = SCHEDULERS[kind]
    n, start_step = _plan(total, steps, start)
    scheduler = factory()
    scheduler.set_timesteps(n, start_step)
    levels = scheduler.timesteps
    assert len(levels) == n and torch.all(levels[1:] < levels[:-1])
    if start_step is not None:
        full = factory()
        full.set_timesteps(total)
        expected_first = full.timesteps[total - start_step]  # level K of the full schedule
        assert levels[0] == expected_first
        if n == start_step:
            torch.testing.assert_close(levels, full.timesteps[total - start_step:])


@pytest.mark.parametrize("steps, start", PLANS)
def test_oracle_denoiser_recovers_x0_from_add_noise_at_the_first_timestep(kind, steps, start):
    factory, total, _, tolerance = SCHEDULERS[kind]
    scheduler = factory()
    scheduler.set_timesteps(*_plan(total, steps, start))
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(SHAPE, generator=g) * 2 - 1
    x = scheduler.add_noise(x0, torch.randn(SHAPE, generator=g), scheduler.timesteps[0].item())
    calls = []
    out = sample(lambda x_t, t: x0, x, scheduler, generator=g, callback=lambda i, n: calls.append(i))
    torch.testing.assert_close(out, x0, atol=tolerance, rtol=0)
    assert calls == list(range(1, len(scheduler.timesteps) + 1))


def test_the_denoiser_sees_every_timestep_for_the_whole_batch(kind):
    factory, total, _, _ = SCHEDULERS[kind]
    scheduler = factory()
    scheduler.set_timesteps(*_plan(total, 0.5, None))
    seen = []

    def spy(x_t, t):
        seen.append(t)
        return torch.zeros_like(x_t)

    sample(spy, torch.zeros(SHAPE), scheduler, generator=torch.Generator().manual_seed(1))
    assert [t.tolist() for t in seen] == [[float(v) if t.is_floating_point() else int(v)] * SHAPE[0]
                                          for t, v in zip(seen, scheduler.timesteps)]


def test_seeded_sampling_is_deterministic_and_independent_of_the_batch(kind):
    factory, total, stochastic, _ = SCHEDULERS[kind]
    scheduler = factory()
    scheduler.set_timesteps(*_plan(total, 0.5, None))
    shrink = lambda x_t, t: 0.5 * x_t  # noqa: E731 - an imperfect denoiser
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(9))

    def run(seeds, start=x):
        return sample(shrink, start, scheduler, generator=[torch.Generator().manual_seed(s) for s in seeds])

    first, again, other = run((1, 2, 3)), run((1, 2, 3)), run((4, 5, 6))
    torch.testing.assert_close(first, again)
    assert torch.allclose(first, other) != stochastic  # only the step noise differs
    if kind != "vdm_aligned":  # that scheduler carries a condition for a batch of 3
        torch.testing.assert_close(first[1:2], run((2,), x[1:2]))


@pytest.mark.parametrize("steps, start_step", [(0, None), (2, 0), (1, 10**6)])
def test_out_of_range_plans_are_input_errors(kind, steps, start_step):
    factory, total, _, _ = SCHEDULERS[kind]
    with pytest.raises(InputError, match="out of range"):
        factory().set_timesteps(steps, start_step)
    with pytest.raises(InputError, match="out of range"):
        factory().set_timesteps(total // 2 + 1, total // 2)  # more steps than the start step K
