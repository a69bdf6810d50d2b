"""Interpolation baselines (nearest, linear, B-spline, Lanczos) as methods of the common interface."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from mrisr.imaging.geometry import resample
from mrisr.progress import CancelToken, ProgressCallback, ProgressEvent
from mrisr.registry import MethodSpec
from mrisr.methods import MethodInput


class InterpolationMethod:
    """Resamples the LR volume onto the output grid with the spec's interpolator."""

    def __init__(self, spec: MethodSpec):
        self.spec = spec

    def run(self, inputs: MethodInput, progress: ProgressCallback, cancel: CancelToken) -> np.ndarray:
        cancel.check()
        progress(ProgressEvent("interpolate", 0, 1, self.spec.interpolator))
        output = resample(inputs.lr, inputs.grid, self.spec.interpolator)
        progress(ProgressEvent("interpolate", 1, 1, self.spec.interpolator))
        return sitk.GetArrayFromImage(output)
