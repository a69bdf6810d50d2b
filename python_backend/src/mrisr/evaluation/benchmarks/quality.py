"""Evaluation suite: every method (and baseline) on held-out synthetic validation volumes at several
degradations — PSNR, SSIM, MS-SSIM, GMSD, consistency, LPIPS, seconds and peak RSS per volume.

Each (case, method) runs in a fresh process so its peak RSS is its own. A method variant is written
`name:key=value,...` with EnhanceOptions fields, e.g. `diffusioniqt:steps=5` or `sr3pdm:start_step=50`.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import multiprocessing
import time
from typing import Any

import numpy as np
import SimpleITK as sitk

from mrisr.simulation.degradation import PRESETS, DegradationConfig, degrade
from mrisr.errors import InputError, MRISRError
from mrisr.imaging.foreground import foreground_mask
from mrisr.evaluation.metrics import consistency, evaluate, head_consistency
from mrisr.pipeline import EnhanceOptions, enhance
from mrisr.progress import ProgressCallback, ProgressEvent
from mrisr.registry import method_specs
from mrisr.imaging.geometry import Grid, resample
from mrisr.simulation.synthetic import SyntheticPair, make_pair
from mrisr.evaluation.process_usage import peak_rss_mib

CASES = {
    "x4_lowfield": DegradationConfig(slice_thickness=4.0, contrast_gamma=1.1, contrast_compression=0.2, snr=20.0,
                                     noise="rician", seed=11),
    "x8_iqt": dataclasses.replace(PRESETS["iqt8"], seed=12),
    "x5_heldout_thickness": DegradationConfig(slice_thickness=5.0, contrast_compression=0.2, snr=25.0,
                                              noise="rician", seed=13),
    "kspace4": dataclasses.replace(PRESETS["kspace4"], snr=30.0, noise="rician", seed=14),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--methods", nargs="+", help="methods or variants (default: every registered method)")
    parser.add_argument("--volumes", type=int, default=1, help="held-out validation volumes per case (default 1)")
    parser.add_argument("--no-lpips", action="store_true", help="skip LPIPS")
    parser.add_argument("--crop", type=int, help="evaluate a central cube of this many voxels (a multiple of "
                                                 "40) of each held-out volume, degraded on its own: for slow "
                                                 "settings such as steps/quality curves")


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    """'name:steps=5,start_step=2' → ('name', {'steps': 5, 'start_step': 2})."""
    name, _, rest = text.partition(":")
    overrides = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        overrides[key] = int(value) if value.lstrip("-").isdigit() else value
    return name, overrides


def lpips_volume(pred: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> float:
    """LPIPS-Alex averaged over the axial slices that hold foreground; both scaled to [−1, 1] by the
    reference's range."""
    import torch

    from mrisr.evaluation.perceptual import lpips_alex

    low, high = float(ref.min()), float(ref.max())
    model = lpips_alex("cpu")
    indices = np.flatnonzero(mask.any(axis=(1, 2)))
    scores = []
    with torch.inference_mode():
        for first in range(0, len(indices), 16):
            chunk = indices[first:first + 16]
            as_tensor = [torch.from_numpy((2 * (a[chunk] - low) / (high - low) - 1)[:, None].astype(np.float32))
                         for a in (pred, ref)]
            scores.append(model(*as_tensor))
    return float(torch.cat(scores).mean()) if scores else float("nan")


def _run_one(lr: sitk.Image, reference: sitk.Image | None, options: EnhanceOptions) -> dict[str, Any]:
    """Child process: enhance one volume; returns the output array, seconds and this process's peak RSS."""
    started = time.perf_counter()
    try:
        result = enhance(lr, options, reference)
    except MRISRError as exc:
        return {"error": str(exc)}
    return {"array": sitk.GetArrayFromImage(result.image), "seconds": time.perf_counter() - started,
            "peak_rss_mib": peak_rss_mib(), "self_check_flagged": None if result.self_check is None else float(result.self_check.flagged)}


def _score(run: dict[str, Any], hr: sitk.Image, lr: sitk.Image, mask: np.ndarray, lpips: bool) -> dict[str, Any]:
    if "error" in run:
        return {"error": run["error"]}
    pred = sitk.GetImageFromArray(run["array"])
    pred.CopyInformation(hr)
    scores = evaluate(pred, hr, lr, mask)
    if lpips:
        scores["lpips"] = lpips_volume(run["array"], sitk.GetArrayFromImage(hr), mask)
    check = {} if run.get("self_check_flagged") is None else {"self_check_flagged": run["self_check_flagged"]}
    return {**scores, "seconds": round(run["seconds"], 1), "peak_rss_mib": round(run["peak_rss_mib"]), **check}


def central_crop(pair: SyntheticPair, size: int) -> SyntheticPair:
    """The pair cut to a central cube of `size` voxels (start and size multiples of 40, so every
    thickness of the cases tiles it) and degraded again on its own."""
    if size % 40 or size <= 0 or any(size > n for n in pair.hr.GetSize()):
        raise InputError(f"crop {size} is invalid: use a positive multiple of 40 no larger than the volume")
    start = [int(round((n - size) / 80)) * 40 for n in pair.hr.GetSize()]
    cut = [sitk.RegionOfInterest(image, [size] * 3, start) for image in (pair.hr, pair.reference)]
    lr = degrade(cut[0], pair.degradation)
    return dataclasses.replace(pair, hr=cut[0], lr=lr, condition=resample(lr, Grid.of(cut[0]), "bspline"),
                               reference=cut[1])


def run(args: argparse.Namespace, progress: ProgressCallback) -> dict:
    variants = args.methods or list(method_specs())
    spawn = multiprocessing.get_context("spawn")
    rows: dict[str, dict[str, Any]] = {}
    total, done = len(args.cases) * args.volumes * len(variants), 0
    for case in args.cases:
        for volume in range(args.volumes):
            pair = make_pair(volume, validation=True, degradation=CASES[case])
            if args.crop:
                pair = central_crop(pair, args.crop)
            mask = foreground_mask(sitk.GetArrayFromImage(pair.hr))
            rows.setdefault(case, {}).setdefault("(ground truth)", []).append(
                {"consistency": consistency(pair.hr, pair.lr), "consistency_head": head_consistency(pair.hr, pair.lr)})
            for variant in variants:
                name, overrides = parse_variant(variant)
                options = EnhanceOptions(method=name, target_spacing=pair.hr.GetSpacing(), **overrides)
                needs_reference = method_specs()[name].config.get("needs_reference")
                with concurrent.futures.ProcessPoolExecutor(1, mp_context=spawn) as pool:
                    result = pool.submit(_run_one, pair.lr, pair.reference if needs_reference else None, options).result()
                rows.setdefault(case, {}).setdefault(variant, []).append(
                    _score(result, pair.hr, pair.lr, mask, not args.no_lpips))
                done += 1
                progress(ProgressEvent("evaluate", done, total, f"{case} {variant}"))
    return {case: {v: _mean(runs) for v, runs in by_variant.items()} for case, by_variant in rows.items()}


def _mean(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Average of each metric over the volumes; a method that could not run reports its error."""
    if any("error" in r for r in runs):
        return {"error": next(r["error"] for r in runs if "error" in r)}
    return {k: float(np.mean([r[k] for r in runs])) for k in runs[0]} | {"volumes": len(runs)}
