"""Iterative back-projection: make an enhanced volume agree with the slices that were acquired.

Each iteration re-acquires the estimate on the input's grid (slice profile + sampling: the forward model
of the consistency metric) and adds the B-spline-interpolated residual back. It helps where the input
is a faithful measurement of the wanted contrast (a real thick-slice scan) and hurts where the input's
contrast or noise differ from the wanted output (low-field contrast), so it is opt-in. Knows nothing of
methods or samplers: it sees two images.
"""

from __future__ import annotations

import SimpleITK as sitk

from mrisr.simulation.degradation import acquire_on_grid
from mrisr.errors import InputError
from mrisr.imaging.geometry import Grid, resample

MAX_ITERATIONS = 10


def check_iterations(iterations: int) -> None:
    """Refuse an iteration count out of range."""
    if not isinstance(iterations, int) or isinstance(iterations, bool) or not 0 <= iterations <= MAX_ITERATIONS:
        raise InputError(f"back-projection {iterations!r} is out of range: "
                         f"use --back-projection 0 (off) to {MAX_ITERATIONS} iterations")


def back_project(estimate: sitk.Image, acquired: sitk.Image, iterations: int) -> sitk.Image:
    """`estimate` (output grid) corrected `iterations` times toward agreeing with `acquired` (input grid)."""
    check_iterations(iterations)
    grid, acquired_grid = Grid.of(estimate), Grid.of(acquired)
    estimate = sitk.Cast(estimate, sitk.sitkFloat32)
    acquired = sitk.Cast(acquired, sitk.sitkFloat32)
    for _ in range(iterations):
        residual = acquired - acquire_on_grid(estimate, acquired_grid)
        estimate = estimate + resample(residual, grid, "bspline")
    return estimate
