import numpy as np
import pytest

from mrisr.errors import InputError
from mrisr.inference.tiling import BlendingAggregator, PatchGrid, split_block, window


def stitch(volume, patch_size, overlap, window_kind="gaussian", predictor=lambda x: x):
    grid = PatchGrid(volume.shape, patch_size, overlap)
    padded = grid.pad(volume)
    aggregator = BlendingAggregator(grid, window_kind)
    for patch in grid:
        aggregator.add(patch, predictor(padded[patch.slices]))
    return aggregator.result()


@pytest.mark.parametrize("shape", [(32, 32, 32), (37, 50, 23), (5, 7, 9), (1, 40, 33), (64, 17, 100)])
@pytest.mark.parametrize("window_kind", ["gaussian", "cosine", "constant"])
def test_identity_predictor_reproduces_any_shape(shape, window_kind):
    volume = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    np.testing.assert_allclose(stitch(volume, 16, 0.5, window_kind), volume, rtol=1e-5, atol=1e-5)


def test_affine_predictor_is_reproduced_after_blending():
    volume = np.random.default_rng(1).uniform(size=(30, 30, 30)).astype(np.float32)
    np.testing.assert_allclose(stitch(volume, 12, 0.25, predictor=lambda x: 2 * x + 1), 2 * volume + 1, atol=1e-5)


def test_every_voxel_is_covered_and_overlap_is_honoured():
    grid = PatchGrid((100,), 32, overlap=0.5)
    starts = grid.starts[0]
    assert starts[0] == 0 and starts[-1] == 100 - 32
    assert max(np.diff(starts)) <= 16  # stride ≤ patch × (1 − overlap)


def test_small_volume_is_padded_to_one_patch():
    grid = PatchGrid((5, 7, 9), 16)
    assert grid.padded_shape == (16, 16, 16) and len(grid) == 1


def test_neighbours_of_centre_and_corner():
    grid = PatchGrid((96, 96, 96), 32, overlap=0.0)
    assert grid.grid_shape == (3, 3, 3)
    centre = grid.patch((1, 1, 1))
    neighbours = grid.neighbours(centre)
    assert len(neighbours) == 26
    assert neighbours[(0, 0, 1)].start == (32, 32, 64)
    assert len(grid.neighbours(grid.patch((0, 0, 0)))) == 7


def test_split_block_into_27_subpatches():
    sub = split_block((96, 96, 96), 3)
    assert sub.grid_shape == (3, 3, 3) and sub.patch_size == (32, 32, 32)
    with pytest.raises(InputError):
        split_block((96, 96, 90), 4)


def test_background_patches_are_skipped_and_fall_back():
    volume = np.zeros((64, 64, 64), np.float32)
    mask = np.zeros_like(volume, dtype=bool)
    mask[:20, :20, :20] = True
    grid = PatchGrid(volume.shape, 32, overlap=0.0)
    kept = grid.patches(mask)
    assert [p.index for p in kept] == [(0, 0, 0)]
    aggregator = BlendingAggregator(grid)
    for patch in kept:
        aggregator.add(patch, np.ones(patch.size, np.float32))
    out = aggregator.result(fallback=np.full(volume.shape, -1.0, np.float32))
    assert np.all(out[:32, :32, :32] == 1.0) and np.all(out[32:] == -1.0)


def test_window_is_positive_and_peaks_in_centre():
    w = window((16, 16), "cosine")
    assert w.min() > 0 and w[8, 8] == w.max()


@pytest.mark.parametrize("bad", [{"overlap": 1.0}, {"overlap": -0.1}, {"patch_size": 0}])
def test_invalid_grid_arguments(bad):
    kwargs = {"patch_size": 8, "overlap": 0.25} | bad
    with pytest.raises(InputError):
        PatchGrid((10, 10, 10), **kwargs)


def test_blending_on_a_torch_device_matches_the_numpy_blend_exactly():
    import torch

    volume = np.random.default_rng(5).normal(size=(20, 26, 17)).astype(np.float32)
    grid = PatchGrid(volume.shape, 12, 0.4)
    padded = grid.pad(volume)
    host, device = BlendingAggregator(grid), BlendingAggregator(grid, device="cpu")
    mask = np.zeros(volume.shape, bool)
    mask[:4, :4, :4] = True
    for patch in grid.patches(mask):  # patches away from the corner are skipped: their voxels stay uncovered
        prediction = np.sin(padded[patch.slices])
        host.add(patch, prediction)
        device.add(patch, torch.from_numpy(prediction))
    fallback = np.full(volume.shape, -5.0, np.float32)
    expected = host.result(fallback)
    got = device.result(torch.from_numpy(fallback))
    assert isinstance(got, torch.Tensor) and (expected == -5.0).any()
    np.testing.assert_array_equal(got.numpy(), expected)
