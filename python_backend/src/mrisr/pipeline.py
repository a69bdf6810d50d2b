"""Whole-volume enhancement: load → normalise → method on the output grid → de-normalise → save.

The CLI, the server and the Slicer module call these functions only.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from mrisr.imaging.backprojection import back_project, check_iterations
from mrisr.device import resolve_device
from mrisr.errors import InputError
from mrisr.imaging.foreground import foreground_mask
from mrisr.imaging.geometry import DEFAULT_MAX_VOXELS, Grid, finest_isotropic_spacing, grid_with_spacing, resample
from mrisr.methods import MethodInput, RunSettings, build_method
from mrisr.imaging.normalization import robust_scale
from mrisr.inference.posterior_samples import check_samples, sample_statistics
from mrisr.progress import CancelToken, ProgressCallback, ProgressEvent, no_progress
from mrisr.registry import MethodSpec, default_method, get_spec
from mrisr.io.volumes import check_output_path, read_volume, validate_volume, write_volume

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EnhanceOptions:
    """What the user chose; None means the method's default."""

    method: str | None = None
    steps: int | None = None
    start_step: int | None = None
    patch_size: int | None = None
    overlap: float = 0.25
    target_spacing: Sequence[float] | None = None
    device: str = "auto"
    seed: int = 0
    batch_size: int | None = None
    max_voxels: int = DEFAULT_MAX_VOXELS
    planes: str = "auto"
    samples: int = 1  # posterior samples (seeds seed, seed+1, …) averaged; > 1 also gives an uncertainty map
    data_consistency: int = 0  # back-projection iterations toward the acquired slices (0 = off)


@dataclass(frozen=True)
class EnhanceResult:
    """The enhanced image (own grid, float32, input intensity scale) and what produced it; with several
    samples, `image` is their mean and `uncertainty` their per-voxel standard deviation (same units)."""

    image: sitk.Image
    method: str
    settings: dict
    seconds: float
    timings: dict = field(default_factory=dict)
    uncertainty: sitk.Image | None = None


PLANE_NORMALS = {"sagittal": 0, "coronal": 1, "axial": 2}  # patient (LPS) axis each plane is perpendicular to


def slice_axes(planes: str, direction: Sequence[float]) -> tuple[int, ...] | None:
    """Numpy slice axes for named anatomical planes ("coronal,sagittal"), from the image's direction
    cosines; "auto" (None) lets the method choose."""
    if planes == "auto":
        return None
    names = [p.strip() for p in planes.split(",") if p.strip()]
    unknown = [n for n in names if n not in PLANE_NORMALS]
    if not names or unknown:
        raise InputError(f"planes {planes!r} are invalid: use auto or a comma list of axial, coronal, sagittal")
    matrix = np.abs(np.asarray(direction, dtype=float).reshape(3, 3))  # rows: patient axes, columns: index axes
    return tuple(sorted({2 - int(np.argmax(matrix[PLANE_NORMALS[n]])) for n in names}))


def _device_for(spec: MethodSpec, device: str) -> str:
    """Interpolation runs on the CPU without importing torch unless a GPU was asked for explicitly."""
    if spec.kind == "interpolation" and device in ("auto", "cpu"):
        return "cpu"
    return resolve_device(device)


def resolve_settings(spec: MethodSpec, options: EnhanceOptions) -> RunSettings:
    """Apply the method's defaults and check every option against its allowed range."""
    def ranged(name: str, flag: str, value: int | None) -> int | None:
        allowed = getattr(spec, name)
        if allowed is None:
            if value is not None:
                raise InputError(f"method {spec.name!r} takes no {flag} (it has no such setting): leave it out")
            return None
        return allowed.check(name.replace("_", " "), flag, value, spec.name)

    if not 0.0 <= options.overlap < 1.0:
        raise InputError(f"overlap {options.overlap} is out of range: use --overlap in [0, 1)")
    if options.batch_size is not None and options.batch_size < 1:
        raise InputError(f"batch size {options.batch_size} is invalid: use --batch-size 1 or more")
    check_iterations(options.data_consistency)
    start_step = ranged("start_step", "--start-step", options.start_step)
    steps = options.steps
    if steps is None and spec.steps is not None and options.start_step is not None and spec.start_step.caps_steps:
        steps = min(spec.steps.default, start_step)  # a partial chain of K steps has at most K steps
    return RunSettings(
        steps=ranged("steps", "--steps", steps),
        start_step=start_step,
        patch_size=ranged("patch_size", "--patch-size", options.patch_size),
        overlap=float(options.overlap),
        device=_device_for(spec, options.device),
        seed=int(options.seed),
        batch_size=options.batch_size,
        slice_axes=None,
    )


def output_grid(image: sitk.Image, options: EnhanceOptions) -> Grid:
    """The output grid: the input's extent and direction at the target (default finest isotropic) spacing."""
    grid = Grid.of(image)
    spacing = options.target_spacing or finest_isotropic_spacing(grid)
    return grid_with_spacing(grid, spacing, options.max_voxels)


def _normalised_reference(reference: sitk.Image, grid: Grid) -> sitk.Image:
    """The reference contrast with its own robust [0, 1] scale, resampled (B-spline) onto the output grid."""
    array = sitk.GetArrayFromImage(validate_volume(reference, "reference"))
    scaled = Grid.of(reference).image_from_array(robust_scale(array, foreground_mask(array)).apply(array))
    return resample(scaled, grid, "bspline")


def enhance(
    image: sitk.Image,
    options: EnhanceOptions = EnhanceOptions(),
    reference: sitk.Image | None = None,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken | None = None,
) -> EnhanceResult:
    """Enhance one volume in memory; the input image is never modified."""
    cancel = cancel or CancelToken()
    started = time.perf_counter()
    spec = get_spec(options.method or default_method())
    settings = resolve_settings(spec, options)
    check_samples(options.samples, spec.kind == "diffusion", spec.name)
    image = validate_volume(image)
    settings = dataclasses.replace(settings, slice_axes=slice_axes(options.planes, image.GetDirection()))
    if spec.config.get("needs_reference") and reference is None:
        raise InputError(f"method {spec.name!r} needs a reference volume of another contrast: pass --reference")
    grid = output_grid(image, options)
    array = sitk.GetArrayFromImage(image)
    mask = foreground_mask(array)
    scale = robust_scale(array, mask)
    lr = Grid.of(image).image_from_array(scale.apply(array))
    out_mask = sitk.GetArrayFromImage(resample(Grid.of(image).image_from_array(mask.astype(np.float32)), grid, "nearest")) > 0.5
    ref = None if reference is None else _normalised_reference(reference, grid)
    cancel.check()
    method = build_method(spec)

    def run(seed: int, report: ProgressCallback) -> np.ndarray:
        inputs = MethodInput(lr=lr, grid=grid, mask=out_mask, reference=ref,
                             settings=dataclasses.replace(settings, seed=seed))
        output = method.run(inputs, report, cancel)
        cancel.check()
        return output

    stats = sample_statistics(run, settings.seed, options.samples, progress)
    output = _consistent_with(grid.image_from_array(scale.invert(stats.mean)), image, options.data_consistency,
                              progress, cancel)
    uncertainty = None if options.samples == 1 else grid.image_from_array(stats.std * np.float32(scale.high - scale.low))
    seconds = time.perf_counter() - started
    log.info("enhanced with %s to %s in %.1f s (%d sample(s))", spec.name, grid.size, seconds, options.samples)
    extra = {"samples": options.samples, "data_consistency": options.data_consistency}
    return EnhanceResult(output, spec.name, asdict(settings) | extra, seconds,
                         uncertainty=uncertainty)


def _consistent_with(output: sitk.Image, acquired: sitk.Image, iterations: int, progress: ProgressCallback,
                    cancel: CancelToken) -> sitk.Image:
    """`output` back-projected toward the acquired input when asked (see mrisr.imaging.backprojection)."""
    if iterations == 0:
        return output
    cancel.check()
    progress(ProgressEvent("data consistency", 0, 1, f"{iterations} back-projection iteration(s)"))
    output = back_project(output, acquired, iterations)
    progress(ProgressEvent("data consistency", 1, 1, f"{iterations} back-projection iteration(s)"))
    return output


def enhance_file(
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    options: EnhanceOptions = EnhanceOptions(),
    reference_path: str | os.PathLike | None = None,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken | None = None,
    uncertainty_path: str | os.PathLike | None = None,
) -> EnhanceResult:
    """Read, enhance and atomically write (and the uncertainty map, which needs samples > 1); the inputs
    are never overwritten and a failure writes nothing."""
    protect = tuple(p for p in (input_path, reference_path) if p is not None)
    check_output_path(output_path, protect)
    spec = get_spec(options.method or default_method())
    resolve_settings(spec, options)
    check_samples(options.samples, spec.kind == "diffusion", spec.name)
    if uncertainty_path is not None:
        _check_uncertainty_path(uncertainty_path, output_path, protect, options.samples)
    progress(ProgressEvent("load", 0, 1, str(input_path)))
    image = read_volume(input_path)
    reference = read_volume(reference_path) if reference_path is not None else None
    progress(ProgressEvent("load", 1, 1, str(input_path)))
    result = enhance(image, options, reference, progress, cancel)
    progress(ProgressEvent("save", 0, 1, str(output_path)))
    write_volume(result.image, output_path, protect=protect)
    if uncertainty_path is not None:
        write_volume(result.uncertainty, uncertainty_path, protect=protect + (output_path,))
    progress(ProgressEvent("save", 1, 1, str(output_path)))
    return result


def _check_uncertainty_path(path: str | os.PathLike, output_path: str | os.PathLike,
                            protect: tuple, samples: int) -> None:
    """The uncertainty map needs several samples and a path of its own."""
    if samples < 2:
        raise InputError("an uncertainty map needs several samples: add --samples 2 or more")
    if os.path.abspath(path) == os.path.abspath(output_path):
        raise InputError(f"uncertainty path {path} is the output path: give the uncertainty map its own file")
    check_output_path(path, protect)
