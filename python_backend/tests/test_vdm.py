"""Continuous-time VDM schedule, posterior sampler, partial diffusion and latent alignment (PDM)."""

import math

import pytest
import torch

from mrisr.diffusion.scheduler import sample
from mrisr.diffusion.vdm import LatentAlignment, VDMScheduler, alpha_sigma, concat_conditioning, log_snr, q_sample, training_loss
from mrisr.errors import InputError


def test_cosine_log_snr_hand_computed_values_and_variance_preservation():
    lam0 = -math.log(math.tan(0.008 / 1.008 * math.pi / 2) ** 2)  # ≈ 8.77
    lam_half = -math.log(math.tan(0.508 / 1.008 * math.pi / 2) ** 2)  # ≈ −0.032
    t = torch.linspace(0, 1, 21, dtype=torch.float64)
    lam = log_snr(t)
    assert lam[0].item() == pytest.approx(lam0, rel=1e-12) and lam0 == pytest.approx(8.77, abs=0.01)
    assert lam[10].item() == pytest.approx(lam_half, rel=1e-9)
    assert torch.all(lam[1:] < lam[:-1]) and lam[-1] < -30
    alpha, sigma = alpha_sigma(t)
    torch.testing.assert_close(alpha**2 + sigma**2, torch.ones_like(t))
    assert alpha[0] > 0.9999 and alpha[-1] < 1e-10


def test_q_sample_uses_each_samples_time():
    x0, noise = torch.full((2, 1, 3), 2.0), torch.full((2, 1, 3), -1.0)
    out = q_sample(x0, torch.tensor([0.0, 0.5]), noise)
    for i, t in enumerate((0.0, 0.5)):
        alpha, sigma = (float(v) for v in alpha_sigma(t))
        torch.testing.assert_close(out[i], torch.full((1, 3), 2 * alpha - sigma))


def _times(steps: int, start_step: int | None = None) -> list[float]:
    scheduler = VDMScheduler(steps)
    scheduler.set_timesteps(start_step or steps, start_step)
    return scheduler.times


def test_time_grids_full_and_partial():
    assert _times(4) == [1.0, 0.75, 0.5, 0.25, 0.0]
    assert _times(20, 5) == pytest.approx([0.25, 0.2, 0.15, 0.1, 0.05, 0.0])
    assert _times(20, 20) == _times(20)
    scheduler = VDMScheduler(20)
    scheduler.set_timesteps(2, 5)  # two evaluations from t_K = 0.25
    assert scheduler.timesteps.tolist() == pytest.approx([0.25, 0.1]) and scheduler.times[-1] == 0.0
    for steps, start in ((0, None), (10, 11), (10, 0)):
        with pytest.raises(InputError, match="out of range"):
            _times(steps, start)


def test_one_step_is_the_vdm_posterior():
    """mean = α_s((1 − c) x_t/α_t + c x̂), variance = σ_s² c, c = −expm1(λ_t − λ_s) (VDM Eq. 33)."""
    n, t, s = 40000, 0.6, 0.4
    x_t = torch.full((n, 1), -0.3, dtype=torch.float64)
    scheduler = VDMScheduler(5)  # times 1.0, 0.8, 0.6, 0.4, ...: index 2 steps from 0.6 to 0.4
    out = scheduler.step(torch.full_like(x_t, 0.7), 2, x_t, torch.Generator().manual_seed(0))
    (alpha_t, _), (alpha_s, sigma_s) = alpha_sigma(t), alpha_sigma(s)
    c = -math.expm1(float(log_snr(t) - log_snr(s)))
    mean = float(alpha_s) * ((1 - c) * -0.3 / float(alpha_t) + c * 0.7)
    var = float(sigma_s) ** 2 * c
    assert abs(out.mean().item() - mean) < 4 * math.sqrt(var / n)
    assert out.var().item() / var == pytest.approx(1, abs=0.03)


def test_last_step_adds_no_noise_and_sampling_is_seeded():
    x = torch.randn(1, 1, 5, 5, generator=torch.Generator().manual_seed(1))
    shrink = lambda x, t: 0.5 * x  # noqa: E731
    scheduler = VDMScheduler(10)
    scheduler.set_timesteps(3, 3)  # times 0.3, 0.2, 0.1 → 0
    last = [scheduler.step(0.5 * x, 2, x, torch.Generator().manual_seed(seed)) for seed in (1, 2)]
    torch.testing.assert_close(last[0], last[1])
    scheduler = VDMScheduler(5)
    runs = [sample(shrink, x, scheduler, generator=torch.Generator().manual_seed(seed)) for seed in (3, 3, 4)]
    torch.testing.assert_close(runs[0], runs[1])
    assert (runs[0] - runs[2]).abs().max() > 1e-3


@pytest.mark.parametrize("start_step, aligned", [(None, False), (5, False), (5, True), (20, True)])
def test_oracle_denoiser_recovers_the_image(start_step, aligned):
    g = torch.Generator().manual_seed(2)
    x0, condition = torch.randn(1, 1, 16, 16, generator=g), torch.randn(1, 1, 16, 16, generator=g)
    scheduler = VDMScheduler(20, condition if aligned else None)
    scheduler.set_timesteps(start_step or 20, start_step)
    noise = torch.randn(x0.shape, generator=g)
    x = noise if start_step is None else scheduler.add_noise(condition, noise, scheduler.times[0])
    calls = []
    out = sample(lambda x, t: x0, x, scheduler, generator=g, callback=lambda i, n: calls.append((i, n)))
    steps = start_step or 20
    assert calls == [(i, steps) for i in range(1, steps + 1)]
    torch.testing.assert_close(out, x0, atol=0.01, rtol=0)  # the last posterior mean keeps ≈ 0.002·ε


def test_latent_alignment_weights_follow_the_cosine_schedule():
    alignment = LatentAlignment(torch.zeros(1), 0.25)
    assert alignment.weight(0.0) == 1.0 and alignment.weight(0.25) == pytest.approx(0.0)
    assert alignment.weight(0.125) == pytest.approx(0.5) and alignment.weight(0.9) == pytest.approx(0.0)
    x0, cond = torch.full((3,), 2.0), torch.full((3,), -1.0)
    expected = torch.full((3,), 2 - 3 * (1 - 0.8535534))  # λ = ½(cos(π/4) + 1) at t = t_K / 4
    torch.testing.assert_close(LatentAlignment(cond, 0.25).anchor(x0, 0.0625), expected)
    with pytest.raises(InputError, match="start time"):
        LatentAlignment(cond, 0.0)


def test_aligned_step_keeps_the_eq16_marginals():
    """From x_t ~ N(α_t m_t, σ_t²), one aligned step with the true x gives x_s ~ N(α_s m_s, σ_s²)."""
    n = 50000
    g = torch.Generator().manual_seed(5)
    x0, condition = torch.full((n,), 1.0, dtype=torch.float64), torch.full((n,), -1.0, dtype=torch.float64)
    scheduler = VDMScheduler(10, condition)
    scheduler.set_timesteps(3, 3)  # t_K = 0.3; index 1 steps from t = 0.2 to s = 0.1
    alignment = LatentAlignment(condition, 0.3)
    t, s = 0.2, 0.1
    (alpha_t, sigma_t), (alpha_s, sigma_s) = alpha_sigma(t), alpha_sigma(s)
    x_t = alpha_t * alignment.anchor(x0, t) + sigma_t * torch.randn(n, generator=g, dtype=torch.float64)
    out = scheduler.step(x0, 1, x_t, g)
    residual = (out - alpha_s * alignment.anchor(x0, s)) / sigma_s
    assert abs(residual.mean().item()) < 4 / math.sqrt(n) and residual.std().item() == pytest.approx(1, abs=0.02)


def test_add_noise_diffuses_the_condition():
    g = torch.Generator().manual_seed(0)
    condition = torch.full((1, 1, 64, 64), 0.5)
    alpha, sigma = (float(v) for v in alpha_sigma(0.25))
    diffused = VDMScheduler(20).add_noise(condition, torch.randn(condition.shape, generator=g), 0.25)
    assert diffused.mean().item() == pytest.approx(0.5 * alpha, abs=0.02)
    assert diffused.std().item() == pytest.approx(sigma, rel=0.05)


def test_concat_conditioning_feeds_x_t_then_condition_and_log_snr():
    seen = {}

    def network(x, noise_level):
        seen["x"], seen["noise_level"] = x, noise_level
        return x[:, :1]

    out = concat_conditioning(network)(torch.zeros(2, 1, 3), torch.ones(2, 1, 3), torch.tensor([0.0, 0.5]))
    assert seen["x"].shape == (2, 2, 3) and seen["x"][:, 0].eq(0).all() and seen["x"][:, 1].eq(1).all()
    torch.testing.assert_close(seen["noise_level"], log_snr(torch.tensor([0.0, 0.5])).float())
    assert out.shape == (2, 1, 3)


def test_training_loss_plain_and_latent_aligned():
    g = torch.Generator().manual_seed(3)
    target, condition = torch.randn(64, 1, 4, generator=g), torch.randn(64, 1, 4, generator=g)
    assert training_loss(lambda x_t, c, t: target, target, condition, g).item() == 0.0
    seen = {}

    def spy(x_t, c, t):
        seen["x_t"], seen["t"] = x_t, t.double()
        return torch.zeros_like(x_t)

    loss = training_loss(spy, target, condition, g, alignment_start=0.25)
    assert loss.item() == pytest.approx(target.pow(2).mean().item())
    t = seen["t"]
    assert t.max() <= 0.25 and t.min() >= 0
    alignment = LatentAlignment(condition, 0.25)
    alpha, sigma = alpha_sigma(t)
    weights = torch.tensor([alignment.weight(float(v)) for v in t])[:, None, None]
    anchors = weights * target + (1 - weights) * condition
    noise = (seen["x_t"] - alpha.float()[:, None, None] * anchors) / sigma.float()[:, None, None]
    assert abs(noise.mean().item()) < 0.2 and noise.std().item() == pytest.approx(1, abs=0.2)
    weight = torch.zeros(1, requires_grad=True)
    training_loss(lambda x_t, c, t: x_t * weight, target, condition, g).backward()
    assert weight.grad is not None and weight.grad.abs().item() > 0
