"""A cheap check after every run that the output is no worse than interpolating the input.

Two figures, each next to B-spline's on the same output grid: consistency with the input (the output
re-acquired on the input grid vs the input, inside the input's head mask) and sharpness along the
coarse (through-plane) axis (mean squared intensity step per mm between neighbouring output samples
inside the head, relative to the input's intensity range). A result is flagged when it is less
consistent than B-spline by more than FLAG_DB and no sharper: then it is blurrier *and* disagrees
with what was measured, i.e. worse than interpolation on both counts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import SimpleITK as sitk

from mrisr.evaluation.metrics import head_consistency
from mrisr.imaging.foreground import foreground_mask
from mrisr.imaging.geometry import Grid, resample

FLAG_DB = 3.0  # consistency loss vs B-spline (dB) that, with no gain in sharpness, flags a result


@dataclass(frozen=True)
class SelfCheck:
    """The output's and B-spline's figures and the verdict; JSON-ready through `as_dict`."""

    coarse_axis: int  # SimpleITK (x, y, z) index
    consistency_db: float
    bspline_consistency_db: float
    sharpness: float
    bspline_sharpness: float
    flagged: bool

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def message(self) -> str:
        """One line for the CLI and the panel."""
        verdict = ("FLAGGED: less consistent with the input than B-spline and no sharper; prefer bspline "
                   "or add --back-projection" if self.flagged else "ok")
        return (f"self-check {verdict} (consistency {self.consistency_db:.1f} dB vs B-spline "
                f"{self.bspline_consistency_db:.1f} dB; through-plane sharpness {self.sharpness:.3g} vs "
                f"{self.bspline_sharpness:.3g})")


def coarse_axis(image: sitk.Image) -> int:
    """The input's coarsest axis (SimpleITK index order): the one the method had to fill in."""
    return int(np.argmax(image.GetSpacing()))


def through_plane_sharpness(image: sitk.Image, axis: int, mask: np.ndarray, value_range: float) -> float:
    """Mean squared step per mm along `axis` (x, y, z index) between neighbours inside `mask`, in units of
    `value_range`² — larger where edges across the slices are crisper."""
    array = sitk.GetArrayFromImage(image).astype(np.float64) / value_range
    numpy_axis = 2 - axis
    steps = np.diff(array, axis=numpy_axis) / image.GetSpacing()[axis]
    inside = np.logical_and(np.take(mask, range(mask.shape[numpy_axis] - 1), axis=numpy_axis),
                            np.take(mask, range(1, mask.shape[numpy_axis]), axis=numpy_axis))
    return float(np.mean(steps[inside] ** 2)) if inside.any() else 0.0


def self_check(output: sitk.Image, lr: sitk.Image) -> SelfCheck:
    """Compare `output` (on any finer grid) with B-spline interpolation of `lr` onto the same grid."""
    bspline = resample(lr, Grid.of(output), "bspline")
    lr_array = sitk.GetArrayFromImage(lr)
    value_range = float(lr_array.max() - lr_array.min()) or 1.0
    mask = foreground_mask(sitk.GetArrayFromImage(bspline))
    axis = coarse_axis(lr)
    consistency, reference = head_consistency(output, lr), head_consistency(bspline, lr)
    sharpness = through_plane_sharpness(output, axis, mask, value_range)
    bspline_sharpness = through_plane_sharpness(bspline, axis, mask, value_range)
    flagged = bool(consistency < reference - FLAG_DB and sharpness <= bspline_sharpness)
    return SelfCheck(axis, consistency, reference, sharpness, bspline_sharpness, flagged)
