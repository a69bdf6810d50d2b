"""Patch grids over N-D arrays and weighted blending that reassembles patch predictions exactly.

A `PatchGrid` places overlapping patches so that every voxel is covered, pads volumes smaller than a
patch, and knows each patch's neighbours on the grid. A `BlendingAggregator` accumulates weighted
patch predictions; an identity predictor reproduces the input to float tolerance. The tiler knows
nothing of what predicts the patches (interpolation, diffusion, ...).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np

from mrisr.errors import InputError

WINDOWS = ("gaussian", "cosine", "constant")


@dataclass(frozen=True)
class Patch:
    """One patch: its integer position on the patch grid and its voxel start in the padded array."""

    index: tuple[int, ...]
    start: tuple[int, ...]
    size: tuple[int, ...]

    @property
    def slices(self) -> tuple[slice, ...]:
        return tuple(slice(s, s + n) for s, n in zip(self.start, self.size))


def _axis_starts(length: int, patch: int, overlap: float) -> list[int]:
    """Evenly spread patch starts covering [0, length) with at least the requested overlap."""
    if length <= patch:
        return [0]
    stride = max(1, int(round(patch * (1.0 - overlap))))
    count = math.ceil((length - patch) / stride) + 1
    return sorted({int(round(v)) for v in np.linspace(0, length - patch, count)})


def window(size: Sequence[int], kind: str = "gaussian") -> np.ndarray:
    """Separable blending weights for one patch, strictly positive so every covered voxel has weight."""
    if kind not in WINDOWS:
        raise InputError(f"unknown blending window {kind!r}: choose one of {', '.join(WINDOWS)}")
    profiles = []
    for n in size:
        centre = np.arange(n, dtype=np.float64) + 0.5 - n / 2.0
        if kind == "gaussian":
            profile = np.exp(-0.5 * (centre / (0.125 * n)) ** 2)
        elif kind == "cosine":
            profile = 0.5 + 0.5 * np.cos(np.pi * centre / (n / 2.0))
        else:
            profile = np.ones(n)
        profiles.append(np.maximum(profile, 1e-4))
    weights = profiles[0]
    for profile in profiles[1:]:
        weights = np.multiply.outer(weights, profile)
    return weights.astype(np.float32)


class PatchGrid:
    """Overlapping patches covering an array of `shape` (any dimensionality)."""

    def __init__(self, shape: Sequence[int], patch_size: int | Sequence[int], overlap: float = 0.25):
        self.shape = tuple(int(v) for v in shape)
        size = (patch_size,) * len(self.shape) if np.isscalar(patch_size) else tuple(patch_size)
        if len(size) != len(self.shape) or any(int(p) < 1 for p in size):
            raise InputError(f"patch size {patch_size} is invalid for a {len(self.shape)}D array")
        if not 0.0 <= overlap < 1.0:
            raise InputError(f"overlap {overlap} is out of range: use a fraction in [0, 1)")
        self.patch_size = tuple(int(p) for p in size)
        self.overlap = float(overlap)
        self.padded_shape = tuple(max(d, p) for d, p in zip(self.shape, self.patch_size))
        self.starts = [_axis_starts(d, p, overlap) for d, p in zip(self.padded_shape, self.patch_size)]

    @property
    def grid_shape(self) -> tuple[int, ...]:
        return tuple(len(s) for s in self.starts)

    def patch(self, index: Sequence[int]) -> Patch:
        index = tuple(int(i) for i in index)
        start = tuple(starts[i] for starts, i in zip(self.starts, index))
        return Patch(index, start, self.patch_size)

    def __iter__(self) -> Iterator[Patch]:
        for index in itertools.product(*(range(n) for n in self.grid_shape)):
            yield self.patch(index)

    def __len__(self) -> int:
        return int(np.prod(self.grid_shape))

    def patches(self, mask: np.ndarray | None = None, min_fraction: float = 0.0) -> list[Patch]:
        """Patches in raster order; with a mask, only those whose foreground fraction is ≥ min_fraction (> 0)."""
        if mask is None:
            return list(self)
        padded = self.pad(mask.astype(np.float32), mode="constant")
        return [p for p in self if padded[p.slices].mean() >= min_fraction and padded[p.slices].any()]

    def neighbours(self, patch: Patch) -> dict[tuple[int, ...], Patch]:
        """The adjacent patches on the grid, keyed by offset in {-1, 0, 1}^N (the patch itself excluded)."""
        found = {}
        for offset in itertools.product((-1, 0, 1), repeat=len(self.shape)):
            index = tuple(i + o for i, o in zip(patch.index, offset))
            if any(offset) and all(0 <= i < n for i, n in zip(index, self.grid_shape)):
                found[offset] = self.patch(index)
        return found

    def pad(self, array: np.ndarray, mode: str = "edge") -> np.ndarray:
        """Pad an array of `shape` at the high end of each axis up to the padded shape."""
        if tuple(array.shape[-len(self.shape):]) != self.shape:
            raise ValueError(f"array shape {array.shape} does not end with grid shape {self.shape}")
        widths = [(0, 0)] * (array.ndim - len(self.shape))
        widths += [(0, p - d) for d, p in zip(self.shape, self.padded_shape)]
        return array if not any(w for _, w in widths) else np.pad(array, widths, mode=mode)

    def crop(self, array: np.ndarray) -> np.ndarray:
        """Undo `pad`."""
        lead = (slice(None),) * (array.ndim - len(self.shape))
        return array[lead + tuple(slice(0, d) for d in self.shape)]


class BlendingAggregator:
    """Accumulates weighted patch predictions and returns their blend over the grid's array.

    Without a `device` it accumulates numpy arrays on the host; with one (e.g. "cuda:0") torch tensors
    on that device, so a model's predictions never leave it. Either way in float32.
    """

    def __init__(self, grid: PatchGrid, window_kind: str = "gaussian", channels: int | None = None,
                 device: str | None = None):
        self.grid = grid
        weights = window(grid.patch_size, window_kind)
        shape = (() if channels is None else (channels,)) + grid.padded_shape
        if device is None:
            self.weights, self._sum = weights, np.zeros(shape, dtype=np.float32)
            self._norm = np.zeros(grid.padded_shape, dtype=np.float32)
        else:
            import torch

            self.weights = torch.from_numpy(weights).to(device)
            self._sum = torch.zeros(shape, dtype=torch.float32, device=device)
            self._norm = torch.zeros(grid.padded_shape, dtype=torch.float32, device=device)

    def add(self, patch: Patch, prediction: Any) -> None:
        """Add one patch prediction of shape ([C,] *patch_size): a numpy array, or a tensor on the device."""
        lead = (slice(None),) * (prediction.ndim - len(patch.size))
        self._sum[lead + patch.slices] += prediction * self.weights
        self._norm[patch.slices] += self.weights

    def result(self, fallback: Any = None) -> Any:
        """The blended array cropped to the grid's shape; voxels no patch covered take `fallback` (else 0)."""
        covered = self._norm > 0
        if isinstance(self._sum, np.ndarray):
            blended = self.grid.crop(np.divide(self._sum, np.where(covered, self._norm, 1.0)).astype(np.float32))
            if fallback is not None:
                blended = np.where(self.grid.crop(covered), blended, fallback).astype(np.float32)
            return blended
        import torch

        blended = self.grid.crop(self._sum / torch.where(covered, self._norm, torch.ones_like(self._norm)))
        return blended if fallback is None else torch.where(self.grid.crop(covered), blended, fallback)


def split_block(block_size: Sequence[int], parts: int | Sequence[int]) -> PatchGrid:
    """The grid of non-overlapping sub-patches of a block (e.g. 96³ into 3×3×3 patches of 32³)."""
    parts = (parts,) * len(block_size) if np.isscalar(parts) else tuple(parts)
    if any(b % p for b, p in zip(block_size, parts)):
        raise InputError(f"block size {tuple(block_size)} is not divisible into {parts} sub-patches")
    return PatchGrid(block_size, [b // p for b, p in zip(block_size, parts)], overlap=0.0)
