"""2D slice stacks of a 3D array along a chosen axis, for the slice-wise (2D) methods."""

from __future__ import annotations

from typing import Iterator

import numpy as np

from mrisr.errors import InputError


def _check_axis(axis: int) -> None:
    if axis not in (0, 1, 2):
        raise InputError(f"slice axis {axis} is invalid: use 0, 1 or 2 (numpy z, y, x order)")


def slice_indices(shape: tuple[int, ...], axis: int, mask: np.ndarray | None = None) -> list[int]:
    """Indices of the slices along `axis` (numpy order); with a mask, only slices holding foreground."""
    _check_axis(axis)
    if mask is None:
        return list(range(shape[axis]))
    other = tuple(a for a in range(3) if a != axis)
    return [int(i) for i in np.flatnonzero(mask.any(axis=other))]


def take_slices(volume: np.ndarray, axis: int, indices: list[int]) -> np.ndarray:
    """The slices `indices` along `axis` as a (B, H, W) stack."""
    _check_axis(axis)
    return np.ascontiguousarray(np.moveaxis(volume, axis, 0)[indices])


def put_slices(volume: np.ndarray, axis: int, indices: list[int], stack: np.ndarray) -> None:
    """Write a (B, H, W) stack back into `volume` at `indices` along `axis` (in place)."""
    _check_axis(axis)
    np.moveaxis(volume, axis, 0)[indices] = stack


def iter_slice_batches(
    volume: np.ndarray, axis: int, batch_size: int, mask: np.ndarray | None = None
) -> Iterator[tuple[list[int], np.ndarray]]:
    """Yield (indices, (B, H, W) stack) batches of the (foreground) slices along `axis`."""
    if batch_size < 1:
        raise InputError(f"batch size {batch_size} is invalid: use 1 or more")
    indices = slice_indices(volume.shape, axis, mask)
    for first in range(0, len(indices), batch_size):
        chunk = indices[first:first + batch_size]
        yield chunk, take_slices(volume, axis, chunk)
