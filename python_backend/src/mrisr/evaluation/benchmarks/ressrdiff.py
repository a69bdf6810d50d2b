"""Res-SRDiff speed and memory: parameters, one forward at 256², per-slice sampling, whole MNI volume.

The network is randomly initialised (trained weights come with the training issue): the whole-volume
runs write a throw-away model card into a temporary $MRISR_MODELS and go through the real pipeline
(`mrisr.pipeline.enhance`), each in a fresh process so every case reports its own peak RSS.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import torch

from mrisr.progress import ProgressCallback, ProgressEvent, no_progress
from mrisr.evaluation.process_usage import peak_rss_mib

PLANE_CASES = {"single": "coronal", "fusion": "coronal,sagittal"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default="thick5", help="degradation preset of the MNI input (default thick5)")
    parser.add_argument("--steps", type=int, default=4, help="sampling steps (default 4)")
    parser.add_argument("--batch-size", type=int, default=8, help="slices per batch (default 8)")
    parser.add_argument("--cases", default="single,fusion", help="whole-volume cases: single, fusion (comma list; none = skip)")
    parser.add_argument("--skip-paper", action="store_true", help="skip the paper preset's forward pass (~15 s on 2 cores)")
    parser.add_argument("--slices", type=int, default=8, help="256² slices for the per-slice timing (default 8)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu", help="device string (default cpu)")




def _cpu_seconds() -> float:
    """User + system CPU seconds of this process so far (with other load, wall time overstates the work)."""
    return time.process_time()


def _network(name: str, device: str) -> torch.nn.Module:
    from mrisr.networks.swin_unet2d import PRESETS, SwinUNet2d

    with torch.random.fork_rng():
        torch.manual_seed(0)
        return SwinUNet2d(PRESETS[name]).to(device).eval()


def _forward_seconds(name: str, device: str) -> dict:
    """Parameters and the second of two forward passes on one 256² slice."""
    from mrisr.networks.swin_unet2d import parameter_count

    network = _network(name, device)
    x = torch.zeros(1, 1, 256, 256, device=device)
    t = torch.full((1,), 4, device=device)
    with torch.no_grad():
        network(x, t, x)
        started = time.perf_counter()
        network(x, t, x)
        seconds = time.perf_counter() - started
    return {"parameters": parameter_count(network), "forward_256_seconds": round(seconds, 3)}


def _per_slice_seconds(steps: int, slices: int, device: str) -> dict:
    """Wall and CPU seconds per 256² slice for `steps`-step sampling of a batch of `slices` (cpu preset)."""
    import numpy as np

    from mrisr.diffusion.resshift import ResShiftSchedule
    from mrisr.methods.ressrdiff import slice_model

    model = slice_model(_network("cpu", device), ResShiftSchedule(), steps, device)
    stack = np.full((slices, 256, 256), 0.5, np.float32)
    model(stack[:1], None, [0])
    started, cpu = time.perf_counter(), _cpu_seconds()
    model(stack, None, list(range(slices)))
    return {"per_slice_256_seconds": round((time.perf_counter() - started) / slices, 3),
            "per_slice_256_cpu_seconds": round((_cpu_seconds() - cpu) / slices, 3)}


def _volume_case(planes: str, preset: str, steps: int, batch_size: int, threads: int, device: str) -> dict:
    """One whole-volume run in this (fresh) process: seconds, output size, peak RSS."""
    from mrisr.simulation.degradation import PRESETS, degrade
    from mrisr.io.model_store import save_model
    from mrisr.networks.swin_unet2d import PRESETS as NETWORKS
    from mrisr.pipeline import EnhanceOptions, enhance
    from mrisr.registry import get_spec
    from mrisr.simulation.template import mni_image

    if threads:
        torch.set_num_threads(threads)
    spec = get_spec("ressrdiff")
    with tempfile.TemporaryDirectory() as folder:
        card = {"method": "ressrdiff", "preset": "cpu", "network": dataclasses.asdict(NETWORKS["cpu"]),
                "diffusion": spec.config["diffusion"], "note": "random initialisation, for benchmarking only"}
        save_model(_network("cpu", "cpu").state_dict(), card, Path(folder), spec.config["card"])
        os.environ["MRISR_MODELS"] = folder
        lr = degrade(mni_image("t1", pad_to_multiple=40), PRESETS[preset])
        options = EnhanceOptions(method="ressrdiff", steps=steps, batch_size=batch_size, planes=planes, device=device)
        started, cpu = time.perf_counter(), _cpu_seconds()
        result = enhance(lr, options)
        seconds, cpu = time.perf_counter() - started, _cpu_seconds() - cpu
    return {"planes": planes, "seconds": round(seconds, 1), "cpu_seconds": round(cpu, 1),
            "output_size": list(result.image.GetSize()),
            "threads": torch.get_num_threads(), "peak_rss_mib": peak_rss_mib()}


def run(args: argparse.Namespace, progress: ProgressCallback = no_progress) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    rows: dict = {"note": "random-init networks; times depend on other load on the machine"}
    cases = [c for c in args.cases.split(",") if c and c != "none"]
    total = len(cases) + 2 + (not args.skip_paper)
    progress(ProgressEvent("bench", 0, total, "cpu preset forward"))
    rows["cpu"] = _forward_seconds("cpu", args.device)
    rows["cpu"].update(_per_slice_seconds(args.steps, args.slices, args.device))
    rows["cpu"]["steps"] = args.steps
    progress(ProgressEvent("bench", 2, total, "paper preset forward"))
    if not args.skip_paper:
        rows["paper"] = _forward_seconds("paper", args.device)
    for i, case in enumerate(cases):
        progress(ProgressEvent("bench", total - len(cases) + i, total, f"whole volume, {case}"))
        with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
            rows[f"volume_{case}"] = pool.submit(_volume_case, PLANE_CASES[case], args.preset, args.steps,
                                                 args.batch_size, args.threads, args.device).result()
    progress(ProgressEvent("bench", total, total, "done"))
    return rows
