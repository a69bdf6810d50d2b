"""Tests of the simulated low-quality acquisitions: geometry, slice profile, k-space, noise, contrast."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from mrisr.simulation.degradation import (
    PRESETS,
    DegradationConfig,
    _gaussian_blur_mm,
    degrade,
    degrade_to_hr_grid,
    get_preset,
)
from mrisr.errors import InputError
from mrisr.imaging.geometry import Grid


def _rotation(angles_deg: tuple[float, float, float]) -> tuple[float, ...]:
    ax, ay, az = (math.radians(a) for a in angles_deg)
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return tuple(float(v) for v in (rz @ ry @ rx).ravel())


OBLIQUE = _rotation((15.0, -10.0, 25.0))
IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def _grid(size, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), direction=IDENTITY) -> Grid:
    return Grid(tuple(size), tuple(float(s) for s in spacing), tuple(float(o) for o in origin), tuple(direction))


def _points(grid: Grid) -> np.ndarray:
    """Physical position of every voxel centre, shape (z, y, x, 3)."""
    z, y, x = np.meshgrid(*(np.arange(n) for n in grid.shape), indexing="ij")
    index = np.stack([x, y, z], axis=-1) * np.asarray(grid.spacing)
    return np.asarray(grid.origin) + index @ grid.direction_matrix().T


def _blob(grid: Grid, centre, sigma_mm: float, amplitude: float = 100.0) -> sitk.Image:
    distance2 = ((_points(grid) - np.asarray(centre)) ** 2).sum(axis=-1)
    return grid.image_from_array((amplitude * np.exp(-distance2 / (2 * sigma_mm**2))).astype(np.float32))


def _centroid(image: sitk.Image) -> np.ndarray:
    weights = sitk.GetArrayFromImage(image).astype(np.float64)
    return (_points(Grid.of(image)) * weights[..., None]).sum(axis=(0, 1, 2)) / weights.sum()


def _psnr(reference: np.ndarray, test: np.ndarray) -> float:
    mse = float(np.mean((reference.astype(np.float64) - test) ** 2))
    return 10 * math.log10(float(reference.max()) ** 2 / mse)


def _fwhm(profile: np.ndarray, spacing: float) -> float:
    """Full width at half maximum of a single-peaked profile, with linear interpolation of the crossings."""
    half = profile.max() / 2
    above = np.nonzero(profile >= half)[0]
    left, right = above[0], above[-1]
    left_x = left - (profile[left] - half) / (profile[left] - profile[left - 1])
    right_x = right + (profile[right] - half) / (profile[right] - profile[right + 1])
    return float((right_x - left_x) * spacing)


# ---------------------------------------------------------------- thick slices and geometry


def test_thick5_on_1mm_volume_gives_12_slices_of_5mm():
    grid = _grid((40, 40, 60), origin=(-20.0, 5.0, 30.0))
    lr = degrade(grid.blank(1.0), PRESETS["thick5"])
    assert lr.GetSize() == (40, 40, 12)
    assert lr.GetSpacing() == pytest.approx((1.0, 1.0, 5.0))
    low, high = Grid.of(lr).extent_corners()
    hr_low, hr_high = grid.extent_corners()
    np.testing.assert_allclose(low, hr_low, atol=1e-6)
    np.testing.assert_allclose(high, hr_high, atol=1e-6)
    assert lr.GetPixelID() == sitk.sitkFloat32


def test_thick_slices_keep_geometry_of_oblique_anisotropic_input():
    grid = _grid((40, 40, 60), spacing=(0.9, 0.9, 1.1), origin=(12.0, -30.0, 7.0), direction=OBLIQUE)
    centre = _points(grid)[33, 18, 21]
    lr = degrade(_blob(grid, centre, sigma_mm=4.0), DegradationConfig(slice_thickness=5.0))
    lr_grid = Grid.of(lr)
    assert lr_grid.size == (40, 40, 13)  # 66 mm / 5 mm = 13.2 slices
    assert lr_grid.spacing == pytest.approx((0.9, 0.9, 5.0))
    np.testing.assert_allclose(lr_grid.direction, OBLIQUE, atol=1e-12)
    extent_change = np.asarray(lr_grid.size) * lr_grid.spacing - np.asarray(grid.size) * grid.spacing
    assert np.all(np.abs(extent_change) <= 0.5 * np.asarray(lr_grid.spacing) + 1e-9)
    np.testing.assert_allclose(lr_grid.extent_corners()[0], grid.extent_corners()[0], atol=1e-6)
    np.testing.assert_allclose(_centroid(lr), centre, atol=0.3)  # the content stays where it was


def test_slice_gap_sets_spacing_to_thickness_plus_gap_on_the_chosen_axis():
    grid = _grid((64, 40, 40))
    lr = degrade(grid.blank(1.0), DegradationConfig(axis=0, slice_thickness=6.0, slice_gap=2.0))
    assert lr.GetSize() == (8, 40, 40)
    assert lr.GetSpacing() == pytest.approx((8.0, 1.0, 1.0))


@pytest.mark.parametrize("spacing", [1.0, 0.5])
def test_slice_profile_fwhm_equals_slice_thickness(spacing):
    plane = np.zeros((int(60 / spacing), 4, 4), dtype=np.float32)
    plane[plane.shape[0] // 2] = 1.0
    blurred = _gaussian_blur_mm(plane, (1.0, 1.0, spacing), (0.0, 0.0, 5.0))
    assert _fwhm(blurred[:, 2, 2], spacing) == pytest.approx(5.0, rel=0.1)
    np.testing.assert_allclose(blurred.sum(axis=0), 1.0, rtol=1e-5)  # in-plane untouched, area kept


def test_thick_slices_blur_only_along_the_slice_axis():
    grid = _grid((32, 32, 40))
    array = np.zeros(grid.shape, dtype=np.float32)
    array[:, 16, :] = 1.0  # a plane perpendicular to y: untouched by blur along z
    lr = sitk.GetArrayFromImage(degrade(grid.image_from_array(array), DegradationConfig(slice_thickness=4.0)))
    assert lr[:, 16, :].min() == pytest.approx(1.0, abs=1e-5)
    assert np.abs(lr[:, 15, :]).max() < 1e-5


# ---------------------------------------------------------------- k-space truncation and down-sampling


def test_kspace2_halves_in_plane_size_and_keeps_mean():
    grid = _grid((48, 40, 20), spacing=(0.8, 0.8, 2.0))
    rng = np.random.default_rng(1)
    array = (50 + 10 * rng.random(grid.shape)).astype(np.float32)
    array[5:15, 10:30, 10:40] += 200
    lr = degrade(grid.image_from_array(array), PRESETS["kspace2"])
    assert lr.GetSize() == (24, 20, 20)
    assert lr.GetSpacing() == pytest.approx((1.6, 1.6, 2.0))
    assert float(sitk.GetArrayFromImage(lr).mean()) == pytest.approx(float(array.mean()), rel=0.01)


def test_kspace_keeps_smooth_images_and_removes_fine_checkerboard():
    grid = _grid((48, 48, 16))
    smooth = _blob(grid, (24.0, 22.0, 8.0), sigma_mm=6.0)
    _, back = degrade_to_hr_grid(smooth, PRESETS["kspace2"])
    assert _psnr(sitk.GetArrayFromImage(smooth), sitk.GetArrayFromImage(back)) > 40
    z, y, x = np.indices(grid.shape)
    checker = (100 + 50 * (-1.0) ** (x + y)).astype(np.float32)
    _, back = degrade_to_hr_grid(grid.image_from_array(checker), PRESETS["kspace2"])
    back = sitk.GetArrayFromImage(back)
    assert back.std() < 0.05 * checker.std()
    assert back.mean() == pytest.approx(100.0, rel=0.01)


@pytest.mark.parametrize("factor", [2.0, 3.0, 4.0])
def test_kspace_samples_sit_on_the_lr_grid_of_an_oblique_input(factor):
    grid = _grid((48, 48, 12), spacing=(0.7, 0.7, 3.0), origin=(-5.0, 8.0, 2.0), direction=OBLIQUE)
    centre = _points(grid)[5, 20, 27]
    lr = degrade(_blob(grid, centre, sigma_mm=3.0), DegradationConfig(kspace_factor=factor))
    assert lr.GetSize() == (round(48 / factor), round(48 / factor), 12)
    np.testing.assert_allclose(Grid.of(lr).extent_corners()[0], grid.extent_corners()[0], atol=1e-6)
    np.testing.assert_allclose(_centroid(lr), centre, atol=0.05)


def test_down4_quarters_every_axis_and_keeps_content_in_place():
    grid = _grid((64, 64, 48), spacing=(1.0, 1.0, 1.2), origin=(3.0, 4.0, 5.0), direction=OBLIQUE)
    centre = _points(grid)[20, 30, 34]
    lr = degrade(_blob(grid, centre, sigma_mm=6.0), PRESETS["down4"])
    assert lr.GetSize() == (16, 16, 12)
    assert lr.GetSpacing() == pytest.approx((4.0, 4.0, 4.8))
    np.testing.assert_allclose(_centroid(lr), centre, atol=0.3)


# ---------------------------------------------------------------- noise


def test_gaussian_noise_has_std_mean_over_snr():
    flat = _grid((32, 32, 32)).blank(100.0)
    noisy = sitk.GetArrayFromImage(degrade(flat, DegradationConfig(snr=20.0)))
    assert noisy.std() == pytest.approx(5.0, rel=0.1)
    assert noisy.mean() == pytest.approx(100.0, abs=0.5)


def test_rician_noise_biases_zero_background_upwards():
    array = np.zeros((32, 32, 32), dtype=np.float32)
    array[:, :, 16:] = 100.0
    noisy = sitk.GetArrayFromImage(degrade(_grid((32, 32, 32)).image_from_array(array),
                                           DegradationConfig(snr=20.0, noise="rician")))
    assert noisy.min() >= 0
    assert noisy[:, :, :16].mean() == pytest.approx(5.0 * math.sqrt(math.pi / 2), rel=0.1)  # Rayleigh mean
    assert noisy[:, :, 16:].mean() > 100.0


def test_noise_is_reproducible_for_a_seed_and_changes_with_it():
    image = _blob(_grid((32, 32, 24)), (16.0, 16.0, 12.0), sigma_mm=8.0)
    config = DegradationConfig(slice_thickness=3.0, snr=10.0, noise="rician", seed=7)
    first = sitk.GetArrayFromImage(degrade(image, config))
    again = sitk.GetArrayFromImage(degrade(image, config))
    other = sitk.GetArrayFromImage(degrade(image, DegradationConfig(slice_thickness=3.0, snr=10.0,
                                                                    noise="rician", seed=8)))
    assert first.tobytes() == again.tobytes()
    assert not np.array_equal(first, other)


# ---------------------------------------------------------------- contrast


def _gradient_sphere(low: float) -> tuple[np.ndarray, np.ndarray]:
    """A sphere on a zero background whose intensity rises linearly along x from `low` to 1000."""
    z, y, x = np.indices((40, 40, 40))
    inside = (z - 20) ** 2 + (y - 20) ** 2 + (x - 20) ** 2 < 16**2
    array = np.where(inside, low + (1000.0 - low) * (x - 5) / 30.0, 0.0).astype(np.float32)
    return array, inside


def test_compression_halves_foreground_spread_and_keeps_its_mean():
    array, inside = _gradient_sphere(low=500.0)
    out = sitk.GetArrayFromImage(degrade(_grid((40, 40, 40)).image_from_array(array),
                                         DegradationConfig(contrast_compression=0.5)))
    assert out[inside].std() == pytest.approx(0.5 * array[inside].std(), rel=0.05)
    assert out[inside].mean() == pytest.approx(array[inside].mean(), rel=0.01)
    assert np.all(out[~inside] == 0)


def test_gamma_above_one_darkens_mid_intensities_and_keeps_order():
    array, inside = _gradient_sphere(low=200.0)
    out = sitk.GetArrayFromImage(degrade(_grid((40, 40, 40)).image_from_array(array),
                                         DegradationConfig(contrast_gamma=1.5)))
    mid = inside & (np.abs(array - 400.0) < 15)
    top = inside & (array > array[inside].max() - 15)
    assert out[mid].mean() < 0.8 * array[mid].mean()
    assert out[top].mean() == pytest.approx(array[top].mean(), rel=0.02)
    order = np.argsort(array[inside], kind="stable")
    assert np.all(np.diff(out[inside][order]) >= -1e-3)


def test_tissue_maps_compress_tissue_means_and_keep_texture():
    grid = _grid((40, 40, 40))
    rng = np.random.default_rng(3)
    texture = (20 * rng.standard_normal(grid.shape)).astype(np.float32)
    z, y, x = np.indices(grid.shape)
    brain = (z - 20) ** 2 + (y - 20) ** 2 + (x - 20) ** 2 < 17**2
    wm = (brain & (x >= 20)).astype(np.float32)
    gm = (brain & (x < 20)).astype(np.float32)
    array = (900 * wm + 600 * gm + texture * brain).astype(np.float32)
    out = sitk.GetArrayFromImage(degrade(grid.image_from_array(array), DegradationConfig(contrast_compression=0.5),
                                         tissue_maps={"wm": wm, "gm": gm}))
    w, g = wm > 0, gm > 0
    assert out[w].mean() - out[g].mean() == pytest.approx(0.5 * (array[w].mean() - array[g].mean()), rel=0.02)
    assert out[w].std() == pytest.approx(array[w].std(), rel=0.01)
    assert np.all(out[~brain] == 0)


def test_tissue_maps_are_checked():
    image = _grid((16, 16, 16)).blank(1.0)
    config = DegradationConfig(contrast_compression=0.3)
    with pytest.raises(InputError, match="'gm'.*shape"):
        degrade(image, config, tissue_maps={"gm": np.ones((8, 16, 16))})
    with pytest.raises(InputError, match=r"'wm'.*\[0, 1\]"):
        degrade(image, config, tissue_maps={"wm": np.full((16, 16, 16), 255.0)})
    with pytest.raises(InputError, match="'bone'"):
        degrade(image, config, tissue_maps={"bone": np.ones((16, 16, 16))})


# ---------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    "field, value",
    [
        ("axis", 3), ("axis", True), ("slice_thickness", 0.0), ("slice_thickness", float("nan")),
        ("slice_gap", -1.0), ("kspace_factor", 0.5), ("downsample_factor", float("inf")),
        ("contrast_gamma", 0.0), ("contrast_compression", 1.0), ("contrast_compression", -0.1),
        ("snr", 0.0), ("noise", "poisson"), ("seed", -1), ("seed", 1.5),
    ],
)
def test_invalid_config_values_raise_input_error_naming_the_field(field, value):
    with pytest.raises(InputError, match=rf"{field}={value!r}"):
        DegradationConfig(**{field: value})


def test_gap_without_thickness_and_oversized_factors_are_rejected():
    with pytest.raises(InputError, match="slice_gap"):
        DegradationConfig(slice_gap=2.0)
    with pytest.raises(InputError, match="kspace_factor"):
        degrade(_grid((40, 40, 20)).blank(1.0), DegradationConfig(kspace_factor=40.0))
    with pytest.raises(InputError, match="slice_thickness"):
        degrade(_grid((40, 40, 20)).blank(1.0), DegradationConfig(slice_thickness=15.0))
    with pytest.raises(InputError, match="unknown degradation preset 'x8'.*thick5"):
        get_preset("x8")


def test_presets_cover_the_papers():
    assert set(PRESETS) == {"thick5", "iqt8", "kspace2", "kspace4", "down4", "lowfield"}
    iqt8 = get_preset("iqt8")
    assert iqt8.slice_thickness + iqt8.slice_gap == 8.0 and iqt8.noise == "rician" and iqt8.snr is not None
    grid = _grid((32, 32, 48))
    image = _blob(grid, (16.0, 16.0, 24.0), sigma_mm=10.0)
    expected = {"thick5": (32, 32, 10), "iqt8": (32, 32, 6), "kspace2": (16, 16, 48),
                "kspace4": (8, 8, 48), "down4": (8, 8, 12), "lowfield": (32, 32, 10)}
    for name, size in expected.items():
        lr = degrade(image, PRESETS[name])
        assert lr.GetSize() == size, name
        assert np.isfinite(sitk.GetArrayViewFromImage(lr)).all(), name


# ---------------------------------------------------------------- pairs on the HR grid


def test_degrade_to_hr_grid_returns_the_input_grid_exactly():
    grid = _grid((36, 30, 40), spacing=(0.9, 0.9, 1.1), origin=(10.0, -4.0, 3.5), direction=OBLIQUE)
    image = _blob(grid, _points(grid)[20, 15, 18], sigma_mm=6.0)
    config = DegradationConfig(slice_thickness=4.0, snr=30.0)
    lr, back = degrade_to_hr_grid(image, config, interpolator="linear")
    assert back.GetSize() == image.GetSize()
    assert back.GetSpacing() == image.GetSpacing()
    assert back.GetOrigin() == image.GetOrigin()
    assert back.GetDirection() == image.GetDirection()
    assert back.GetPixelID() == sitk.sitkFloat32
    assert sitk.GetArrayFromImage(lr).tobytes() == sitk.GetArrayFromImage(degrade(image, config)).tobytes()


def _mni(name: str) -> sitk.Image:
    nilearn = pytest.importorskip("nilearn")
    data = Path(nilearn.__file__).parent / "datasets" / "data"
    path = data / f"mni_icbm152_{name}_tal_nlin_sym_09a_converted.nii.gz"
    if not path.exists():
        pytest.skip(f"{path.name} is not in this nilearn")
    return sitk.Cast(sitk.ReadImage(str(path)), sitk.sitkFloat32)[50:146, 60:172, 50:130]


def test_mni152_degradations_order_by_severity_and_low_field_flattens_contrast():
    t1 = _mni("t1")
    maps = {name: sitk.GetArrayFromImage(_mni(name)) / 255.0 for name in ("gm", "wm")}
    hr = sitk.GetArrayFromImage(t1)
    psnr = {}
    for name in ("thick5", "iqt8", "kspace2", "kspace4"):
        _, back = degrade_to_hr_grid(t1, PRESETS[name], tissue_maps=maps)
        psnr[name] = _psnr(hr, sitk.GetArrayFromImage(back))
    assert psnr["kspace2"] > psnr["kspace4"] + 2
    assert psnr["thick5"] > psnr["iqt8"] + 2
    flat = DegradationConfig(contrast_compression=0.5)
    out = sitk.GetArrayFromImage(degrade(t1, flat, tissue_maps=maps))
    wm, gm = maps["wm"] > 0.9, maps["gm"] > 0.9
    assert out[wm].mean() - out[gm].mean() < 0.6 * (hr[wm].mean() - hr[gm].mean())
    assert out[wm].mean() - out[gm].mean() > 0.3 * (hr[wm].mean() - hr[gm].mean())
