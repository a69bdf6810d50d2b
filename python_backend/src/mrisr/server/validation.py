"""Checks a job before it is queued, with the CLI's own checks and messages (`mrisr.plan.plan_run`).

Runs in the server process (a thread), so a bad job gets a 400 at once instead of a failed job later.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from mrisr.errors import InputError
from mrisr.server.config import SINGLE_FILE_SUFFIXES, ServerConfig

RUN_KEYS = ("uncertainty", "interpolated", "segment", "segmenter", "output_suffix")  # besides EnhanceOptions'
SEGMENTERS = ("unet", "gmm")


def enhance_options(requested: dict[str, Any], config: ServerConfig):
    """EnhanceOptions from the client's JSON; the server chooses the device and caps max_voxels."""
    from mrisr.plan import EnhanceOptions

    names = {f.name for f in dataclasses.fields(EnhanceOptions)}
    unknown = sorted(set(requested) - names - set(RUN_KEYS))
    if unknown:
        raise InputError(f"unknown option(s) {', '.join(unknown)}: use the fields of mrisr.plan.EnhanceOptions")
    chosen = {k: v for k, v in requested.items() if k in names}
    chosen["device"] = config.device
    chosen["max_voxels"] = min(int(chosen.get("max_voxels") or config.max_voxels), config.max_voxels)
    if chosen.get("target_spacing") is not None:
        chosen["target_spacing"] = tuple(chosen["target_spacing"])
    try:
        return EnhanceOptions(**chosen)
    except TypeError as exc:
        raise InputError(f"the enhance options are malformed ({exc}): send them as EnhanceOptions fields") from None


def _named(role: str, suffix: Any) -> str | None:
    """The server's name for an output file of the format the client asked for (None: not asked for)."""
    if suffix in (None, False):
        return None
    if suffix not in SINGLE_FILE_SUFFIXES:
        raise InputError(f"{role} format {suffix!r} is unsupported: use one of {', '.join(SINGLE_FILE_SUFFIXES)}")
    return f"{role}{suffix}"


def job_spec(folder: Path, files: dict[str, str], requested: dict[str, Any], options) -> dict[str, Any]:
    """What the worker runs: file names inside the job folder only (outputs named by the server, in the
    formats the client asked for: `output_suffix`, and `uncertainty` / `interpolated` as suffixes)."""
    segmenter = requested.get("segmenter") or "unet"
    if segmenter not in SEGMENTERS:
        raise InputError(f"segmenter {segmenter!r} is unknown: use unet or gmm")
    return {"folder": str(folder), "input": files["volume"], "reference": files.get("reference"),
            "reference_seg": files.get("reference_seg"),
            "output": _named("output", requested.get("output_suffix") or ".nii.gz"),
            "uncertainty": _named("uncertainty", requested.get("uncertainty")),
            "interpolated": _named("interpolated", requested.get("interpolated")),
            "segment": bool(requested.get("segment")), "segmenter": segmenter,
            "options": dataclasses.asdict(options)}


def check_job(folder: Path, files: dict[str, str], requested: dict[str, Any], config: ServerConfig) -> dict[str, Any]:
    """Everything `mrisr enhance` checks before its work, on the uploaded files; returns the job spec."""
    from mrisr.io.segmentations import read_labels
    from mrisr.plan import RunFiles, plan_run

    options = enhance_options(requested, config)
    spec = job_spec(folder, files, requested, options)
    here = {key: folder / spec[key] if spec.get(key) else None
            for key in ("input", "reference", "reference_seg", "output", "uncertainty", "interpolated")}
    run_files = RunFiles(here["output"], here["uncertainty"], here["interpolated"], spec["segment"],
                         here["reference_seg"])
    try:
        plan = plan_run(here["input"], options, run_files, here["reference"], raise_first=True)
    except (TypeError, ValueError) as exc:
        raise InputError(f"an enhance option has the wrong type ({exc}): send numbers as JSON numbers") from None
    voxels = plan.input_grid.num_voxels
    if voxels > config.max_voxels:
        raise InputError(f"the input has {voxels:,} voxels, over this server's limit of {config.max_voxels:,}: "
                         f"crop or downsample it first")
    if here["reference_seg"] is not None:
        read_labels(here["reference_seg"])
    return spec
