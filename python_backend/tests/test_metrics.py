"""Tests for mrisr.evaluation.metrics on small synthetic volumes: hand-computed fixtures, invariants, skimage cross-checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage
from skimage.metrics import structural_similarity

from mrisr.errors import InputError
from mrisr.imaging.foreground import foreground_mask
from mrisr.imaging.geometry import Grid, grid_with_spacing, resample
from mrisr.evaluation.metrics import (
    acquire_on_grid,
    consistency,
    head_consistency,
    dice,
    evaluate,
    format_table,
    gmsd,
    ms_ssim,
    psnr,
    ssim,
    ssim_map,
)


def blobs(shape: tuple[int, int, int] = (32, 32, 32), seed: int = 0) -> np.ndarray:
    """A structured test volume: smooth Gaussian blobs plus a sharp-edged sphere, values >= 0."""
    rng = np.random.default_rng(seed)
    axes = np.meshgrid(*[np.arange(n, dtype=float) for n in shape], indexing="ij")
    volume = np.zeros(shape)
    for _ in range(6):
        centre = rng.uniform(0.2, 0.8, 3) * np.asarray(shape)
        distance2 = sum((a - c) ** 2 for a, c in zip(axes, centre))
        volume += rng.uniform(0.5, 1.0) * np.exp(-distance2 / (2 * rng.uniform(2.0, 5.0) ** 2))
    centre = np.asarray(shape) / 2
    volume += 0.5 * (sum((a - c) ** 2 for a, c in zip(axes, centre)) < (min(shape) / 4) ** 2)
    return volume


def as_image(array: np.ndarray, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0)) -> sitk.Image:
    image = sitk.GetImageFromArray(array.astype(np.float32))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    return image


def in_plane_blur(volume: np.ndarray, sigma: float) -> np.ndarray:
    return ndimage.gaussian_filter(volume, (0.0, sigma, sigma))


@pytest.fixture(scope="module")
def volume() -> np.ndarray:
    return blobs()


# PSNR ---------------------------------------------------------------------------------------------

def test_psnr_constant_error_matches_hand_computation():
    ref = np.zeros((8, 8, 8))
    ref[0, 0, 0], ref[-1, -1, -1] = 0.0, 2.0  # range R = 2
    assert psnr(ref + 0.1, ref) == pytest.approx(20 * math.log10(2.0 / 0.1), abs=1e-9)  # 26.02 dB
    assert psnr(ref + 0.1, ref, data_range=1.0) == pytest.approx(20.0, abs=1e-9)


def test_psnr_identical_is_inf(volume):
    assert psnr(volume, volume) == float("inf")


def test_psnr_mask_selects_voxels(volume):
    mask = np.zeros(volume.shape, dtype=bool)
    mask[:16] = True
    pred = volume.copy()
    pred[~mask] += 0.5  # error only outside the mask
    pred[mask] += 0.05
    value_range = volume.max() - volume.min()
    assert psnr(pred, volume, mask=mask) == pytest.approx(20 * math.log10(value_range / 0.05), abs=1e-6)
    assert psnr(pred, volume) < psnr(pred, volume, mask=mask)


def test_psnr_rejects_bad_inputs(volume):
    with pytest.raises(InputError, match="shape"):
        psnr(volume[:-1], volume)
    with pytest.raises(InputError, match="data range"):
        psnr(volume, np.ones_like(volume))
    with pytest.raises(InputError, match="mask is empty"):
        psnr(volume, volume, mask=np.zeros(volume.shape, dtype=bool))


# SSIM ---------------------------------------------------------------------------------------------

def test_ssim_of_identical_is_one(volume):
    assert ssim(volume, volume) == pytest.approx(1.0, abs=1e-12)


def test_ssim_matches_skimage_3d(volume):
    noisy = volume + np.random.default_rng(1).normal(0.0, 0.1, volume.shape)
    value_range = float(volume.max() - volume.min())
    expected_mean, expected_map = structural_similarity(
        noisy, volume, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
        data_range=value_range, full=True)
    np.testing.assert_allclose(ssim_map(noisy, volume, value_range), expected_map, atol=1e-9)
    interior = np.zeros(volume.shape, dtype=bool)
    interior[5:-5, 5:-5, 5:-5] = True  # skimage's mean crops the 11-voxel window's radius
    assert ssim(noisy, volume, value_range, mask=interior) == pytest.approx(expected_mean, abs=1e-9)
    assert 0.2 < expected_mean < 0.95  # the fixture is in a discriminating range


def test_ssim_decreases_with_noise(volume):
    noise = np.random.default_rng(2).normal(0.0, 1.0, volume.shape)
    scores = [ssim(volume + level * noise, volume) for level in (0.01, 0.05, 0.1, 0.2, 0.4)]
    assert all(a > b for a, b in zip(scores, scores[1:])), scores


# MS-SSIM ------------------------------------------------------------------------------------------

def test_ms_ssim_of_identical_is_one(volume):
    assert ms_ssim(volume, volume) == pytest.approx(1.0, abs=1e-12)


def test_ms_ssim_decreases_with_blur():
    ref = blobs((24, 48, 48))  # 48-pixel slices: 3 scales
    scores = [ms_ssim(in_plane_blur(ref, sigma), ref) for sigma in (0.5, 1.0, 2.0, 3.0)]
    assert all(a > b for a, b in zip(scores, scores[1:])), scores
    assert scores[0] < 1.0


def test_ms_ssim_single_scale_equals_skimage_slice_mean():
    ref = blobs((6, 16, 16))  # 16-pixel slices: only one scale fits, so MS-SSIM is plain 2D SSIM
    noisy = ref + np.random.default_rng(3).normal(0.0, 0.1, ref.shape)
    value_range = float(ref.max() - ref.min())
    expected = np.mean([
        structural_similarity(noisy[k], ref[k], gaussian_weights=True, sigma=1.5,
                              use_sample_covariance=False, data_range=value_range)
        for k in range(ref.shape[0])])
    assert ms_ssim(noisy, ref, value_range) == pytest.approx(expected, abs=1e-9)


def test_slicewise_metrics_skip_constant_reference_slices():
    ref = np.zeros((12, 32, 32))
    ref[3:9] = blobs((6, 32, 32))
    pred = in_plane_blur(ref, 1.0)
    junk = pred.copy()
    junk[:3] = np.random.default_rng(4).normal(0.0, 1.0, (3, 32, 32))  # only in empty reference slices
    value_range = float(ref.max() - ref.min())
    for metric in (ms_ssim, gmsd):
        assert metric(junk, ref, value_range) == pytest.approx(metric(pred[3:9], ref[3:9], value_range))
    assert math.isnan(ms_ssim(pred, np.zeros_like(ref) + np.arange(12)[:, None, None]))


# GMSD ---------------------------------------------------------------------------------------------

def test_gmsd_of_identical_is_zero(volume):
    assert gmsd(volume, volume) == pytest.approx(0.0, abs=1e-12)


def test_gmsd_increases_with_blur_and_noise(volume):
    blurred = [gmsd(in_plane_blur(volume, sigma), volume) for sigma in (0.5, 1.0, 2.0, 3.0)]
    assert all(a < b for a, b in zip(blurred, blurred[1:])), blurred
    noise = np.random.default_rng(5).normal(0.0, 1.0, volume.shape)
    noisy = [gmsd(volume + level * noise, volume) for level in (0.01, 0.05, 0.1, 0.2)]
    assert all(a < b for a, b in zip(noisy, noisy[1:])), noisy
    assert 0.0 < blurred[0] and noisy[-1] < 0.5



def reference_gmsd_slice(distorted: np.ndarray, reference: np.ndarray) -> float:
    """GMSD of one 2D image pair in [0, 255], transcribed from the authors' published MATLAB GMSD.m
    (Xue et al. 2014): conv2 'same' with a 2×2 average, every second pixel, Prewitt /3 gradients by
    conv2 'same' (zero padding), T = 170, std2 (N − 1)."""
    from scipy.signal import convolve2d

    def magnitude(image: np.ndarray) -> np.ndarray:
        # MATLAB's 'same' keeps the full result from index ⌊k/2⌋ = 1 on (SciPy's from 0 for even k)
        averaged = convolve2d(image, np.full((2, 2), 0.25), mode="full")[1:, 1:][::2, ::2]
        dx = np.array([[1.0, 0.0, -1.0]] * 3) / 3.0
        return np.hypot(convolve2d(averaged, dx, mode="same"), convolve2d(averaged, dx.T, mode="same"))

    g1, g2 = magnitude(reference), magnitude(distorted)
    return float(np.std((2 * g1 * g2 + 170) / (g1 ** 2 + g2 ** 2 + 170), ddof=1))


def test_gmsd_matches_the_authors_matlab_definition(volume):
    """Even-sized slices: the only difference left is std vs std2 (N vs N − 1), < 0.1 % at 16×16 pixels."""
    ref = volume[:, :32, :32]
    value_range = float(ref.max() - ref.min())
    scaled = [(a - ref.min()) * 255.0 / value_range for a in (ref, in_plane_blur(ref, 1.5))]
    expected = np.mean([reference_gmsd_slice(scaled[1][k], scaled[0][k]) for k in range(ref.shape[0])
                        if np.ptp(ref[k]) > 0])
    assert expected > 0.01
    assert gmsd(in_plane_blur(ref, 1.5), ref, value_range) == pytest.approx(expected, rel=2e-3)

# Acquisition model and consistency ----------------------------------------------------------------

def test_acquire_on_grid_blurs_only_the_thick_axis():
    z = np.arange(48, dtype=float)
    x = np.arange(32, dtype=float)
    period_mm = 16.0
    along_z = np.broadcast_to(np.sin(2 * np.pi * z / period_mm)[:, None, None], (48, 32, 32))
    along_x = np.broadcast_to(np.sin(2 * np.pi * x / period_mm)[None, None, :], (48, 32, 32))
    hr_grid = Grid.of(as_image(along_z))
    lr_grid = grid_with_spacing(hr_grid, (1.0, 1.0, 5.0))  # LR centres fall on HR voxel centres
    assert lr_grid.size == (32, 32, 10)
    lr_z = sitk.GetArrayFromImage(acquire_on_grid(as_image(along_z), lr_grid))
    lr_x = sitk.GetArrayFromImage(acquire_on_grid(as_image(along_x), lr_grid))
    # Gaussian of FWHM 5 mm: sigma = 2.123 mm, attenuating a 16 mm period by exp(-2 pi^2 sigma^2 / P^2).
    attenuation = math.exp(-2 * math.pi ** 2 * (5.0 / 2.3548) ** 2 / period_mm ** 2)  # 0.706
    centres_mm = 2.0 + 5.0 * np.arange(10)
    middle = slice(3, 7)  # away from the z borders
    expected = attenuation * np.sin(2 * np.pi * centres_mm / period_mm)
    np.testing.assert_allclose(lr_z[middle, 16, 16], expected[middle], atol=0.01)
    np.testing.assert_allclose(lr_x[5, 16, :], along_x[0, 0, :], atol=1e-5)  # x untouched


def test_consistency_ranks_faithful_output_above_degraded_ones():
    hr_array = blobs((48, 32, 32))
    hr = as_image(hr_array)
    lr = acquire_on_grid(hr, grid_with_spacing(Grid.of(hr), (1.0, 1.0, 5.0)))
    upsampled = resample(lr, Grid.of(hr), "bspline")
    blurred = as_image(ndimage.gaussian_filter(hr_array, 3.0))
    shifted = as_image(np.roll(hr_array, 4, axis=(1, 2)))
    faithful = consistency(hr, lr)
    interpolated = consistency(upsampled, lr)
    assert faithful > 40.0
    assert faithful > interpolated > consistency(blurred, lr)
    assert interpolated > consistency(shifted, lr)


def test_head_consistency_ignores_the_air():
    hr_array = np.zeros((48, 48, 48), dtype=np.float32)
    hr_array[8:40, 12:36, 12:36] = blobs((32, 24, 24)) + 1.0  # a bright object in air
    hr = as_image(hr_array)
    lr = acquire_on_grid(hr, grid_with_spacing(Grid.of(hr), (1.0, 1.0, 4.0)))
    noisy_air = hr_array + np.where(hr_array > 0, 0.0, 0.05) * np.random.default_rng(0).standard_normal(hr_array.shape)
    noisy = as_image(noisy_air.astype(np.float32))
    assert consistency(noisy, lr) < consistency(hr, lr) - 10.0  # the air's noise counts over the whole LR
    assert head_consistency(noisy, lr) > consistency(noisy, lr) + 2.0  # much less inside the head (its rim only)
    lr_mask = foreground_mask(sitk.GetArrayFromImage(lr))
    assert 0.2 < lr_mask.mean() < 0.9
    assert head_consistency(noisy, lr) == pytest.approx(consistency(noisy, lr, lr_mask))


# Dice --------------------------------------------------------------------------------------------

def test_dice_of_overlapping_boxes():
    pred = np.zeros((20, 20, 20), dtype=np.int32)
    ref = np.zeros_like(pred)
    pred[0:10, 0:10, 0:10] = 1  # 1000 voxels
    ref[5:15, 0:10, 0:10] = 1  # 1000 voxels, 500 shared
    pred[15:20, 15:20, 15:20] = 2
    ref[15:20, 15:20, 15:20] = 2  # identical
    assert dice(pred, ref) == pytest.approx({1: 0.5, 2: 1.0})
    assert dice(pred, ref, labels=[1, 3]) == pytest.approx({1: 0.5, 3: 1.0})  # 3 absent from both


def test_dice_rejects_empty_and_mismatched_maps():
    empty = np.zeros((4, 4, 4), dtype=np.int32)
    with pytest.raises(InputError, match="no nonzero labels"):
        dice(empty, empty)
    with pytest.raises(InputError, match="shapes differ"):
        dice(empty, empty[:-1])


# evaluate and format_table ------------------------------------------------------------------------

def test_evaluate_returns_all_metrics(volume):
    ref = as_image(volume)
    pred = as_image(in_plane_blur(volume, 1.0))
    mask = volume > 0.3
    results = evaluate(pred, ref, mask=mask)
    assert set(results) == {"psnr", "ssim", "ms_ssim", "gmsd", "data_range"}
    pred_array = sitk.GetArrayFromImage(pred).astype(np.float64)
    ref_array = sitk.GetArrayFromImage(ref).astype(np.float64)
    assert results["data_range"] == pytest.approx(ref_array.max() - ref_array.min())
    assert results["psnr"] == pytest.approx(psnr(pred_array, ref_array, mask=mask))
    assert results["ssim"] == pytest.approx(ssim(pred_array, ref_array, mask=mask))
    lr = acquire_on_grid(ref, grid_with_spacing(Grid.of(ref), (1.0, 1.0, 4.0)))
    with_lr = evaluate(pred, ref, lr=lr)
    assert with_lr["consistency"] == pytest.approx(consistency(pred, lr))
    assert with_lr["consistency_head"] == pytest.approx(head_consistency(pred, lr))
    assert with_lr["psnr"] == pytest.approx(psnr(pred_array, ref_array))  # no mask: all voxels
    assert abs(with_lr["psnr"] - results["psnr"]) > 0.1


def test_evaluate_rejects_other_grids(volume):
    ref = as_image(volume)
    for pred in (as_image(volume, origin=(0.0, 0.0, 0.5)), as_image(volume, spacing=(1.0, 1.0, 1.1)),
                 as_image(volume[:-1])):
        with pytest.raises(InputError, match="resample the prediction onto the reference grid"):
            evaluate(pred, ref)


def test_format_table_aligns_and_rounds():
    table = format_table({
        "bspline": {"psnr": 30.123456, "ssim": 0.912345},
        "diffusion": {"psnr": 35.0, "ssim": 0.95, "gmsd": 0.0123456},
    })
    lines = table.splitlines()
    assert lines[0].split() == ["name", "psnr", "ssim", "gmsd"]
    assert lines[1].split() == ["bspline", "30.12", "0.9123", "-"]
    assert lines[2].split() == ["diffusion", "35.00", "0.9500", "0.0123"]
    assert len({len(line) for line in lines}) == 1  # right-aligned columns: equal line lengths
