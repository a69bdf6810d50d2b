import numpy as np
import pytest

from mrisr.errors import InputError
from mrisr.inference.slicing import iter_slice_batches, put_slices, slice_indices


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_slices_round_trip_along_each_axis(axis):
    volume = np.random.default_rng(0).normal(size=(6, 7, 8)).astype(np.float32)
    rebuilt = np.zeros_like(volume)
    for indices, stack in iter_slice_batches(volume, axis, batch_size=4):
        assert stack.shape[1:] == tuple(n for a, n in enumerate(volume.shape) if a != axis)
        put_slices(rebuilt, axis, indices, stack)
    np.testing.assert_array_equal(rebuilt, volume)


def test_empty_slices_are_skipped():
    mask = np.zeros((6, 7, 8), bool)
    mask[2:4, 3, 3] = True
    assert slice_indices(mask.shape, 0, mask) == [2, 3]
    assert slice_indices(mask.shape, 2, mask) == [3]


def test_bad_axis_and_batch():
    with pytest.raises(InputError):
        slice_indices((2, 2, 2), 3)
    with pytest.raises(InputError):
        list(iter_slice_batches(np.zeros((2, 2, 2)), 0, 0))
