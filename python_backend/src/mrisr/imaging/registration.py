"""Rigid alignment of a reference contrast to the target volume (for multi-contrast methods).

Mattes mutual information (the two images are different contrasts), a 6-parameter Euler transform
started at identity about the target's centre (same-session scans are close already), both images
bin-averaged to a ~2 mm working grid, two smoothed levels, random metric sampling and few
iterations, so a whole head takes seconds.
The result maps target (fixed) points to reference (moving) points, as SimpleITK transforms do, so
`resample_through` brings the reference onto any grid of the target.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from mrisr.errors import InputError
from mrisr.imaging.geometry import Grid

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegistrationConfig:
    """Optimiser settings; smoothing sigmas are in mm, one per shrink level."""

    working_spacing_mm: float = 2.0  # both images are first bin-averaged to about this spacing
    shrink_factors: tuple[int, ...] = (2, 1)  # levels, relative to the working images
    smoothing_sigmas_mm: tuple[float, ...] = (2.0, 1.0)
    iterations: int = 80
    sampling_fraction: float = 0.15
    histogram_bins: int = 32
    learning_rate: float = 2.0
    seed: int = 0
    min_rotation_deg: float = 0.25  # smaller motions count as "already aligned"
    min_translation_mm: float = 0.25

    def __post_init__(self) -> None:
        if len(self.shrink_factors) != len(self.smoothing_sigmas_mm) or not self.shrink_factors:
            raise InputError(f"registration shrink_factors {self.shrink_factors} and smoothing_sigmas_mm "
                             f"{self.smoothing_sigmas_mm} are invalid: give one sigma per shrink level")
        if not 0 < self.sampling_fraction <= 1:
            raise InputError(f"registration sampling_fraction={self.sampling_fraction} is invalid: use (0, 1]")
        if not self.working_spacing_mm > 0:
            raise InputError(f"registration working_spacing_mm={self.working_spacing_mm} is invalid: must be > 0")
        if self.iterations < 1:
            raise InputError(f"registration iterations={self.iterations} is invalid: use 1 or more")


@dataclass(frozen=True)
class RegistrationResult:
    """The fitted rigid transform (fixed → moving points) and how it changed the metric."""

    transform: sitk.Euler3DTransform
    metric_before: float  # Mattes MI is negative: lower is better
    metric_after: float
    config: RegistrationConfig

    @property
    def rotation_deg(self) -> tuple[float, float, float]:
        return tuple(math.degrees(a) for a in self.transform.GetParameters()[:3])

    @property
    def translation_mm(self) -> tuple[float, float, float]:
        return tuple(float(t) for t in self.transform.GetParameters()[3:])

    @property
    def moved(self) -> bool:
        """True when the fit is a real motion that improved the metric, i.e. worth resampling for."""
        large = (max(abs(a) for a in self.rotation_deg) >= self.config.min_rotation_deg
                 or max(abs(t) for t in self.translation_mm) >= self.config.min_translation_mm)
        return large and self.metric_after < self.metric_before

    @property
    def report(self) -> str:
        """One line for logs and progress messages."""
        rx, ry, rz = self.rotation_deg
        tx, ty, tz = self.translation_mm
        verdict = "applied" if self.moved else "not applied (already aligned)"
        return (f"reference registration {verdict}: rotation ({rx:.2f}, {ry:.2f}, {rz:.2f}) deg, translation "
                f"({tx:.2f}, {ty:.2f}, {tz:.2f}) mm, Mattes MI {self.metric_before:.4f} -> {self.metric_after:.4f}")


def _working_copy(image: sitk.Image, spacing_mm: float) -> sitk.Image:
    """Float32 copy bin-averaged by whole factors to about `spacing_mm` (cheap anti-aliased shrink)."""
    image = sitk.Cast(image, sitk.sitkFloat32)
    factors = [max(1, int(round(spacing_mm / s))) for s in image.GetSpacing()]
    return sitk.BinShrink(image, factors) if max(factors) > 1 else image


def _identity_about_centre(fixed: sitk.Image) -> sitk.Euler3DTransform:
    centre_index = [(n - 1) / 2.0 for n in fixed.GetSize()]
    transform = sitk.Euler3DTransform()
    transform.SetCenter(fixed.TransformContinuousIndexToPhysicalPoint(centre_index))
    return transform


def _levels(config: RegistrationConfig, fixed: sitk.Image) -> tuple[list[int], list[float]]:
    """Shrink factors capped so that every level keeps at least 16 voxels along the shortest axis."""
    cap = max(1, min(fixed.GetSize()) // 16)
    return [min(f, cap) for f in config.shrink_factors], list(config.smoothing_sigmas_mm)


def _method(config: RegistrationConfig, fixed: sitk.Image) -> sitk.ImageRegistrationMethod:
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=config.histogram_bins)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(config.sampling_fraction, config.seed)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=config.learning_rate, minStep=1e-3, numberOfIterations=config.iterations,
        relaxationFactor=0.5, gradientMagnitudeTolerance=1e-8)
    method.SetOptimizerScalesFromPhysicalShift()
    shrink, sigmas = _levels(config, fixed)
    method.SetShrinkFactorsPerLevel(shrink)
    method.SetSmoothingSigmasPerLevel(sigmas)
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    return method


def _metric(fixed: sitk.Image, moving: sitk.Image, transform: sitk.Transform, config: RegistrationConfig) -> float:
    """Mattes MI at the finest level used by the fit, with the same sampling."""
    method = _method(config, fixed)
    shrink, sigmas = _levels(config, fixed)
    method.SetShrinkFactorsPerLevel(shrink[-1:])
    method.SetSmoothingSigmasPerLevel(sigmas[-1:])
    method.SetInitialTransform(transform, inPlace=False)
    return float(method.MetricEvaluate(fixed, moving))


def register_rigid(fixed: sitk.Image, moving: sitk.Image,
                   config: RegistrationConfig = RegistrationConfig()) -> RegistrationResult:
    """Fit the rigid transform that aligns `moving` (reference contrast) to `fixed` (target).

    Both are 3D images of any grids; intensities need no common scale. RuntimeError (from
    SimpleITK) when the images do not overlap enough to fit.
    """
    initial = _identity_about_centre(fixed)
    fixed = _working_copy(fixed, config.working_spacing_mm)
    moving = _working_copy(moving, config.working_spacing_mm)
    before = _metric(fixed, moving, initial, config)
    method = _method(config, fixed)
    method.SetInitialTransform(initial, inPlace=False)
    fitted = method.Execute(fixed, moving)
    transform = sitk.Euler3DTransform(initial)
    transform.SetParameters(sitk.CompositeTransform(fitted).GetNthTransform(0).GetParameters())
    after = _metric(fixed, moving, transform, config)
    result = RegistrationResult(transform, before, after, config)
    log.info("%s (%s, %d iterations)", result.report, method.GetOptimizerStopConditionDescription(),
             method.GetOptimizerIteration())
    return result


def resample_through(moving: sitk.Image, transform: sitk.Transform, grid: Grid, interpolator: int = sitk.sitkBSpline,
                  default_value: float = 0.0) -> np.ndarray:
    """The moving image resampled through `transform` onto `grid`: a float32 (z, y, x) array."""
    image = sitk.Resample(sitk.Cast(moving, sitk.sitkFloat32), grid.blank(), transform, interpolator,
                          float(default_value), sitk.sitkFloat32)
    return sitk.GetArrayFromImage(image)
