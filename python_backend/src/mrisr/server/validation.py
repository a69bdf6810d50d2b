"""Checks a job before it is queued, with the CLI's own messages: options, then the uploaded volumes.

Runs in the server process (a thread), so a bad job gets a 400 at once instead of a failed job later.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from mrisr.errors import InputError
from mrisr.server.config import ServerConfig

RUN_KEYS = ("uncertainty", "segment", "segmenter", "output_suffix")  # besides EnhanceOptions' fields
SEGMENTERS = ("unet", "gmm")


def enhance_options(requested: dict[str, Any], config: ServerConfig):
    """EnhanceOptions from the client's JSON; the server chooses the device and caps max_voxels."""
    from mrisr.pipeline import EnhanceOptions

    names = {f.name for f in dataclasses.fields(EnhanceOptions)}
    unknown = sorted(set(requested) - names - set(RUN_KEYS))
    if unknown:
        raise InputError(f"unknown option(s) {', '.join(unknown)}: use the fields of mrisr.pipeline.EnhanceOptions")
    chosen = {k: v for k, v in requested.items() if k in names}
    chosen["device"] = config.device
    chosen["max_voxels"] = min(int(chosen.get("max_voxels") or config.max_voxels), config.max_voxels)
    if chosen.get("target_spacing") is not None:
        chosen["target_spacing"] = tuple(chosen["target_spacing"])
    try:
        return EnhanceOptions(**chosen)
    except TypeError as exc:
        raise InputError(f"the enhance options are malformed ({exc}): send them as EnhanceOptions fields") from None


def check_job(folder: Path, files: dict[str, str], requested: dict[str, Any], config: ServerConfig):
    """Everything `enhance_file` checks before its work, on the uploaded files; returns the options."""
    from mrisr.inference.posterior_samples import check_samples
    from mrisr.io.segmentations import read_labels
    from mrisr.io.volumes import read_volume
    from mrisr.pipeline import output_grid, resolve_settings
    from mrisr.registry import default_method, get_spec

    options = enhance_options(requested, config)
    spec = get_spec(options.method or default_method())
    try:
        resolve_settings(spec, options)
    except (TypeError, ValueError) as exc:
        raise InputError(f"an enhance option has the wrong type ({exc}): send numbers as JSON numbers") from None
    check_samples(options.samples, spec.kind == "diffusion", spec.name)
    if requested.get("uncertainty") and options.samples < 2:
        raise InputError("an uncertainty map needs several samples: add --samples 2 or more")
    if requested.get("segmenter", "unet") not in SEGMENTERS:
        raise InputError(f"segmenter {requested['segmenter']!r} is unknown: use unet or gmm")
    if "reference_seg" in files and not requested.get("segment"):
        raise InputError("--reference-seg needs --segment: add --segment or leave it out")
    if spec.config.get("needs_reference") and "reference" not in files:
        raise InputError(f"method {spec.name!r} needs a reference volume of another contrast: pass --reference")
    image = read_volume(folder / files["volume"])
    voxels = image.GetNumberOfPixels()
    if voxels > config.max_voxels:
        raise InputError(f"the input has {voxels:,} voxels, over this server's limit of {config.max_voxels:,}: "
                         f"crop or downsample it first")
    output_grid(image, options)
    if "reference" in files:
        read_volume(folder / files["reference"])
    if "reference_seg" in files:
        read_labels(folder / files["reference_seg"])
    return options
