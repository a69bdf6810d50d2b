"""Whole-volume enhancement: load → normalise → method on the output grid → de-normalise → save.

The CLI, the server and the Slicer module call these functions only.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import SimpleITK as sitk

from mrisr.adaptation.settings import AdaptSettings
from mrisr.device import check_free_memory, resolve_device  # before torch: it prepares the environment torch reads
from mrisr.evaluation.self_check import SelfCheck, self_check
from mrisr.imaging.backprojection import back_project
from mrisr.imaging.foreground import foreground_mask
from mrisr.imaging.geometry import Grid, interpolated_input, resample
from mrisr.imaging.normalization import robust_scale
from mrisr.inference.posterior_samples import sample_statistics
from mrisr.io.volumes import slice_thickness, validate_volume, write_volume
from mrisr.methods import MethodInput, RunSettings, build_method
from mrisr.plan import (PLANE_NORMALS, EnhanceOptions, RunFiles, check_options, check_reference, device_memory_mib,
                        output_grid, plan_run, slice_axes, training_range_warnings)
from mrisr.progress import CancelToken, ProgressCallback, ProgressEvent, no_progress
from mrisr.registry import MethodSpec, default_method, get_spec
from mrisr.run_progress import OverallProgress

__all__ = ["EnhanceOptions", "EnhanceResult", "PLANE_NORMALS", "enhance", "enhance_file", "output_grid",
           "resolve_settings", "slice_axes"]

log = logging.getLogger(__name__)


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
    self_check: SelfCheck | None = None  # learned methods: consistency and sharpness next to B-spline's


def _device_for(spec: MethodSpec, device: str) -> str:
    """Interpolation runs on the CPU without importing torch unless a GPU was asked for explicitly."""
    if spec.kind == "interpolation" and device in ("auto", "cpu"):
        return "cpu"
    return resolve_device(device)


def resolve_settings(spec: MethodSpec, options: EnhanceOptions) -> RunSettings:
    """Apply the method's defaults, check every option (mrisr.plan) and resolve the device."""
    ranges = check_options(spec, options)
    return RunSettings(**ranges, overlap=float(options.overlap), device=_device_for(spec, options.device),
                       seed=int(options.seed), batch_size=options.batch_size, slice_axes=None)


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
    thickness = options.slice_thickness or slice_thickness(image)  # before validation copies the image
    image = validate_volume(image)
    settings = dataclasses.replace(settings, slice_axes=slice_axes(options.planes, image.GetDirection()))
    check_reference(spec, reference is not None)
    grid = output_grid(image, options, spec)
    check_free_memory(settings.device, device_memory_mib(spec, asdict(settings), grid))
    for warning in training_range_warnings(spec, image.GetSpacing(), grid.spacing, bool(options.adapt)):
        log.warning(warning)
    progress(ProgressEvent("prepare", 0, 1, "intensity scale and foreground on the output grid"))
    array = sitk.GetArrayFromImage(image)
    mask = foreground_mask(array)
    scale = robust_scale(array, mask)
    lr = Grid.of(image).image_from_array(scale.apply(array))
    out_mask = sitk.GetArrayFromImage(resample(Grid.of(image).image_from_array(mask.astype(np.float32)), grid, "nearest")) > 0.5
    ref = None if reference is None else _normalised_reference(reference, grid)
    progress(ProgressEvent("prepare", 1, 1, "intensity scale and foreground on the output grid"))
    cancel.check()
    method = build_method(spec)
    if options.adapt:
        method.adapt(MethodInput(lr=lr, grid=grid, mask=out_mask, reference=ref, settings=settings),
                     AdaptSettings(options.adapt, thickness, settings.seed), progress, cancel)

    def run(seed: int, report: ProgressCallback) -> np.ndarray:
        inputs = MethodInput(lr=lr, grid=grid, mask=out_mask, reference=ref,
                             settings=dataclasses.replace(settings, seed=seed))
        output = method.run(inputs, report, cancel)
        cancel.check()
        return output

    stats = sample_statistics(run, settings.seed, options.samples, progress)
    output = _consistent_with(grid.image_from_array(scale.invert(stats.mean)), image, options.back_projection,
                              progress, cancel)
    uncertainty = None if options.samples == 1 else grid.image_from_array(stats.std * np.float32(scale.high - scale.low))
    check = None if spec.kind == "interpolation" else _self_check(output, image, progress)
    seconds = time.perf_counter() - started
    log.info("enhanced with %s to %s in %.1f s (%d sample(s))", spec.name, grid.size, seconds, options.samples)
    extra = {"samples": options.samples, "back_projection": options.back_projection, "adapt": options.adapt,
             "slice_thickness": thickness}
    return EnhanceResult(output, spec.name, asdict(settings) | extra, seconds,
                         uncertainty=uncertainty, self_check=check)


def _self_check(output: sitk.Image, acquired: sitk.Image, progress: ProgressCallback) -> SelfCheck:
    """`mrisr.evaluation.self_check` of the output against the input, reported and logged when flagged."""
    progress(ProgressEvent("self-check", 0, 1, "consistency and sharpness next to B-spline"))
    check = self_check(output, acquired)
    progress(ProgressEvent("self-check", 1, 1, check.message))
    if check.flagged:
        log.warning(check.message)
    return check


def _consistent_with(output: sitk.Image, acquired: sitk.Image, iterations: int, progress: ProgressCallback,
                    cancel: CancelToken) -> sitk.Image:
    """`output` back-projected toward the acquired input when asked (see mrisr.imaging.backprojection)."""
    if iterations == 0:
        return output
    cancel.check()
    progress(ProgressEvent("back-projection", 0, 1, f"{iterations} iteration(s)"))
    output = back_project(output, acquired, iterations)
    progress(ProgressEvent("back-projection", 1, 1, f"{iterations} iteration(s)"))
    return output


def enhance_file(
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    options: EnhanceOptions = EnhanceOptions(),
    reference_path: str | os.PathLike | None = None,
    progress: ProgressCallback = no_progress,
    cancel: CancelToken | None = None,
    uncertainty_path: str | os.PathLike | None = None,
    interpolated_path: str | os.PathLike | None = None,
    segment_after: bool = False,
) -> EnhanceResult:
    """Read, enhance and atomically write; also the uncertainty map (needs samples > 1) and the input
    interpolated onto the output grid (`mrisr.imaging.geometry.interpolated_input`) when their paths are given.

    Everything is checked first (`mrisr.plan.plan_run`, as `mrisr plan` does); the inputs are never
    overwritten and a failure writes nothing. Every event carries the run's overall fraction and time
    left (`mrisr.run_progress.OverallProgress`; pass one to go on reporting after this call).
    `segment_after`: the caller segments the output next (`RunFiles.segment`), reporting to the same
    OverallProgress, then calls its `finish`; the segmentation's share of the run is kept for it.
    """
    progress = progress if isinstance(progress, OverallProgress) else OverallProgress(progress)
    files = RunFiles(output_path, uncertainty_path, interpolated_path, segment=segment_after)
    protect = tuple(p for p in (input_path, reference_path) if p is not None)
    progress(ProgressEvent("load", 0, 1, str(input_path)))
    plan = plan_run(input_path, options, files, reference_path, raise_first=True)
    progress.expect(plan.stages(_device_for(get_spec(plan.method), options.device)))
    progress(ProgressEvent("load", 1, 1, str(input_path)))
    result = enhance(plan.image, options, plan.reference, progress, cancel)
    progress(ProgressEvent("save", 0, 1, str(output_path)))
    write_volume(result.image, output_path, protect=protect)
    if uncertainty_path is not None:
        write_volume(result.uncertainty, uncertainty_path, protect=protect + (output_path,))
    if interpolated_path is not None:
        write_volume(interpolated_input(plan.image, Grid.of(result.image)), interpolated_path,
                     protect=protect + (output_path,))
    progress(ProgressEvent("save", 1, 1, str(output_path)))
    return result
