"""Intensity normalisation inside the pipeline and its exact inverse on the way out."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class IntensityScale:
    """Affine map of intensities: low → 0 and high → 1."""

    low: float
    high: float

    def apply(self, array: np.ndarray) -> np.ndarray:
        return ((array - self.low) / (self.high - self.low)).astype(np.float32)

    def invert(self, array: np.ndarray) -> np.ndarray:
        return (array * (self.high - self.low) + self.low).astype(np.float32)


def robust_scale(array: np.ndarray, mask: np.ndarray | None = None, lower: float = 0.5,
                 upper: float = 99.5) -> IntensityScale:
    """Percentile scaling of the (foreground) intensities: robust to outliers, kept per volume so
    all patches and slices share one scale. A constant volume gets a unit scale."""
    values = array[mask] if mask is not None and mask.any() else array.ravel()
    low, high = np.percentile(values, [lower, upper])
    if not high > low:
        low, high = float(values.min()), float(values.min()) + 1.0
    return IntensityScale(float(low), float(high))
