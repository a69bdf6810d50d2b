"""The residual-shifting chain of Res-SRDiff (Eq. 1–14): schedule, forward, posterior, sampler, loss."""

import math

import pytest
import torch

from mrisr.diffusion.resshift import (
    ResShiftSchedule, ResShiftScheduler, denoiser, posterior, q_sample, randn, timesteps, training_loss,
)
from mrisr.diffusion.scheduler import sample
from mrisr.errors import InputError

SCHEDULE = ResShiftSchedule()


def test_default_schedule_reproduces_the_public_constants():
    torch.testing.assert_close(SCHEDULE.sqrt_etas, torch.tensor([0.100, 0.520, 0.761, 0.990], dtype=torch.float64),
                               atol=5e-4, rtol=0)


def test_schedule_by_hand_eq14():
    # √η_1 = min(0.2/2, 0.2) = 0.1; √η_t = 0.1·exp(((t−1)/3)^0.3 · log(0.99/0.1)).
    expected = [0.1 * math.exp(((t - 1) / 3) ** 0.3 * math.log(9.9)) for t in range(1, 5)]
    torch.testing.assert_close(SCHEDULE.sqrt_etas, torch.tensor(expected, dtype=torch.float64))
    assert SCHEDULE.etas[0] == 0 and SCHEDULE.etas.shape == (5,)
    torch.testing.assert_close(SCHEDULE.alphas.sum(), SCHEDULE.etas[-1])  # Σ α_t = η_T (Eq. 3d)
    assert torch.all(SCHEDULE.alphas > 0)


def test_paper_text_variant_and_other_lengths():
    paper = ResShiftSchedule(min_noise_level=0.04, sqrt_eta_end=0.99995, num_steps=15)
    assert paper.sqrt_eta_start == pytest.approx(0.02)  # β_1 = (0.04/γ)², γ = 2 (§2.3)
    assert float(paper.sqrt_etas[0]) == pytest.approx(0.02) and float(paper.sqrt_etas[-1]) == pytest.approx(0.99995)
    assert torch.all(torch.diff(paper.sqrt_etas) > 0)


@pytest.mark.parametrize("field, value", [("kappa", 0.0), ("num_steps", 1), ("power", -1.0), ("sqrt_eta_end", 0.05),
                                          ("sqrt_eta_end", 1.5)])
def test_invalid_schedules_name_the_value(field, value):
    with pytest.raises(InputError, match=field):
        ResShiftSchedule(**{field: value})


def test_forward_marginal_by_hand_eq4():
    x, y, noise = torch.full((1, 1, 1, 1), 0.2), torch.full((1, 1, 1, 1), 0.8), torch.full((1, 1, 1, 1), 0.5)
    eta2 = (0.1 * math.exp((1 / 3) ** 0.3 * math.log(9.9))) ** 2
    out = q_sample(SCHEDULE, x, y, torch.tensor([2]), noise)
    assert out.item() == pytest.approx(0.2 + eta2 * 0.6 + 2.0 * math.sqrt(eta2) * 0.5, rel=1e-6)
    assert q_sample(SCHEDULE, x, y, torch.tensor([0]), noise).item() == pytest.approx(0.2)  # η_0 = 0: x_0 = x


def test_markov_steps_eq2_give_the_marginal_eq4():
    """x_t = x_{t−1} + α_t (y − x) + κ√α_t ε step by step has mean x + η_t (y − x) and variance κ²η_t."""
    g = torch.Generator().manual_seed(0)
    n, x, y = 200_000, 0.3, -0.6
    state = torch.full((n,), x, dtype=torch.float64)
    for t in range(1, SCHEDULE.num_steps + 1):
        alpha = float(SCHEDULE.alphas[t - 1])
        state = state + alpha * (y - x) + SCHEDULE.kappa * math.sqrt(alpha) * torch.randn(n, generator=g, dtype=torch.float64)
        eta = float(SCHEDULE.etas[t])
        assert state.mean().item() == pytest.approx(x + eta * (y - x), abs=4 * SCHEDULE.kappa * math.sqrt(eta / n))
        assert state.var().item() == pytest.approx(SCHEDULE.kappa**2 * eta, rel=0.02)


def test_posterior_by_hand_eq9():
    etas = SCHEDULE.etas
    mean, variance = posterior(SCHEDULE, torch.tensor(1.0), torch.tensor(0.0), 2, 1)
    assert mean.item() == pytest.approx(float(etas[1] / etas[2]))
    assert variance == pytest.approx(4.0 * float(etas[1] * (etas[2] - etas[1]) / etas[2]))
    mean, variance = posterior(SCHEDULE, torch.tensor(1.0), torch.tensor(3.0), 1, 0)
    assert mean.item() == pytest.approx(3.0) and variance == 0.0  # the last step returns x̂
    with pytest.raises(ValueError):
        posterior(SCHEDULE, torch.tensor(1.0), torch.tensor(0.0), 2, 2)


@pytest.mark.parametrize("t, s", [(4, 3), (4, 1), (2, 1), (3, 1)])
def test_posterior_is_consistent_with_the_marginals(t, s):
    """x_t ~ q(x_t | x, y), then x_s ~ q(x_s | x_t, x, y) gives x_s ~ q(x_s | x, y) (Eq. 4, 9)."""
    g = torch.Generator().manual_seed(t * 10 + s)
    n = 200_000
    x, y = torch.full((n,), 0.4, dtype=torch.float64), torch.full((n,), -0.2, dtype=torch.float64)
    x_t = q_sample(SCHEDULE, x, y, torch.full((n,), t), torch.randn(n, generator=g, dtype=torch.float64))
    mean, variance = posterior(SCHEDULE, x_t, x, t, s)
    x_s = mean + math.sqrt(variance) * torch.randn(n, generator=g, dtype=torch.float64)
    eta_s = float(SCHEDULE.etas[s])
    assert x_s.mean().item() == pytest.approx(0.4 + eta_s * (-0.6), abs=4 * 2 * math.sqrt(eta_s / n))
    assert x_s.var().item() == pytest.approx(4.0 * eta_s, rel=0.02)


def test_timesteps():
    assert timesteps(4, 4) == [4, 3, 2, 1] and timesteps(4, 2) == [4, 1] and timesteps(4, 1) == [4]
    assert timesteps(15, 4) == [15, 10, 6, 1]
    assert timesteps(4, 2, start_step=3) == [3, 1]  # truncated at K = 3
    for bad in (0, 5):
        with pytest.raises(InputError, match="steps"):
            timesteps(4, bad)
    with pytest.raises(InputError, match="start step 5"):
        timesteps(4, 1, start_step=5)


def prior_sample(y: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """x_T = y + κ √η_T ε (Eq. 5) through the scheduler's add_noise."""
    return ResShiftScheduler(SCHEDULE).add_noise(y, noise, SCHEDULE.num_steps)


def _scheduler(steps) -> ResShiftScheduler:
    scheduler = ResShiftScheduler(SCHEDULE)
    scheduler.timesteps = torch.tensor(steps)
    return scheduler


@pytest.mark.parametrize("n", [4, 2, 1])
def test_perfect_denoiser_recovers_x_from_the_prior(n):
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(3, 1, 8, 8, generator=g) * 2 - 1, torch.rand(3, 1, 8, 8, generator=g) * 2 - 1
    x_t = prior_sample(y, torch.randn(y.shape, generator=g))
    calls = []
    scheduler = ResShiftScheduler(SCHEDULE)
    scheduler.set_timesteps(n)
    out = sample(denoiser(lambda x_t, t, c: x, y), x_t, scheduler, generator=g,
                 callback=lambda i, total: calls.append((i, total)))
    torch.testing.assert_close(out, x)
    assert calls == [(i, n) for i in range(1, n + 1)]


def test_prior_is_centred_on_the_condition():
    g = torch.Generator().manual_seed(2)
    y = torch.full((100_000,), 0.3)
    x_t = prior_sample(y, torch.randn(y.shape, generator=g))
    assert x_t.mean().item() == pytest.approx(0.3, abs=0.03) and x_t.std().item() == pytest.approx(2 * 0.99, rel=0.01)


def test_denoiser_sees_steps_and_condition_and_is_clamped():
    seen = []

    def network(x_t, t, c):
        seen.append((t.tolist(), c is y))
        return torch.full_like(x_t, 5.0)

    y = torch.zeros(2, 1, 4, 4)
    out = sample(denoiser(network, y), torch.zeros(2, 1, 4, 4), _scheduler([4, 2]), generator=torch.Generator())
    assert seen == [([4, 4], True), ([2, 2], True)] and torch.all(out == 1.0)


def test_per_sample_generators_make_results_independent_of_batching():
    def shrink(x_t, t, c):
        return 0.5 * x_t + 0.1 * c

    y = torch.linspace(-1, 1, 3 * 16).view(3, 1, 4, 4)
    gens = lambda: [torch.Generator().manual_seed(s) for s in (7, 8, 9)]  # noqa: E731
    shared = gens()
    batch = sample(denoiser(shrink, y), prior_sample(y, randn(y.shape, shared, "cpu")), _scheduler([4, 3, 2, 1]),
                   generator=shared)
    for b, g in enumerate(gens()):
        yb = y[b:b + 1]
        single = sample(denoiser(shrink, yb), prior_sample(yb, randn(yb.shape, [g], "cpu")),
                        _scheduler([4, 3, 2, 1]), generator=[g])
        torch.testing.assert_close(batch[b:b + 1], single)
    with pytest.raises(ValueError):
        randn((2, 3), gens(), "cpu")


def test_training_loss_eq13():
    g = torch.Generator().manual_seed(3)
    x, y = torch.rand(4, 1, 8, 8, generator=g), torch.rand(4, 1, 8, 8, generator=g)
    assert training_loss(lambda x_t, t, c: x, x, y, g).item() == 0.0
    zero = training_loss(lambda x_t, t, c: torch.zeros_like(x_t), x, y, g)
    assert zero.item() == pytest.approx(10.0 * x.pow(2).mean().item(), rel=1e-6)
    seen_t = []

    def network(x_t, t, c):
        seen_t.extend(t.tolist())
        assert c is y
        return torch.zeros_like(x_t)

    perceptual = lambda a, b: torch.full((a.shape[0],), 0.25)  # noqa: E731
    total = training_loss(network, x, y, g, mse_weight=4.0, perceptual=perceptual, perceptual_weight=2.0)
    assert total.item() == pytest.approx(4.0 * x.pow(2).mean().item() + 0.5, rel=1e-6)
    assert set(seen_t) <= {1, 2, 3, 4}


def test_training_loss_has_gradients():
    g = torch.Generator().manual_seed(4)
    weight = torch.zeros(1, requires_grad=True)
    x, y = torch.rand(2, 1, 4, 4, generator=g), torch.rand(2, 1, 4, 4, generator=g)
    training_loss(lambda x_t, t, c: weight * c, x, y, g).backward()
    assert weight.grad is not None and weight.grad.item() < 0
