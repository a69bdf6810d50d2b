"""SR3 + PDM: parameter counts, forward and per-slice sampling time at 256², whole-volume time and peak RSS.

Networks are randomly initialised (timing does not depend on training). The whole-volume runs go
through the real pipeline (`enhance`) with the random cpu-preset weights written as a temporary model
card, each in a fresh process so its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from mrisr.errors import InputError
from mrisr.progress import ProgressCallback, ProgressEvent
from mrisr.evaluation.process_usage import peak_rss_mib

VOLUME_RUNS = {  # name: (start step K, steps); T = 100
    "sr3_full": (100, 100),
    "pdm_k25": (25, 25),
    "pdm_k25_ddim5": (25, 5),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--crop", type=int, default=0,
                        help="central cube of the 1 mm MNI template, in voxels (multiple of 10; 0 = whole volume)")
    parser.add_argument("--volume-runs", default="sr3_full,pdm_k25,pdm_k25_ddim5",
                        help=f"comma list of whole-volume runs among {', '.join(VOLUME_RUNS)} ('' for none)")
    parser.add_argument("--slice-runs", default="sr3_full,pdm_k25,pdm_k25_ddim5",
                        help="comma list of the same runs timed on one 256² slice ('' for none)")
    parser.add_argument("--skip-paper", action="store_true", help="skip the paper preset's forward (≈ 100 M params)")
    parser.add_argument("--batch-size", type=int, default=None, help="slices per batch in the volume runs")
    parser.add_argument("--planes", default="auto", help="slice planes of the volume runs (default: the method's)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")


def _runs(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in VOLUME_RUNS]
    if unknown:
        raise InputError(f"unknown runs {unknown}: choose among {', '.join(VOLUME_RUNS)}")
    return names


def _forward_seconds(preset: str, device: str, size: int = 256) -> dict[str, Any]:
    import torch

    from mrisr.networks.sr3_unet2d import PRESETS, SR3UNet2d, parameter_count

    network = SR3UNet2d(PRESETS[preset]).to(device).eval()
    with torch.inference_mode():
        small = torch.zeros(1, 1, 64, 64, device=device)
        network(small, small, torch.ones(1, device=device))  # warm-up
        x = torch.randn(1, 1, size, size, device=device)
        started = time.perf_counter()
        network(x, x, torch.full((1,), 0.5, device=device))
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
    return {"parameters": parameter_count(network), f"forward_{size}_seconds": round(seconds, 3)}


def _slice_seconds(names: list[str], device: str, size: int = 256) -> dict[str, Any]:
    """Seconds to sample one size² slice with the cpu preset for each (K, steps)."""
    import torch

    from mrisr.diffusion import pdm
    from mrisr.networks.sr3_unet2d import PRESETS, SR3UNet2d

    network = SR3UNet2d(PRESETS["cpu"]).to(device).eval()
    schedule = pdm.sr3_schedule(100)
    g = torch.Generator(device=device).manual_seed(0)
    y = torch.rand(1, 1, size, size, generator=g, device=device) * 2 - 1
    rows: dict[str, Any] = {}
    for name in names:
        start, steps = VOLUME_RUNS[name]
        started = time.perf_counter()
        noise = torch.randn(y.shape, generator=g, device=device)
        with torch.inference_mode():
            pdm.sample(pdm.denoiser(network, y, schedule, clip=1.5), y, schedule, noise, start, steps,
                       eta=1.0 if steps == start else 0.0, generator=g)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        rows[name] = {"start_step": start, "steps": steps, "seconds": round(time.perf_counter() - started, 2)}
    if "sr3_full" in rows and "pdm_k25" in rows:
        rows["speedup_pdm_k25_vs_sr3_full"] = round(rows["sr3_full"]["seconds"] / rows["pdm_k25"]["seconds"], 2)
    return rows


def _mni_thick5(crop: int):
    import SimpleITK as sitk

    from mrisr.simulation.degradation import PRESETS, degrade
    from mrisr.simulation.template import mni_image

    if crop and (crop % 10 or not 10 <= crop <= 200):
        raise InputError(f"crop {crop} is invalid: use a multiple of 10 from 10 to 200 (0 = whole volume)")
    image = mni_image("t1", pad_to_multiple=40)  # 200 × 240 × 200
    if crop:
        index = [(n - crop) // 2 // 10 * 10 for n in image.GetSize()]
        image = sitk.RegionOfInterest(image, [crop] * 3, index)
    return degrade(image, PRESETS["thick5"])




def _volume_child(job: dict[str, Any]) -> dict[str, Any]:
    """One whole-volume run in a fresh process: seconds of `enhance` and this process's peak RSS."""
    os.environ["MRISR_MODELS"] = job["models"]
    import torch

    from mrisr.pipeline import EnhanceOptions, enhance

    if job["threads"]:
        torch.set_num_threads(job["threads"])
    lr = _mni_thick5(job["crop"])
    options = EnhanceOptions(method="sr3pdm", start_step=job["start_step"], steps=job["steps"], device=job["device"],
                             batch_size=job["batch_size"], planes=job["planes"])
    result = enhance(lr, options)
    return {"start_step": job["start_step"], "steps": job["steps"], "seconds": round(result.seconds, 1),
            "peak_rss_mib": peak_rss_mib(),
            "input_size": list(lr.GetSize()), "output_size": list(result.image.GetSize())}


def _random_card(folder: Path) -> None:
    """Random cpu-preset weights as the model card the registry names (sr3pdm_cpu)."""
    import torch

    from mrisr.io.model_store import save_model
    from mrisr.networks.sr3_unet2d import PRESETS, SR3UNet2d
    from mrisr.registry import get_spec

    torch.manual_seed(0)
    config = get_spec("sr3pdm").config
    card = {"method": "sr3pdm", "preset": "cpu", "network": PRESETS["cpu"].to_dict(),
            "diffusion": {k: config[k] for k in ("T_train", "beta_schedule", "latent_alignment",
                                                  "trained_start_step", "alignment_schedule")},
            "training": "random initialisation (benchmark only)"}
    save_model(SR3UNet2d(PRESETS["cpu"]).state_dict(), card, folder, config["card"])


def _volume_runs(args: argparse.Namespace, names: list[str], device: str, progress: ProgressCallback) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as models:
        _random_card(Path(models))
        context = multiprocessing.get_context("spawn")
        for i, name in enumerate(names):
            progress(ProgressEvent("volume", i, len(names), name))
            start, steps = VOLUME_RUNS[name]
            job = {"models": models, "threads": args.threads, "crop": args.crop, "start_step": start, "steps": steps,
                   "device": device, "batch_size": args.batch_size, "planes": args.planes}
            with context.Pool(1) as pool:
                rows[name] = pool.apply(_volume_child, (job,))
        progress(ProgressEvent("volume", len(names), len(names), "done"))
    return rows


def run(args: argparse.Namespace, progress: ProgressCallback) -> dict:
    import torch

    from mrisr.device import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    volume_names, slice_names = _runs(args.volume_runs), _runs(args.slice_runs)
    presets = ["cpu"] if args.skip_paper else ["cpu", "paper"]
    results: dict[str, Any] = {"device": device, "threads": torch.get_num_threads(), "crop": args.crop or None}
    results["presets"] = {p: _forward_seconds(p, device) for p in presets}
    progress(ProgressEvent("slice", 0, 1, "256² slice sampling"))
    results["slice_256"] = _slice_seconds(slice_names, device)
    progress(ProgressEvent("slice", 1, 1, "256² slice sampling"))
    results["volume"] = _volume_runs(args, volume_names, device, progress)
    return results
