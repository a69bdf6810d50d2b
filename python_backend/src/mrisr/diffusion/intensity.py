"""The one map between the pipeline's normalised intensities [0, 1] and the diffusion models' [−1, 1].

One affine map for a whole volume (never per slice or patch, so slices and blocks stay consistent);
works on numpy arrays and torch tensors alike and keeps their dtype.
"""

from __future__ import annotations

from typing import TypeVar

Array = TypeVar("Array")
"""A numpy array or a torch tensor."""


def to_model_range(values: Array) -> Array:
    """v ↦ 2v − 1: normalised [0, 1] → the models' [−1, 1]."""
    return 2.0 * values - 1.0


def from_model_range(values: Array) -> Array:
    """u ↦ (u + 1) / 2, the inverse of `to_model_range`."""
    return (values + 1.0) / 2.0
