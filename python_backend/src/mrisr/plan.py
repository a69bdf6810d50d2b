"""What a run will do, answered without running it: the limits, the output grid, the errors, the files.

The rules live here once. The pipeline checks its options and derives its output grid with these
functions; `mrisr methods --json` exports `limits()` and `mrisr plan` answers with `plan_run()`, so the
Slicer module asks the backend instead of copying its rules. Imports neither torch nor the methods.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence, TypeVar

import numpy as np
import SimpleITK as sitk

from mrisr.adaptation import settings as adaptation
from mrisr.errors import InputError
from mrisr.imaging import backprojection
from mrisr.imaging.geometry import DEFAULT_MAX_VOXELS, INPUT_INTERPOLATOR, Grid, finest_isotropic_spacing, grid_with_spacing
from mrisr.inference import posterior_samples
from mrisr.io.volumes import check_output_path, read_volume
from mrisr.registry import MethodSpec, default_method, get_spec, method_specs, presets
from mrisr.run_progress import Stage, run_stages
from mrisr.segmentation.runs import SegmentationPaths

DEFAULT_OVERLAP = 0.25
OUTPUT_BYTES_PER_VOXEL = 4  # float32
PLANE_NORMALS = {"sagittal": 0, "coronal": 1, "axial": 2}  # patient (LPS) axis each plane is perpendicular to
DEFAULT_GRID_MAX_VOXELS = 24_000_000  # the default output grid stays within this (a 0.8 mm head; 92 MiB a volume)
DEFAULT_SPACING_STEP_MM = 0.01  # a default spacing coarsened to fit that budget is a multiple of this

# Device memory of a learned method's run (an estimate: no GPU measured it yet). Activations: the peak
# resident memory of one call of Res-SRDiff's shipped network on 8 slices of 128² and 256² (fp32, CPU),
# 280–380 bytes per input voxel, used for every network. A 3D patch method also keeps whole-volume float32
# tensors on the device (x_t, condition, noise, blended prediction) and feeds blocks of 3×3×3 patches.
ACTIVATION_BYTES_PER_BATCH_VOXEL = 300
PATCH_METHOD_DEVICE_VOLUMES = 4
PATCHES_PER_BLOCK = 27
DEFAULT_SLICE_BATCH = 8
DEFAULT_BLOCK_BATCH = 4

T = TypeVar("T")


@dataclass(frozen=True)
class EnhanceOptions:
    """What the user chose; None means the method's default."""

    method: str | None = None
    steps: int | None = None
    start_step: int | None = None
    patch_size: int | None = None
    overlap: float = DEFAULT_OVERLAP
    target_spacing: Sequence[float] | None = None
    device: str = "auto"
    seed: int = 0
    batch_size: int | None = None
    max_voxels: int = DEFAULT_MAX_VOXELS
    planes: str = "auto"
    samples: int = 1  # posterior samples (seeds seed, seed+1, …) averaged; > 1 also gives an uncertainty map
    back_projection: int = 0  # iterations toward the acquired slices (0 = off), see mrisr.imaging.backprojection
    adapt: float = 0.0  # seconds of fine-tuning on the scan itself before the run (0 = off), see mrisr.adaptation
    slice_thickness: float | None = None  # mm, the slice profile for adaptation; default DICOM's, else the spacing


@dataclass(frozen=True)
class RunFiles:
    """Where one `enhance` run writes; None for the files this run does not write."""

    output: str | os.PathLike | None = None
    uncertainty: str | os.PathLike | None = None
    interpolated: str | os.PathLike | None = None
    segment: bool = False
    reference_seg: str | os.PathLike | None = None

    def segmentation(self) -> SegmentationPaths | None:
        return SegmentationPaths.beside(self.output) if self.segment and self.output is not None else None

    def written(self) -> dict[str, str]:
        """Every file the run writes, by role (output, uncertainty, interpolated, input_seg, output_seg, report)."""
        files = {"output": self.output, "uncertainty": self.uncertainty, "interpolated": self.interpolated}
        paths = self.segmentation()
        if paths is not None:
            files |= {"input_seg": paths.input_seg, "output_seg": paths.output_seg, "report": paths.report}
        return {role: str(path) for role, path in files.items() if path is not None}


def limits() -> dict[str, Any]:
    """The backend's limits and rules, read from the constants the checks use (for `mrisr methods --json`).

    Per-method ranges (steps, start step, patch size) are the registry entries' own.
    """
    return {
        "max_samples": posterior_samples.MAX_SAMPLES,
        "max_back_projection": backprojection.MAX_ITERATIONS,
        "adapt_seconds": {"default": adaptation.DEFAULT_SECONDS, "maximum": adaptation.MAX_SECONDS,
                          "methods": "those whose registry config has \"adaptation\": true"},
        "overlap": {"default": DEFAULT_OVERLAP, "minimum": 0.0, "below": 1.0},
        "max_voxels": DEFAULT_MAX_VOXELS,
        "target_spacing": {"values": 3, "unit": "mm", "rule": "positive and finite",
                           "default": "the input's finest spacing on every axis, but not finer than the method's "
                                      "training range and coarsened until the grid has at most "
                                      "default_grid_max_voxels (or max_voxels, if smaller)"},
        "default_grid_max_voxels": DEFAULT_GRID_MAX_VOXELS,
        "output_grid": "the input's physical extent and direction; size = round(extent / spacing), at least 1",
        "input_interpolator": INPUT_INTERPOLATOR,
    }


def catalog() -> dict[str, Any]:
    """What `mrisr methods --json` prints and the Slicer module reads: default method, limits, methods."""
    return {"default_method": default_method(), "limits": limits(), "presets": presets(),
            "methods": [dataclasses.asdict(spec) for spec in method_specs().values()]}


def check_overlap(overlap: float) -> None:
    if not 0.0 <= overlap < 1.0:
        raise InputError(f"overlap {overlap} is out of range: use --overlap in [0, 1)")


def check_batch_size(batch_size: int | None) -> None:
    if batch_size is not None and batch_size < 1:
        raise InputError(f"batch size {batch_size} is invalid: use --batch-size 1 or more")


def method_ranges(spec: MethodSpec, options: EnhanceOptions) -> dict[str, int | None]:
    """Steps, start step and patch size with the method's defaults applied, each checked against its range."""
    def ranged(name: str, flag: str, value: int | None) -> int | None:
        allowed = getattr(spec, name)
        if allowed is None:
            if value is not None:
                raise InputError(f"method {spec.name!r} takes no {flag} (it has no such setting): leave it out")
            return None
        return allowed.check(name.replace("_", " "), flag, value, spec.name)

    start_step = ranged("start_step", "--start-step", options.start_step)
    steps = options.steps
    if steps is None and spec.steps is not None and options.start_step is not None and spec.start_step.caps_steps:
        steps = min(spec.steps.default, start_step)  # a partial chain of K steps has at most K steps
    return {"steps": ranged("steps", "--steps", steps), "start_step": start_step,
            "patch_size": ranged("patch_size", "--patch-size", options.patch_size)}


def option_checks(spec: MethodSpec, options: EnhanceOptions) -> dict[str, Callable[[], Any]]:
    """Every option check that needs no image, by name, in the order `enhance` runs them."""
    return {
        "overlap": lambda: check_overlap(options.overlap),
        "batch_size": lambda: check_batch_size(options.batch_size),
        "back_projection": lambda: backprojection.check_iterations(options.back_projection),
        "ranges": lambda: method_ranges(spec, options),
        "samples": lambda: posterior_samples.check_samples(options.samples, spec.kind == "diffusion", spec.name),
        "adapt": lambda: adaptation.check_adapt(spec, options.adapt, options.slice_thickness),
    }


def check_options(spec: MethodSpec, options: EnhanceOptions) -> dict[str, int | None]:
    """Run `option_checks`, raising the first error; returns `method_ranges`."""
    results = {name: check() for name, check in option_checks(spec, options).items()}
    return results["ranges"]


def check_reference(spec: MethodSpec, has_reference: bool) -> None:
    """Multi-contrast methods need a reference volume."""
    if spec.config.get("needs_reference") and not has_reference:
        raise InputError(f"method {spec.name!r} needs a reference volume of another contrast: pass --reference")


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


def training_range_warnings(spec: MethodSpec, input_spacing: Sequence[float], output_spacing: Sequence[float],
                            adapting: bool = False) -> list[str]:
    """One line per way this run lies outside the range the method's weights were trained for (the registry
    config's "training_range"): it still runs, but its quality there is unmeasured."""
    trained = spec.config.get("training_range")
    if not trained:
        return []
    warnings, advice = [], "check the result against bspline" + ("" if adapting else ", or use --adapt")
    low, high = trained["output_spacing_mm"]
    finest = min(output_spacing)
    if not low <= finest <= high:
        warnings.append(f"{spec.name} was trained for {low:g}–{high:g} mm output voxels, this run makes {finest:g} mm: "
                        + advice)
    low, high = trained["through_plane_factor"]
    factor = max(i / o for i, o in zip(input_spacing, output_spacing))
    if not low <= factor <= high:
        warnings.append(f"{spec.name} was trained for through-plane factors ×{low:g}–×{high:g}, this run is ×{factor:.1f}: "
                        + advice)
    return warnings


def default_spacing(grid: Grid, spec: MethodSpec | None, max_voxels: int = DEFAULT_MAX_VOXELS) -> tuple[float, float, float]:
    """The output spacing when none is given: isotropic at the input's finest spacing, never finer than the
    finest output spacing `spec` was trained for, and coarsened in DEFAULT_SPACING_STEP_MM steps until the
    grid has at most min(DEFAULT_GRID_MAX_VOXELS, max_voxels) voxels."""
    spacing = finest_isotropic_spacing(grid)[0]
    trained = spec.config.get("training_range") if spec is not None else None
    if trained:
        spacing = max(spacing, float(trained["output_spacing_mm"][0]))
    budget = min(DEFAULT_GRID_MAX_VOXELS, max_voxels)

    def voxels(s: float) -> int:
        return grid_with_spacing(grid, (s, s, s), max_voxels=2**62).num_voxels

    if voxels(spacing) > budget:
        volume = math.prod(n * s for n, s in zip(grid.size, grid.spacing))
        step = DEFAULT_SPACING_STEP_MM
        spacing = round(math.ceil(max(spacing, (volume / budget) ** (1 / 3)) / step) * step, 6)
        while voxels(spacing) > budget:
            spacing = round(spacing + step, 6)
    return (spacing, spacing, spacing)


def output_grid(image: sitk.Image, options: EnhanceOptions, spec: MethodSpec | None = None) -> Grid:
    """The output grid: the input's extent and direction at the target spacing, by default
    `default_spacing` for `spec` (None: no method's training range)."""
    grid = Grid.of(image)
    spacing = options.target_spacing or default_spacing(grid, spec, options.max_voxels)
    return grid_with_spacing(grid, spacing, options.max_voxels)


def device_memory_mib(spec: MethodSpec, settings: dict[str, Any], grid: Grid) -> float:
    """Estimated device memory of a run of `spec` on `grid` (MiB): weights, one network batch's activations
    and, for 3D patch methods, the whole-volume tensors; 0 for interpolation (CPU only)."""
    if spec.kind == "interpolation":
        return 0.0
    presets = spec.config.get("presets", {})
    shipped = presets.get(str(spec.config.get("card", "")).rsplit("_", 1)[-1], {})
    parameters = shipped.get("parameters", max((p.get("parameters", 0) for p in presets.values()), default=0))
    volume = grid.num_voxels * OUTPUT_BYTES_PER_VOXEL
    if spec.patch_size is not None:
        batch = settings.get("batch_size") or DEFAULT_BLOCK_BATCH
        voxels = batch * PATCHES_PER_BLOCK * (settings.get("patch_size") or spec.patch_size.default) ** 3
        volumes = PATCH_METHOD_DEVICE_VOLUMES * volume
    else:
        batch = settings.get("batch_size") or spec.config.get("batch_size", DEFAULT_SLICE_BATCH)
        voxels, volumes = batch * math.prod(sorted(grid.size)[1:]), 0
    return (parameters * 4 + voxels * ACTIVATION_BYTES_PER_BATCH_VOXEL + volumes) / 2**20


def check_files(files: RunFiles, protect: tuple[str | os.PathLike, ...], samples: int) -> None:
    """Refuse output paths that cannot be written, that are inputs, or that clash, before any work."""
    if files.reference_seg is not None and not files.segment:
        raise InputError("--reference-seg needs --segment: add --segment or leave it out")
    if files.output is None:
        return
    check_output_path(files.output, protect)
    paths = files.segmentation()
    for path in (paths.input_seg, paths.output_seg) if paths is not None else ():
        check_output_path(path, protect)
    if files.uncertainty is not None and samples < 2:
        raise InputError("an uncertainty map needs several samples: add --samples 2 or more")
    for path, what in ((files.uncertainty, "uncertainty map"), (files.interpolated, "interpolated input")):
        if path is None:
            continue
        if os.path.abspath(path) == os.path.abspath(files.output):
            raise InputError(f"{what} path {path} is the output path: give the {what} its own file")
        check_output_path(path, protect + (files.output,))


@dataclass
class RunPlan:
    """The answer of `mrisr plan`: what a run with these options would make, and why it would refuse."""

    method: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    input_grid: Grid | None = None
    output_grid: Grid | None = None
    files: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # runs, but outside what the method was trained for
    image: sitk.Image | None = field(default=None, repr=False)  # the input as read (not part of the answer)
    reference: sitk.Image | None = field(default=None, repr=False)  # the reference as read

    def attempt(self, check: Callable[..., T], *args: Any, raise_first: bool = False) -> T | None:
        """Run one check; its InputError is raised (raise_first) or recorded. Returns the check's result."""
        try:
            return check(*args)
        except InputError as exc:
            if raise_first:
                raise
            self.errors.append(str(exc))
            return None

    def stages(self, device: str | None = None) -> tuple[Stage, ...]:
        """The run's stages with their expected seconds (`mrisr.run_progress`) on `device` (default: the
        one asked for, CPU rates for "auto"); empty while the plan has errors."""
        if self.errors or self.method is None or self.output_grid is None:
            return ()
        s = self.settings
        device = device or (s["device"] if s["device"] != "auto" else "cpu")
        return run_stages(get_spec(self.method), self.input_grid.num_voxels, self.output_grid.num_voxels,
                          steps=s["steps"], start_step=s["start_step"], samples=s["samples"], adapt_seconds=s["adapt"],
                          back_projection=s["back_projection"], outputs=1 + ("uncertainty" in self.files),
                          interpolated="interpolated" in self.files, segment="output_seg" in self.files, device=device)

    def to_json(self) -> dict[str, Any]:
        def grid(g: Grid | None) -> dict[str, Any] | None:
            if g is None:
                return None
            return {"size": list(g.size), "spacing": list(g.spacing), "origin": list(g.origin),
                    "direction": list(g.direction), "voxels": g.num_voxels}

        output = grid(self.output_grid)
        if output is not None:
            copies = 2 if "uncertainty" in self.files else 1
            output["memory_mib"] = round(copies * self.output_grid.num_voxels * OUTPUT_BYTES_PER_VOXEL / 2**20, 1)
            if self.method is not None:
                memory = device_memory_mib(get_spec(self.method), self.settings, self.output_grid)
                output["device_memory_mib"] = round(memory, 1)
        stages = self.stages()
        return {"method": self.method, "settings": self.settings, "input": grid(self.input_grid), "output": output,
                "files": self.files, "errors": self.errors, "warnings": self.warnings,
                "expected_seconds": round(math.fsum(s.seconds for s in stages), 1) if stages else None,
                "stages": {s.name: round(s.seconds, 2) for s in stages}}


def plan_run(input_path: str | os.PathLike, options: EnhanceOptions = EnhanceOptions(), files: RunFiles = RunFiles(),
             reference_path: str | os.PathLike | None = None, raise_first: bool = False) -> RunPlan:
    """Check a run in the order `enhance` does and derive its output grid, without running a method.

    With `raise_first` the first error is raised (what `enhance_file` does); otherwise every independent
    error is collected in `errors` and the plan says as much as it can.
    """
    plan = RunPlan(files=files.written())
    protect = tuple(p for p in (input_path, reference_path, files.reference_seg) if p is not None)
    plan.attempt(check_files, files, protect, options.samples, raise_first=raise_first)
    spec = plan.attempt(get_spec, options.method or default_method(), raise_first=raise_first)
    if spec is not None:
        plan.method = spec.name
        results = {name: plan.attempt(check, raise_first=raise_first)
                   for name, check in option_checks(spec, options).items()}
        plan.settings = {**(results["ranges"] or {}), "overlap": options.overlap, "samples": options.samples,
                         "back_projection": options.back_projection, "adapt": options.adapt,
                         "batch_size": options.batch_size, "device": options.device}
        plan.attempt(check_reference, spec, reference_path is not None, raise_first=raise_first)
    plan.image = plan.attempt(read_volume, input_path, raise_first=raise_first)
    if reference_path is not None:
        plan.reference = plan.attempt(read_volume, reference_path, raise_first=raise_first)
    if plan.image is not None:
        plan.input_grid = Grid.of(plan.image)
        plan.attempt(slice_axes, options.planes, plan.image.GetDirection(), raise_first=raise_first)
        plan.output_grid = plan.attempt(output_grid, plan.image, options, spec, raise_first=raise_first)
    if spec is not None and plan.output_grid is not None:
        plan.warnings = training_range_warnings(spec, plan.input_grid.spacing, plan.output_grid.spacing,
                                                bool(options.adapt))
    return plan
