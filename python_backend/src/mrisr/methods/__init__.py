"""Method implementations behind the registry; each turns a normalised LR volume into an output-grid array."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import SimpleITK as sitk

from mrisr.imaging.geometry import Grid
from mrisr.progress import CancelToken, ProgressCallback
from mrisr.registry import MethodSpec


@dataclass(frozen=True)
class RunSettings:
    """Validated per-run settings (defaults from the method spec already applied)."""

    steps: int | None
    start_step: int | None
    patch_size: int | None
    overlap: float
    device: str
    seed: int
    batch_size: int | None
    slice_axes: tuple[int, ...] | None = None  # numpy axes for 2D methods; None = the method's default


@dataclass(frozen=True)
class MethodInput:
    """What a method gets: LR input (normalised, own grid), output grid, foreground mask on it, reference."""

    lr: sitk.Image
    grid: Grid
    mask: np.ndarray
    reference: sitk.Image | None
    settings: RunSettings


class Method(Protocol):
    """A super-resolution method: returns a normalised (z, y, x) float32 array on `inputs.grid`."""

    spec: MethodSpec

    def run(self, inputs: MethodInput, progress: ProgressCallback, cancel: CancelToken) -> np.ndarray: ...


def build_method(spec: MethodSpec) -> Method:
    """Instantiate the class the spec names ("module:Class" inside mrisr.methods)."""
    module_name, class_name = spec.implementation.split(":")
    module = importlib.import_module(f"{__name__}.{module_name}")
    return getattr(module, class_name)(spec)
