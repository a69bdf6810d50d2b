import numpy as np
import pytest
import SimpleITK as sitk

from mrisr.errors import InputError
from mrisr.imaging.geometry import Grid, finest_isotropic_spacing, grid_with_spacing, resample


def test_oblique_anisotropic_extent_is_preserved(oblique_thick):
    grid = Grid.of(oblique_thick)
    out = grid_with_spacing(grid, finest_isotropic_spacing(grid))
    assert out.size == (40, 44, 50)
    assert out.direction == grid.direction
    low_in, high_in = grid.extent_corners()
    low_out, high_out = out.extent_corners()
    # Extent kept to < half an output voxel (here exactly, since 9 × 5 / 0.9 = 50).
    assert np.abs(low_out - low_in).max() < 0.45
    assert np.abs(high_out - high_in).max() < 0.45


def test_round_trip_back_to_input_spacing_is_exact_geometry(oblique_thick):
    grid = Grid.of(oblique_thick)
    fine = grid_with_spacing(grid, (0.9, 0.9, 0.9))
    back = grid_with_spacing(fine, grid.spacing)
    assert back.size == grid.size
    np.testing.assert_allclose(back.origin, grid.origin, atol=1e-9)
    np.testing.assert_allclose(back.spacing, grid.spacing)


def test_non_multiple_extent_is_within_half_voxel():
    grid = Grid((10, 10, 7), (1.0, 1.0, 3.3), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()))
    out = grid_with_spacing(grid, (1.0, 1.0, 1.0))
    assert out.size[2] == 23  # round(23.1)
    (_, high_in), (_, high_out) = grid.extent_corners(), out.extent_corners()
    assert abs(high_out[2] - high_in[2]) <= 0.5


@pytest.mark.parametrize("spacing", [(0, 1, 1), (-1, 1, 1), (1, float("nan"), 1), (1, 1)])
def test_invalid_spacing_is_refused(spacing):
    grid = Grid((4, 4, 4), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()))
    with pytest.raises(InputError, match="spacing"):
        grid_with_spacing(grid, spacing)


def test_voxel_budget_is_enforced():
    grid = Grid((100, 100, 100), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()))
    with pytest.raises(InputError, match="over the budget"):
        grid_with_spacing(grid, (0.1, 0.1, 0.1), max_voxels=10_000_000)


def test_resample_keeps_physical_positions(oblique_thick):
    """A bright slab stays at the same physical place after resampling to 0.9 mm isotropic."""
    array = np.zeros((9, 44, 40), np.float32)
    array[4] = 100.0
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(oblique_thick)
    out = resample(image, grid_with_spacing(Grid.of(image), (0.9, 0.9, 0.9)), "linear")
    profile = sitk.GetArrayFromImage(out)[:, 22, 20]
    peak_index = int(np.argmax(profile))
    peak = out.TransformIndexToPhysicalPoint((20, 22, peak_index))
    expected = image.TransformIndexToPhysicalPoint((20, 22, 4))
    # The output's (20, 22) column is the input's column; the peak lies within half an output voxel.
    assert np.linalg.norm(np.subtract(peak, expected)) < 0.46


def test_borders_are_extrapolated_not_zeroed():
    image = sitk.GetImageFromArray(np.full((4, 6, 6), 50.0, np.float32))
    image.SetSpacing((1.0, 1.0, 5.0))
    out = sitk.GetArrayFromImage(resample(image, grid_with_spacing(Grid.of(image), (1, 1, 1)), "bspline"))
    assert out.shape == (20, 6, 6)
    np.testing.assert_allclose(out, 50.0, atol=1e-3)
