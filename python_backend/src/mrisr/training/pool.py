"""A disk-cached pool of synthetic training pairs, normalised exactly as the inference pipeline does,
with random 3D blocks and 2D slice stacks drawn from it."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from mrisr.imaging.foreground import foreground_mask
from mrisr.imaging.normalization import robust_scale
from mrisr.simulation.synthetic import SyntheticPair, make_pair
from mrisr.training.volume_folder import configured_folder, configured_mix

log = logging.getLogger(__name__)


def cache_folder() -> Path:
    return Path(os.environ.get("MRISR_CACHE", Path.home() / ".cache" / "mrisr")).expanduser() / "pairs"


@dataclass(frozen=True)
class PairArrays:
    """One pair as (z, y, x) float32 arrays: target `hr` and `condition` share the LR's intensity scale
    (so the network learns the same mapping the pipeline asks of it), `reference` has its own scale."""

    hr: np.ndarray
    condition: np.ndarray
    reference: np.ndarray
    mask: np.ndarray


def _normalised(pair: SyntheticPair) -> PairArrays:
    lr = sitk.GetArrayFromImage(pair.lr)
    scale = robust_scale(lr, foreground_mask(lr))
    reference = sitk.GetArrayFromImage(pair.reference)
    condition = sitk.GetArrayFromImage(pair.condition)
    return PairArrays(
        hr=scale.apply(sitk.GetArrayFromImage(pair.hr)),
        condition=scale.apply(condition),
        reference=robust_scale(reference, foreground_mask(reference)).apply(reference),
        mask=foreground_mask(condition),
    )


def padded_to(pair: PairArrays, size: tuple[int, int, int]) -> PairArrays:
    """The pair zero-padded (mask False) at the far end of any axis shorter than `size`: a coarse-voxel
    subject (e.g. 2 mm) can be smaller than a training crop."""
    widths = [(0, max(0, s - n)) for n, s in zip(pair.hr.shape, size)]
    if not any(w for _, w in widths):
        return pair
    return PairArrays(*(np.pad(getattr(pair, f), widths) for f in ("hr", "condition", "reference", "mask")))


class PairPool:
    """`count` synthetic pairs of one split, made on first use and cached as .npz under ~/.cache/mrisr;
    with `mrisr train --data DIR`, the subjects of DIR instead (their count replaces `count`), followed in
    the training split by `--mix-synthetic N` built-in pairs."""

    def __init__(self, count: int, validation: bool = False, folder: Path | None = None):
        self.source = configured_folder(validation)
        self.subjects = len(self.source.subjects) if self.source else 0
        self.mixed = configured_mix() if self.source and not validation else 0  # built-in pairs after the subjects
        self.count = self.subjects + self.mixed if self.source else count
        self.validation = validation
        self.folder = folder or cache_folder()
        if self.source:
            self.folder = self.folder.parent / self.source.cache_name
        self._loaded: dict[int, PairArrays] = {}

    def _make(self, index: int) -> PairArrays:
        if self.source and index < self.subjects:
            pair = self.source.pair(index)
        else:
            pair = make_pair(index - self.subjects, validation=self.validation)
        return _normalised(pair)

    def _path(self, index: int) -> Path:
        return self.folder / f"{'val' if self.validation else 'train'}_{index:05d}.npz"

    def get(self, index: int) -> PairArrays:
        """Pair `index` (0 ≤ index < count), from memory, the disk cache, or made now."""
        if index not in self._loaded:
            path = self._path(index)
            if path.exists():
                with np.load(path) as data:
                    arrays = PairArrays(**{k: data[k].astype(np.float32 if k != "mask" else bool) for k in data})
            else:
                log.info("making synthetic pair %d (%s)", index, "validation" if self.validation else "train")
                arrays = self._make(index)
                self.folder.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp.npz")
                np.savez(tmp, hr=arrays.hr.astype(np.float16), condition=arrays.condition.astype(np.float16),
                         reference=arrays.reference.astype(np.float16), mask=arrays.mask)
                os.replace(tmp, path)
            self._loaded[index] = arrays
        return self._loaded[index]

    def random_block(self, rng: np.random.Generator, size: tuple[int, int, int],
                     min_foreground: float = 0.3) -> PairArrays:
        """A random (D, H, W) block of a random pair with at least `min_foreground` foreground (10 tries)."""
        pair = padded_to(self.get(int(rng.integers(self.count))), size)
        for _ in range(10):
            start = [int(rng.integers(0, n - s + 1)) for n, s in zip(pair.hr.shape, size)]
            region = tuple(slice(a, a + s) for a, s in zip(start, size))
            if pair.mask[region].mean() >= min_foreground:
                break
        return PairArrays(*(getattr(pair, f)[region] for f in ("hr", "condition", "reference", "mask")))

    def random_slices(self, rng: np.random.Generator, count: int, size: tuple[int, int],
                      axes: tuple[int, ...] = (0, 1, 2)) -> PairArrays:
        """`count` random (H, W) crops of slices along random `axes`, stacked as (count, H, W) arrays."""
        crops = []
        for _ in range(count):
            axis = int(rng.choice(axes))
            block = [size[0], size[1]]
            block.insert(axis, 1)
            crop = self.random_block(rng, tuple(block))
            crops.append([np.squeeze(getattr(crop, f), axis=axis) for f in ("hr", "condition", "reference", "mask")])
        return PairArrays(*(np.stack([c[i] for c in crops]) for i in range(4)))
