"""Contract tests of partial diffusion + latent alignment (PDM Eq. 3, 16–19) on top of ddpm."""

import math

import pytest
import torch

from mrisr.diffusion import ddpm, pdm
from mrisr.errors import InputError

SCHEDULE = pdm.sr3_schedule(100)


def _pair(seed=0, shape=(3, 1, 6, 6)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64), torch.randn(shape, generator=g, dtype=torch.float64), g


def test_sr3_schedule_is_linear_1e4_to_0_1_over_100_steps():
    betas = SCHEDULE.betas
    assert betas.numel() == 100
    assert betas[0].item() == pytest.approx(1e-4) and betas[-1].item() == pytest.approx(0.1)
    assert torch.allclose(betas[1:] - betas[:-1], torch.full((99,), (0.1 - 1e-4) / 99, dtype=torch.float64))
    assert pdm.sr3_schedule(100, "cosine").betas.equal(ddpm.DiscreteSchedule.cosine(100).betas)


def test_alignment_weights_hand_values_and_endpoints():
    cosine = pdm.alignment_weights(4)
    expected = [1.0, 0.5 * (math.cos(math.pi / 4) + 1), 0.5, 0.5 * (math.cos(3 * math.pi / 4) + 1), 0.0]
    torch.testing.assert_close(cosine, torch.tensor(expected, dtype=torch.float64))
    torch.testing.assert_close(pdm.alignment_weights(4, "linear"), torch.tensor([1, 0.75, 0.5, 0.25, 0.0], dtype=torch.float64))
    lam = pdm.alignment_weights(25)
    assert lam[0] == 1 and abs(lam[-1]) < 1e-15 and torch.all(lam[1:] < lam[:-1])
    assert lam[1].item() == pytest.approx(0.99606, abs=1e-5)  # λ_1 at K = 25 (see the module note)
    with pytest.raises(InputError):
        pdm.alignment_weights(4, "sigmoid")


def _partial_start(y: torch.Tensor, start_step: int, noise: torch.Tensor) -> torch.Tensor:
    """x_K^LR: the DDPM scheduler truncated at K, forward-diffused from y to its first timestep."""
    scheduler = ddpm.DDPMScheduler(SCHEDULE)
    scheduler.set_timesteps(start_step, start_step)
    return scheduler.add_noise(y, noise, int(scheduler.timesteps[0]))


def test_aligned_trajectory_endpoints():
    """Eq. 16: x̂_K = x_K^LR (same ε) and the clean end z_0 = x (λ_0 = 1)."""
    x, y, g = _pair()
    noise = torch.randn(x.shape, generator=g, dtype=torch.float64)
    k = 25
    at_k = ddpm.q_sample(SCHEDULE, pdm.aligned_clean(x, y, torch.full((3,), k - 1), k), torch.full((3,), k - 1), noise)
    torch.testing.assert_close(at_k, _partial_start(y, k, noise))
    torch.testing.assert_close(pdm.aligned_clean(x, y, torch.full((3,), k - 1), k), y)
    lam = pdm.alignment_weights(k)
    torch.testing.assert_close(lam[0] * x + (1 - lam[0]) * y, x)


def test_aligned_latent_and_truncated_start_hand_computed():
    x, y = torch.tensor([[0.8]], dtype=torch.float64), torch.tensor([[0.2]], dtype=torch.float64)
    noise = torch.tensor([[0.5]], dtype=torch.float64)
    betas = [1e-4 + i * (0.1 - 1e-4) / 99 for i in range(100)]
    abar_10 = math.prod(1 - b for b in betas[:10])  # paper step t = 10 → index 9
    lam = 0.5 * (math.cos(math.pi * 10 / 20) + 1)  # K = 20
    expected = math.sqrt(abar_10) * (lam * 0.8 + (1 - lam) * 0.2) + math.sqrt(1 - abar_10) * 0.5
    got = ddpm.q_sample(SCHEDULE, pdm.aligned_clean(x, y, torch.tensor([9]), 20), torch.tensor([9]), noise)
    assert got.item() == pytest.approx(expected, rel=1e-12)
    abar_25 = math.prod(1 - b for b in betas[:25])
    start = _partial_start(y, 25, noise)
    assert start.item() == pytest.approx(math.sqrt(abar_25) * 0.2 + math.sqrt(1 - abar_25) * 0.5, rel=1e-12)


def test_eq19_aligned_posterior_is_ddpm_posterior_of_z_t():
    """λ_t μ̃_t(x_t^HR, x) + (1−λ_t) μ̃_t(x_t^LR, y) = μ̃_t(x̂_t, z_t) with one shared ε (Eq. 5, 16, 19)."""
    x, y, g = _pair(1)
    noise = torch.randn(x.shape, generator=g, dtype=torch.float64)
    k, t = 25, 12  # paper step t = 13
    abar, betas = SCHEDULE.alphas_cumprod, SCHEDULE.betas

    def mu(x_t, x0):  # Eq. 5 in ddpm indices
        return (math.sqrt(abar[t - 1]) * betas[t] * x0 + math.sqrt(1 - betas[t]) * (1 - abar[t - 1]) * x_t) / (1 - abar[t])

    idx = torch.full((3,), t)
    lam = pdm.alignment_weights(k)[t + 1]
    hr, lr = ddpm.q_sample(SCHEDULE, x, idx, noise), ddpm.q_sample(SCHEDULE, y, idx, noise)
    eq19 = lam * mu(hr, x) + (1 - lam) * mu(lr, y)
    x_hat = ddpm.q_sample(SCHEDULE, pdm.aligned_clean(x, y, idx, k), idx, noise)  # Eq. 16
    torch.testing.assert_close(eq19, mu(x_hat, pdm.aligned_clean(x, y, idx, k)))
    # ...and that is the mean the DDPM scheduler's η = 1 step takes when the denoiser returns z_t:
    z = pdm.aligned_clean(x, y, idx, k)
    scheduler = ddpm.DDPMScheduler(SCHEDULE, eta=1.0)
    scheduler.timesteps = torch.tensor([t, t - 1])
    step = scheduler.step(z, 0, x_hat, torch.Generator().manual_seed(5))
    sigma = math.sqrt((1 - abar[t - 1]) / (1 - abar[t]) * betas[t])
    drawn = torch.randn(x.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    torch.testing.assert_close(step - sigma * drawn, eq19)


def _oracle(x, y, start_step, align, prediction):
    """A perfect network for the PDM training target: recovers t from √ᾱ_t and returns ε or z_t."""
    levels = SCHEDULE.alphas_cumprod.sqrt()

    def network(x_t, condition, level):
        t = torch.argmin((levels[None].float() - level[:, None]).abs(), dim=1)
        clean = pdm.aligned_clean(x, y, t, start_step) if align else x
        if prediction == "x0":
            return clean
        a = levels[t].to(x_t.dtype).reshape(-1, 1, 1, 1)
        return (x_t - a * clean) / (1 - a**2).sqrt()

    return network


@pytest.mark.parametrize("prediction", ["eps", "x0"])
@pytest.mark.parametrize("align", [True, False])
def test_training_loss_is_zero_for_the_perfect_network_only(prediction, align):
    x, y, _ = _pair(2, (16, 1, 4, 4))
    x, y = x.float(), y.float()
    g = torch.Generator().manual_seed(0)
    right = pdm.training_loss(_oracle(x, y, 25, align, prediction), x, y, SCHEDULE, g, 25, align, prediction, loss="l2")
    wrong = pdm.training_loss(_oracle(x, y, 25, not align, prediction), x, y, SCHEDULE, g, 25, align, prediction)
    assert right.item() < 1e-8 and wrong.item() > 1e-3


def test_training_loss_samples_only_steps_up_to_k():
    seen = []

    def spy(x_t, condition, level):
        seen.append(level)
        return torch.zeros_like(x_t)

    x = torch.zeros(64, 1, 2, 2)
    for _ in range(5):
        pdm.training_loss(spy, x, x, SCHEDULE, torch.Generator().manual_seed(len(seen)), 25, prediction="eps")
    levels = torch.cat(seen)
    floor = SCHEDULE.alphas_cumprod[24].sqrt().item()
    assert levels.min().item() == pytest.approx(floor, rel=1e-6)  # t = K reached...
    assert levels.max().item() == pytest.approx(SCHEDULE.alphas_cumprod[0].sqrt().item(), rel=1e-6)  # ...and t = 1


@pytest.mark.parametrize("steps, eta", [(25, 1.0), (5, 0.0), (5, 0.5)])
def test_perfect_plain_denoiser_recovers_x_from_the_lr_start(steps, eta):
    x, y, g = _pair(3)
    noise = torch.randn(x.shape, generator=g, dtype=torch.float64)
    calls = []
    out = pdm.sample(lambda v, t: x, y, SCHEDULE, noise, 25, steps, eta=eta, generator=g,
                     callback=lambda i, n: calls.append((i, n)))
    torch.testing.assert_close(out, x)
    assert calls == [(i, steps) for i in range(1, steps + 1)]


def test_perfect_aligned_network_returns_z1_as_eq19_implies():
    """With latent alignment, the last (t = 1) posterior mean is z_1 = λ_1 x + (1−λ_1) y."""
    x, y, g = _pair(4)
    x, y = x.float(), y.float()
    noise = torch.randn(x.shape, generator=g)
    denoise = pdm.denoiser(_oracle(x, y, 25, True, "eps"), y, SCHEDULE, prediction="eps")
    for steps, eta in ((25, 1.0), (5, 0.0)):
        out = pdm.sample(denoise, y, SCHEDULE, noise, 25, steps, eta=eta, generator=g)
        lam = pdm.alignment_weights(25)[1].item()
        torch.testing.assert_close(out, lam * x + (1 - lam) * y, atol=2e-4, rtol=0)


def test_denoiser_adapter_eps_x0_and_clip():
    x_t = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(6))
    y = torch.zeros_like(x_t)
    t = torch.tensor([3, 40])
    eps = torch.ones_like(x_t)
    got = pdm.denoiser(lambda v, c, n: eps, y, SCHEDULE, prediction="eps")(x_t, t)
    torch.testing.assert_close(got, ddpm.x0_from_eps(SCHEDULE, x_t, t, eps))
    levels = []
    clipped = pdm.denoiser(lambda v, c, n: levels.append(n) or 5 * v, y, SCHEDULE, prediction="x0", clip=1.5)(x_t, t)
    torch.testing.assert_close(clipped, (5 * x_t).clamp(-1.5, 1.5))
    torch.testing.assert_close(levels[0], SCHEDULE.alphas_cumprod[t].sqrt().float())
    with pytest.raises(InputError):
        pdm.denoiser(lambda v, c, n: v, y, SCHEDULE)  # no prediction given and no network config


def test_bad_start_steps_and_losses_are_input_errors():
    x = torch.zeros(1, 1, 2, 2)
    with pytest.raises(InputError):
        ddpm.DDPMScheduler(SCHEDULE).set_timesteps(1, 101)
    with pytest.raises(InputError):
        pdm.training_loss(lambda v, c, n: v, x, x, SCHEDULE, None, 0, prediction="eps")
    with pytest.raises(InputError):
        pdm.training_loss(lambda v, c, n: v, x, x, SCHEDULE, None, 25, prediction="eps", loss="huber")
    with pytest.raises(InputError):
        pdm.sample(lambda v, t: v, x, SCHEDULE, x, 10, 11)
