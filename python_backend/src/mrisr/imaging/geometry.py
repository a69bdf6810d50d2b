"""Image grids (size, spacing, origin, direction) and resampling between them with SimpleITK.

Conventions: a grid's `size` and `spacing` are in SimpleITK (x, y, z) order; numpy arrays taken from
SimpleITK images are (z, y, x). The physical extent of a grid is the box from the outer edge of its
first voxel to the outer edge of its last voxel, so that changing the spacing keeps the field of view.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from mrisr.errors import InputError

INTERPOLATORS = {
    "nearest": sitk.sitkNearestNeighbor,
    "linear": sitk.sitkLinear,
    "bspline": sitk.sitkBSpline,
    "lanczos": sitk.sitkLanczosWindowedSinc,
}

DEFAULT_MAX_VOXELS = 400_000_000


@dataclass(frozen=True)
class Grid:
    """A 3D voxel grid in physical (LPS) space, as SimpleITK defines it."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]

    @classmethod
    def of(cls, image: sitk.Image) -> "Grid":
        """The grid an image lives on."""
        return cls(
            tuple(int(v) for v in image.GetSize()),
            tuple(float(v) for v in image.GetSpacing()),
            tuple(float(v) for v in image.GetOrigin()),
            tuple(float(v) for v in image.GetDirection()),
        )

    @property
    def shape(self) -> tuple[int, int, int]:
        """Numpy (z, y, x) shape of arrays on this grid."""
        return self.size[2], self.size[1], self.size[0]

    @property
    def num_voxels(self) -> int:
        return int(np.prod(self.size))

    def direction_matrix(self) -> np.ndarray:
        return np.asarray(self.direction, dtype=float).reshape(3, 3)

    def extent_corners(self) -> tuple[np.ndarray, np.ndarray]:
        """Physical positions of the outer corner before voxel 0 and after the last voxel."""
        d = self.direction_matrix()
        spacing = np.asarray(self.spacing)
        origin = np.asarray(self.origin)
        low = origin + d @ (-0.5 * spacing)
        high = origin + d @ ((np.asarray(self.size) - 0.5) * spacing)
        return low, high

    def blank(self, value: float = 0.0) -> sitk.Image:
        """A float32 image on this grid filled with `value`."""
        return self.image_from_array(np.full(self.shape, value, dtype=np.float32))

    def image_from_array(self, array: np.ndarray) -> sitk.Image:
        """Wrap a (z, y, x) array as an image on this grid."""
        if tuple(array.shape) != self.shape:
            raise ValueError(f"array shape {array.shape} does not match grid shape {self.shape}")
        image = sitk.GetImageFromArray(array)
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image


def finest_isotropic_spacing(grid: Grid) -> tuple[float, float, float]:
    """The default target spacing: the input's finest spacing on every axis."""
    finest = min(grid.spacing)
    return (finest, finest, finest)


def grid_with_spacing(
    grid: Grid, spacing: Sequence[float], max_voxels: int = DEFAULT_MAX_VOXELS
) -> Grid:
    """The grid covering the same physical extent and direction as `grid`, at a new spacing.

    The size along each axis is round(extent / spacing) (at least 1) and the origin moves so that the
    new grid's outer edge coincides with the old one's: the extent is kept to within half a new voxel.
    """
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != 3:
        raise InputError(f"target spacing needs 3 values (x y z in mm), got {len(spacing)}")
    if not all(np.isfinite(s) and s > 0 for s in spacing):
        raise InputError(f"target spacing {spacing} is invalid: every value must be a positive number of mm")
    extent = np.asarray(grid.size) * np.asarray(grid.spacing)
    size = np.maximum(1, np.round(extent / np.asarray(spacing))).astype(int)
    voxels = int(np.prod(size, dtype=np.int64))
    if voxels > max_voxels:
        raise InputError(
            f"target spacing {spacing} would make a {tuple(int(v) for v in size)} output ({voxels:,} voxels), over the "
            f"budget of {max_voxels:,}: choose a coarser spacing or raise --max-voxels"
        )
    new_spacing = np.asarray(spacing)
    low, _ = grid.extent_corners()
    origin = low + grid.direction_matrix() @ (0.5 * new_spacing)
    return Grid(tuple(int(v) for v in size), spacing, tuple(float(v) for v in origin), grid.direction)


INPUT_INTERPOLATOR = "bspline"  # the input on the output grid: the Input view, --write-interpolated, --segment


def interpolated_input(image: sitk.Image, grid: Grid) -> sitk.Image:
    """The input interpolated onto the output grid, as the Input view shows it and `--segment` segments it."""
    return resample(image, grid, INPUT_INTERPOLATOR)


def resample(image: sitk.Image, grid: Grid, interpolator: str = "bspline", default_value: float = 0.0) -> sitk.Image:
    """Resample `image` onto `grid` as float32 with a named interpolator.

    Voxels of the target grid within the input's extent but outside its outermost voxel centres are
    filled by nearest-neighbour extrapolation, so thick-slice borders do not fade to zero.
    """
    if interpolator not in INTERPOLATORS:
        raise InputError(f"unknown interpolator {interpolator!r}: choose one of {', '.join(INTERPOLATORS)}")
    reference = grid.blank()
    return sitk.Resample(
        sitk.Cast(image, sitk.sitkFloat32),
        reference,
        sitk.Transform(),
        INTERPOLATORS[interpolator],
        float(default_value),
        sitk.sitkFloat32,
        True,
    )


GRID_TOLERANCE = 1e-4  # mm (spacing, origin) and direction-cosine tolerance of `check_same_grid`


def check_same_grid(pred: sitk.Image, ref: sitk.Image) -> None:
    """Refuse a prediction that is not on the reference grid (same size; spacing, origin, direction to GRID_TOLERANCE)."""
    a, b = Grid.of(pred), Grid.of(ref)
    same = a.size == b.size and all(
        np.allclose(x, y, rtol=0.0, atol=GRID_TOLERANCE)
        for x, y in ((a.spacing, b.spacing), (a.origin, b.origin), (a.direction, b.direction)))
    if not same:
        raise InputError(f"prediction grid (size {a.size}, spacing {a.spacing}, origin {a.origin}) differs "
                         f"from the reference grid (size {b.size}, spacing {b.spacing}, origin {b.origin}): "
                         "resample the prediction onto the reference grid first")
