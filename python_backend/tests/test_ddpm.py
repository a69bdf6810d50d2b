import math

import pytest
import torch

from mrisr.diffusion.ddpm import DDPMScheduler, DiscreteSchedule, q_sample, timesteps, x0_from_eps
from mrisr.diffusion.scheduler import sample
from mrisr.errors import InputError


@pytest.mark.parametrize("schedule", [DiscreteSchedule.linear(100), DiscreteSchedule.cosine(100), DiscreteSchedule.linear(4)])
def test_alphas_cumprod_decrease_from_near_one(schedule):
    abar = schedule.alphas_cumprod
    assert torch.all(abar[1:] < abar[:-1]) and 0.9 < abar[0] < 1 and abar[-1] < 0.2


def test_q_sample_and_eps_inversion_round_trip():
    schedule = DiscreteSchedule.cosine(100)
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, 1, 8, 8, generator=g), torch.randn(4, 1, 8, 8, generator=g)
    t = torch.tensor([0, 10, 50, 90])
    x_t = q_sample(schedule, x0, t, eps)
    torch.testing.assert_close(x0_from_eps(schedule, x_t, t, eps), x0, atol=1e-4, rtol=1e-4)


def test_ancestral_step_equals_ddpm_posterior():
    """η = 1 over consecutive steps: mean and variance of q(x_{t−1} | x_t, x₀) (Ho et al. Eq. 6–7)."""
    schedule = DiscreteSchedule.linear(100)
    x0 = torch.full((20000, 1), 0.7, dtype=torch.float64)
    x_t = torch.full((20000, 1), -0.3, dtype=torch.float64)
    t = 40
    scheduler = DDPMScheduler(schedule, eta=1.0)
    scheduler.timesteps = torch.tensor([t, t - 1])
    out = scheduler.step(x0, 0, x_t, torch.Generator().manual_seed(1))
    b, abar = schedule.betas, schedule.alphas_cumprod
    mean = (math.sqrt(abar[t - 1]) * b[t] / (1 - abar[t])) * 0.7 + (math.sqrt(1 - b[t]) * (1 - abar[t - 1]) / (1 - abar[t])) * -0.3
    var = (1 - abar[t - 1]) / (1 - abar[t]) * b[t]
    assert abs(out.mean().item() - float(mean)) < 4 * math.sqrt(float(var) / 20000)
    assert abs(out.var().item() / float(var) - 1) < 0.05


@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("start_step, steps", [(None, 100), (25, 25), (25, 5), (None, 10)])
def test_perfect_denoiser_recovers_x0_full_partial_and_strided(eta, start_step, steps):
    schedule = DiscreteSchedule.cosine(100)
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(2, 1, 6, 6, generator=g)
    plan = timesteps(100, steps, start_step)
    assert plan[0] == (start_step or 100) - 1 and plan[-1] == 0 and len(plan) == steps
    x = q_sample(schedule, x0, torch.full((2,), plan[0]), torch.randn(x0.shape, generator=g))
    scheduler = DDPMScheduler(schedule, eta)
    scheduler.set_timesteps(steps, start_step)
    assert scheduler.timesteps.tolist() == plan
    calls = []
    out = sample(lambda x, t: x0, x, scheduler, generator=g, callback=lambda i, n: calls.append(i))
    torch.testing.assert_close(out, x0)
    assert calls == list(range(1, steps + 1))


def test_ddim_eta0_is_deterministic_and_eta1_is_not():
    schedule = DiscreteSchedule.linear(100)
    x = torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    shrink = lambda x, t: 0.5 * x  # noqa: E731 - an imperfect denoiser
    schedulers = [DDPMScheduler(schedule, eta) for eta in (0.0, 1.0)]
    for scheduler in schedulers:
        scheduler.set_timesteps(10)
    runs = [sample(shrink, x, scheduler, generator=torch.Generator().manual_seed(s))
            for scheduler in schedulers for s in (0, 1)]
    torch.testing.assert_close(runs[0], runs[1])
    assert not torch.allclose(runs[2], runs[3])


@pytest.mark.parametrize("args", [(100, 0, None), (100, 30, 25), (100, 5, 0), (100, 5, 101)])
def test_out_of_range_steps(args):
    with pytest.raises(InputError):
        timesteps(*args)
