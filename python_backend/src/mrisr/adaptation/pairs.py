"""Training pairs cut from the scan in hand (the SMORE / ECLARE idea): its fine axes show the same
anatomy, contrast and noise as the coarse one would at fine resolution, so degrading a fine axis the way
the coarse axis was acquired gives (condition, target) pairs for exactly this scan.

Arrays are (z, y, x) numpy order, intensities normalised by the pipeline (~[0, 1]). A pair is a 2D patch
of a plane that contains a fine axis f: along f the patch is blurred with the slice profile (Gaussian,
FWHM = slice thickness), sampled every slice separation and interpolated back by cubic B-spline (what the
methods' B-spline condition does on the output grid); the target is the patch itself. Patches are drawn
toward the head and toward edges, then flipped and turned by 90° at random, so the network learns to
restore blur along either in-plane direction, as inference asks on the planes through the coarse axis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage

from mrisr.errors import InputError

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
COARSE_RATIO = 1.5  # an axis whose input spacing exceeds the output's by this factor is filled in


@dataclass(frozen=True)
class SliceProfile:
    """How the coarse axis was acquired, in mm: slice thickness (blur) and separation (sampling)."""

    thickness_mm: float
    separation_mm: float

    @classmethod
    def of(cls, input_spacing: Sequence[float], slice_thickness: float | None = None) -> "SliceProfile":
        """The coarsest axis's spacing as separation; thickness from the scan (DICOM) or the user, else
        equal to the separation (contiguous slices)."""
        separation = float(max(input_spacing))
        thickness = separation if slice_thickness is None else float(slice_thickness)
        if not (math.isfinite(thickness) and thickness > 0):
            raise InputError(f"slice thickness {slice_thickness!r} is invalid: give a positive number of mm")
        return cls(thickness, separation)


def coarse_axes(input_spacing: Sequence[float], output_spacing: Sequence[float]) -> tuple[int, ...]:
    """numpy (z, y, x) axes that the method fills in: input spacing > COARSE_RATIO × output spacing."""
    return tuple(sorted(2 - i for i in range(3) if input_spacing[i] > COARSE_RATIO * output_spacing[i]))


def fine_axes(input_spacing: Sequence[float], output_spacing: Sequence[float]) -> tuple[int, ...]:
    """numpy axes sampled (about) as finely as the input's finest one and not filled in: where training
    pairs come from."""
    coarse, finest = coarse_axes(input_spacing, output_spacing), min(input_spacing)
    return tuple(sorted(2 - i for i in range(3) if input_spacing[i] <= COARSE_RATIO * finest and 2 - i not in coarse))


def in_plane_edges(volume: np.ndarray, across: int) -> np.ndarray:
    """Gradient magnitude within every plane cut along `across` (Gaussian σ = 1 pixel first), as float32."""
    smooth = ndimage.gaussian_filter(volume, 1.0, axes=[a for a in range(3) if a != across])
    kept = [a for a in range(3) if a != across]
    return np.hypot(*np.gradient(smooth, axis=kept)).astype(np.float32)


def degrade_line(array: np.ndarray, axis: int, sigma_px: float, separation_px: float) -> np.ndarray:
    """Blur along `axis` (Gaussian, σ in pixels), sample every `separation_px` pixels (linear), and
    interpolate back onto every pixel by cubic B-spline: the condition the method would see."""
    blurred = ndimage.gaussian_filter1d(array, sigma_px, axis=axis, mode="reflect") if sigma_px > 0 else array
    length = array.shape[axis]
    count = max(2, int(math.floor((length - 1) / separation_px)) + 1)
    positions = np.arange(count) * separation_px
    moved = np.moveaxis(blurred, axis, 0)
    lower = np.clip(np.floor(positions).astype(int), 0, length - 1)
    upper = np.clip(lower + 1, 0, length - 1)
    weight = (positions - lower).reshape((-1,) + (1,) * (moved.ndim - 1))
    samples = (1 - weight) * moved[lower] + weight * moved[upper]
    back = np.arange(length) / separation_px
    grid = np.meshgrid(back, *[np.arange(n) for n in samples.shape[1:]], indexing="ij")
    restored = ndimage.map_coordinates(samples, grid, order=3, mode="nearest")
    return np.moveaxis(restored, 0, axis).astype(np.float32)


class ScanPairs:
    """Random (condition, target) patch pairs from one normalised scan; see the module docstring."""

    def __init__(self, volume: np.ndarray, input_spacing: Sequence[float], output_spacing: Sequence[float],
                 profile: SliceProfile, mask: np.ndarray, patch: int = 64):
        self.fine = fine_axes(input_spacing, output_spacing)
        if not self.fine or not coarse_axes(input_spacing, output_spacing):
            raise InputError("adapting to the scan needs a thick-slice input: at least one axis finer and one "
                             "coarser than the rest (e.g. 0.8 × 0.8 × 5 mm); this scan is not, so run without "
                             "--adapt")
        self.volume, self.mask, self.patch = volume.astype(np.float32), mask, patch
        self.spacing_zyx = tuple(float(s) for s in reversed(tuple(input_spacing)))
        self.profile = profile
        # Drawn from at every pair, so computed once (this made pair cutting 3× cheaper than per-pair
        # filtering, i.e. ~40 % more fine-tuning steps in the same budget): head voxels per slice along
        # each axis, and the in-plane edge strength of every plane cut along each axis.
        self._head_per_slice = {a: mask.sum(axis=tuple(b for b in range(3) if b != a)).astype(np.float64) + 1.0
                                for a in range(3)}
        self._edges = {a: in_plane_edges(self.volume, a) for a in range(3)}

    def _plane(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, float]:
        """A random plane through a fine axis, drawn toward slices with more head: (plane, its mask, its
        edge strength, index of the fine axis in the plane, that axis's spacing in mm)."""
        fine = int(rng.choice(self.fine))
        across = int(rng.choice([a for a in range(3) if a != fine]))  # the axis the plane is cut along
        counts = self._head_per_slice[across]
        index = int(rng.choice(len(counts), p=counts / counts.sum()))
        arrays = (self.volume, self.mask, self._edges[across])
        plane, plane_mask, edges = (np.take(a, index, axis=across) for a in arrays)
        kept = [a for a in range(3) if a != across]
        return plane, plane_mask, edges, kept.index(fine), self.spacing_zyx[fine]

    @staticmethod
    def _window(edges: np.ndarray, plane_mask: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
        """A patch centre drawn ∝ (inside head) × (0.1 mean + edge strength)."""
        weight = (plane_mask + np.float32(0.05)) * (np.float32(0.1 * edges.mean() + 1e-6) + edges)  # flat: uniform
        cumulative = np.cumsum(weight, dtype=np.float64)
        drawn = min(int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right")), weight.size - 1)
        return tuple(int(v) for v in np.unravel_index(drawn, edges.shape))

    def pair(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """One (condition, target) patch, each (patch, patch) float32."""
        plane, plane_mask, edges, axis, spacing = self._plane(rng)
        sigma = self.profile.thickness_mm / spacing / FWHM_PER_SIGMA
        separation = self.profile.separation_mm / spacing
        margin = int(math.ceil(3 * sigma + 2 * separation))
        widths = [(self.patch + margin, self.patch + margin) if a == axis else (self.patch, self.patch)
                  for a in range(2)]  # small scans: every window fits, the head stays where the mask is
        padded, padded_mask = np.pad(plane, widths, mode="reflect"), np.pad(plane_mask, widths)
        centre = self._window(np.pad(edges, widths, mode="reflect"), padded_mask, rng)
        starts = [min(max(c - self.patch // 2, 0), n - self.patch) for c, n in zip(centre, padded.shape)]
        box = [slice(s, s + self.patch) for s in starts]
        wide = list(box)
        wide[axis] = slice(max(starts[axis] - margin, 0), min(starts[axis] + self.patch + margin, padded.shape[axis]))
        condition_wide = degrade_line(padded[tuple(wide)], axis, sigma, separation)
        offset = starts[axis] - wide[axis].start
        inner = [slice(None), slice(None)]
        inner[axis] = slice(offset, offset + self.patch)
        condition, target = condition_wide[tuple(inner)], padded[tuple(box)]
        turns, flip = int(rng.integers(4)), bool(rng.integers(2))
        condition, target = (np.rot90(a, turns) for a in (condition, target))
        if flip:
            condition, target = condition[:, ::-1], target[:, ::-1]
        return np.ascontiguousarray(condition), np.ascontiguousarray(target)

    def batch(self, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
        """`size` pairs stacked as (size, 1, patch, patch) float32 arrays (condition, target)."""
        pairs = [self.pair(rng) for _ in range(size)]
        return (np.stack([c for c, _ in pairs])[:, None], np.stack([t for _, t in pairs])[:, None])
