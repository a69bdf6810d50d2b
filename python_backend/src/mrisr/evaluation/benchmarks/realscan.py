"""Generalisation check on the one real scan available offline: nibabel's anatomical.nii (a 2 mm T1 head,
33×41×25, used as 33×41×24), with thicker slices simulated and enhanced back to 2 mm by each method."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from mrisr.simulation.degradation import DegradationConfig, degrade
from mrisr.errors import InputError, MRISRError
from mrisr.imaging.foreground import foreground_mask
from mrisr.evaluation.metrics import evaluate
from mrisr.pipeline import EnhanceOptions, enhance
from mrisr.progress import ProgressCallback, ProgressEvent


def anatomical_path() -> Path:
    """The T1 scan shipped in nibabel's test data (never used for training)."""
    import nibabel

    path = Path(nibabel.__file__).parent / "tests" / "data" / "anatomical.nii"
    if not path.is_file():
        raise InputError(f"{path} is missing: this benchmark needs nibabel's test data (pip install nibabel)")
    return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--methods", nargs="+", default=["bspline", "ressrdiff"], help="methods or name:key=value variants")
    parser.add_argument("--thickness", type=float, nargs="+", default=[4.0, 8.0], help="simulated slice thicknesses (mm)")


def _score(variant: str, lr: sitk.Image, hr: sitk.Image, mask: np.ndarray) -> dict:
    """The metrics of one method variant, or its error (e.g. no weights), so the other rows still run."""
    from mrisr.evaluation.benchmarks.quality import parse_variant

    name, overrides = parse_variant(variant)
    try:
        out = enhance(lr, EnhanceOptions(method=name, target_spacing=hr.GetSpacing(), **overrides)).image
    except MRISRError as exc:
        return {"error": str(exc)}
    return {k: float(v) for k, v in evaluate(out, hr, lr, mask).items()}


def run(args: argparse.Namespace, progress: ProgressCallback) -> dict:
    hr = sitk.Cast(sitk.ReadImage(str(anatomical_path())), sitk.sitkFloat32)[:, :, :24]  # 24 slices: 4 and 8 mm tile it
    mask = foreground_mask(sitk.GetArrayFromImage(hr))
    rows, total, done = {}, len(args.thickness) * len(args.methods), 0
    for thickness in args.thickness:
        lr = degrade(hr, DegradationConfig(slice_thickness=thickness, snr=30.0, noise="rician", seed=5))
        case = rows.setdefault(f"{thickness:g} mm slices", {})
        for variant in args.methods:
            case[variant] = _score(variant, lr, hr, mask)
            done += 1
            progress(ProgressEvent("evaluate", done, total, f"{thickness:g} mm {variant}"))
        truth = evaluate(hr, hr, lr, mask)
        case["(ground truth)"] = {k: float(truth[k]) for k in ("consistency", "consistency_head")}
    rows["voxels_scored"] = int(np.count_nonzero(mask))
    return rows
