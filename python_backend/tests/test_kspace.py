import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scipy.ndimage import gaussian_filter

from mrisr.simulation import kspace
from mrisr.simulation.degradation import DegradationConfig, degrade
from mrisr.errors import InputError

from conftest import phantom_array


def degraded(hr: np.ndarray, factor: float) -> np.ndarray:
    """The degradation module's in-plane k-space truncation of a (z, y, x) array (axes y and x)."""
    return sitk.GetArrayFromImage(degrade(sitk.GetImageFromArray(hr), DegradationConfig(kspace_factor=factor)))


@pytest.mark.parametrize("shape", [(3, 40, 40), (2, 41, 38), (2, 37, 50)])
@pytest.mark.parametrize("factor", [4, 3, 2.5])
def test_replace_measured_of_the_truth_gives_the_truth(shape, factor):
    hr = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    lr = degraded(hr, factor)
    assert lr.shape[1:] == tuple(max(1, round(n / factor)) for n in shape[1:])  # the degradation's LR size
    out = kspace.replace_measured(torch.from_numpy(hr).double(), torch.from_numpy(lr).double(), dims=(1, 2))
    np.testing.assert_allclose(out.numpy(), hr, atol=1e-5)


def test_replace_measured_moves_a_blurred_estimate_towards_the_truth():
    hr = phantom_array((4, 64, 56), seed=3)
    lr = torch.from_numpy(degraded(hr, 4))
    blurred = gaussian_filter(hr, sigma=(0, 2.5, 2.5))
    out = kspace.replace_measured(torch.from_numpy(blurred), lr, dims=(1, 2)).numpy()
    # Parseval: the squared error drops by exactly the estimate's error energy inside the measured band
    mask = kspace.measured_mask(hr.shape[1:], lr.shape[1:]).numpy()
    band = np.fft.fftn(blurred - hr, axes=(1, 2), norm="ortho")[:, mask]
    removed = float((np.abs(band) ** 2).sum())
    assert ((out - hr) ** 2).sum() == pytest.approx(((blurred - hr) ** 2).sum() - removed, rel=1e-3)
    assert np.sqrt(((out - hr) ** 2).mean()) < 0.9 * np.sqrt(((blurred - hr) ** 2).mean())
    # the corrected estimate is itself consistent: a second pass changes nothing
    again = kspace.replace_measured(torch.from_numpy(out), lr, dims=(1, 2)).numpy()
    np.testing.assert_allclose(again, out, atol=1e-3)


def test_the_measured_kspace_of_the_output_is_the_acquisition():
    hr = np.random.default_rng(1).normal(size=(2, 36, 44)).astype(np.float64)
    lr = torch.from_numpy(degraded(hr.astype(np.float32), 4)).double()
    estimate = torch.from_numpy(np.random.default_rng(2).normal(size=hr.shape))
    out = kspace.replace_measured(estimate, lr, dims=(1, 2))
    mask = kspace.measured_mask((36, 44), lr.shape[1:])
    spectrum = torch.fft.fftn(out, dim=(1, 2), norm="forward")
    np.testing.assert_allclose(spectrum[:, mask].numpy(), kspace.embed_lr_kspace(lr, (36, 44), (1, 2))[:, mask].numpy(),
                               atol=1e-9)
    outside = torch.fft.fftn(estimate, dim=(1, 2), norm="forward")[:, ~mask]
    np.testing.assert_allclose(spectrum[:, ~mask].numpy(), outside.numpy(), atol=1e-9)


def test_weight_blends_between_estimate_and_acquisition():
    hr = np.random.default_rng(3).normal(size=(2, 32, 32)).astype(np.float32)
    lr = torch.from_numpy(degraded(hr, 2)).double()
    estimate = torch.zeros(hr.shape, dtype=torch.float64)
    none = kspace.replace_measured(estimate, lr, weight=0.0)
    half = kspace.replace_measured(estimate, lr, weight=0.5)
    full = kspace.replace_measured(estimate, lr, weight=1.0)
    np.testing.assert_allclose(none.numpy(), 0.0)
    np.testing.assert_allclose(half.numpy(), 0.5 * full.numpy(), atol=1e-12)
    with pytest.raises(InputError, match="weight"):
        kspace.replace_measured(estimate, lr, weight=1.5)


def test_measured_mask_counts_and_real_nyquist_bins():
    # even LR size: its Nyquist bin is not a measured HR coefficient of a real image
    assert int(kspace.measured_mask((16,), (4,)).sum()) == 3
    assert int(kspace.measured_mask((16,), (4,), real=False).sum()) == 4
    assert int(kspace.measured_mask((15, 16), (5, 4)).sum()) == 5 * 3
    # an axis that was not truncated is measured completely
    assert bool(kspace.measured_mask((8,), (8,)).all())


def test_zero_filled_keeps_the_mean_and_the_acquisition():
    hr = phantom_array((2, 48, 40), seed=5)
    lr = torch.from_numpy(degraded(hr, 4)).double()
    filled = torch.fft.ifftn(kspace.embed_lr_kspace(lr, (48, 40), (1, 2)), dim=(1, 2), norm="forward").real
    np.testing.assert_allclose(filled.mean((1, 2)).numpy(), lr.mean((1, 2)).numpy(), rtol=1e-9)
    np.testing.assert_allclose(kspace.replace_measured(filled, lr, (1, 2)).numpy(), filled.numpy(), atol=1e-9)


def test_complex_images_are_supported():
    rng = np.random.default_rng(4)
    hr = torch.from_numpy(rng.normal(size=(24, 20)) + 1j * rng.normal(size=(24, 20)))
    spectrum = torch.fft.fft2(hr, norm="forward")
    mask = kspace.measured_mask((24, 20), (6, 5), real=False)
    lr_spectrum = kspace.embed_lr_kspace(torch.fft.ifft2(spectrum, norm="forward")[:6, :5], (24, 20))
    assert lr_spectrum.shape == (24, 20) and int(mask.sum()) == 30
    out = kspace.replace_measured(hr, torch.zeros(6, 5, dtype=torch.complex128))
    assert out.is_complex()
    np.testing.assert_allclose(torch.fft.fft2(out, norm="forward")[mask].numpy(), 0.0, atol=1e-12)


def test_dc_loss_sees_only_unmeasured_frequencies():
    target = torch.from_numpy(phantom_array((2, 32, 32), seed=6))[:1].unsqueeze(0)
    assert float(kspace.kspace_dc_loss(target, target, (8, 8))) == 0.0
    yy, xx = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    low = torch.from_numpy(np.cos(2 * np.pi * 2 * xx / 32).astype(np.float32))  # frequency 2: measured
    high = torch.from_numpy(np.cos(2 * np.pi * 10 * yy / 32).astype(np.float32))  # frequency 10: not measured
    assert float(kspace.kspace_dc_loss(target + low, target, (8, 8))) == pytest.approx(0.0, abs=1e-6)
    # cos splits into two bins of magnitude 32²/2 each (unnormalised FFT): mean over 32² bins
    expected = 2 * (32 * 32 / 2) ** 2 / (32 * 32)
    assert float(kspace.kspace_dc_loss(target + high, target, (8, 8))) == pytest.approx(expected, rel=1e-4)


def test_shapes_that_do_not_nest_are_refused():
    with pytest.raises(InputError, match="LR size"):
        kspace.measured_mask((8,), (9,))
    with pytest.raises(InputError, match="not a k-space dimension"):
        kspace.replace_measured(torch.zeros(3, 8, 8), torch.zeros(2, 4, 4))
