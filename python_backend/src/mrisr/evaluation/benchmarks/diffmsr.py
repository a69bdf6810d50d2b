"""DiffMSR: parameters per part, per-slice time at 256² with the latent steps' share, whole-volume time and memory.

All timings use random-init weights (no trained DiffMSR weights exist yet); speed does not depend on
the weights. The whole-volume run enhances a T2-like contrast made from the MNI152 tissue maps,
degraded in-plane by k-space ×4, with the MNI T1 as reference, through the normal pipeline (a
temporary model card of random weights is installed for it).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import SimpleITK as sitk
import torch

from mrisr.simulation.degradation import DegradationConfig, degrade
from mrisr.diffusion.latent_ddpm import LatentDiffusionConfig, sample_prior
from mrisr.imaging.geometry import Grid
from mrisr.io.model_store import save_model
from mrisr.networks.diffmsr import PRESETS, DiffMSRNetwork
from mrisr.pipeline import EnhanceOptions, enhance
from mrisr.progress import ProgressCallback, ProgressEvent
from mrisr.simulation.template import mni_image
from mrisr.evaluation.process_usage import peak_rss_mib


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per slice measurement (best is kept)")
    parser.add_argument("--batch-size", type=int, default=8, help="slices per batch in the batched measurement")
    parser.add_argument("--no-volume", action="store_true", help="skip the whole-volume run")
    parser.add_argument("--no-paper-timing", action="store_true", help="skip timing the paper preset")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own)")


def t2_like(t1: np.ndarray, gm: np.ndarray, wm: np.ndarray) -> np.ndarray:
    """A T2-like (z, y, x) volume of the same anatomy: dark WM, brighter GM, bright CSF, dim scalp.

    t1 scaled to [0, 1]; gm, wm probabilities. CSF is where the head is dark on T1 but not GM/WM.
    """
    brain = np.clip(gm + wm, 0, 1)
    csf = np.clip((t1 > 0.02).astype(np.float32) - brain, 0, 1) * (t1 < 0.35)
    return (0.35 * wm + 0.6 * gm + 0.95 * csf + 0.25 * t1 * (1 - brain) * (1 - csf)).astype(np.float32)


def multicontrast_mni(pad_to_multiple: int = 40) -> tuple[sitk.Image, sitk.Image]:
    """(T2-like target, T1 reference) on the MNI152 1 mm grid."""
    t1 = mni_image("t1", pad_to_multiple)
    arrays = [sitk.GetArrayFromImage(mni_image(k, pad_to_multiple)) for k in ("gm", "wm")]
    t1_array = sitk.GetArrayFromImage(t1)
    target = t2_like(t1_array / t1_array.max(), *arrays)
    return Grid.of(t1).image_from_array(target), t1


def _best(fn, repeats: int) -> tuple[float, ...]:
    fn()
    return min((fn() for _ in range(repeats)), key=sum)


@torch.no_grad()
def slice_timing(network: DiffMSRNetwork, batch: int, repeats: int, size: int = 256) -> dict[str, float]:
    """Seconds per slice for CE, the 4 latent steps and the PLWformer at size², and the latent share."""
    condition, reference = torch.rand(batch, 1, size, size), torch.rand(batch, 1, size, size)
    diffusion = LatentDiffusionConfig()

    def once() -> tuple[float, float, float]:
        start = time.perf_counter()
        latent_condition = network.extract_condition(condition)
        ce = time.perf_counter()
        generators = [torch.Generator().manual_seed(i) for i in range(batch)]
        prior = sample_prior(network, latent_condition, diffusion, 4, generators)
        latent = time.perf_counter()
        network.decode(condition, reference, prior)
        return ce - start, latent - ce, time.perf_counter() - latent

    ce, latent, decode = (t / batch for t in _best(once, repeats))
    total = ce + latent + decode
    return {"batch": batch, "condition_extraction_s": round(ce, 4), "latent_4_steps_s": round(latent, 4),
            "plwformer_s": round(decode, 4), "total_s": round(total, 4), "latent_share": round(latent / total, 4)}


@contextmanager
def random_weights_installed(config_name: str = "cpu") -> Iterator[None]:
    """A temporary $MRISR_MODELS holding diffmsr_cpu with random-init weights."""
    previous = os.environ.get("MRISR_MODELS")
    with tempfile.TemporaryDirectory() as folder:
        torch.manual_seed(0)
        network = DiffMSRNetwork(PRESETS[config_name])
        card = {"method": "diffmsr", "preset": config_name, "note": "random-init weights for benchmarking",
                "network": network.config.to_dict(), "diffusion": dataclasses.asdict(LatentDiffusionConfig())}
        save_model(network.state_dict(), card, Path(folder), "diffmsr_cpu")
        os.environ["MRISR_MODELS"] = folder
        try:
            yield
        finally:
            if previous is None:
                os.environ.pop("MRISR_MODELS", None)
            else:
                os.environ["MRISR_MODELS"] = previous


def volume_run(progress: ProgressCallback) -> dict:
    target, reference = multicontrast_mni()
    lr = degrade(target, DegradationConfig(kspace_factor=4.0))
    stages: dict[str, float] = {}
    mark = [time.perf_counter()]  # start of the current stage: its 0/total event or the previous stage's end

    def track(event: ProgressEvent) -> None:
        if event.done == 0:
            mark[0] = time.perf_counter()
        elif event.done == event.total:
            now = time.perf_counter()
            stages[event.stage] = round(now - mark[0], 2)
            mark[0] = now
        progress(event)

    with random_weights_installed():
        t0 = time.perf_counter()
        result = enhance(lr, EnhanceOptions(method="diffmsr"), reference=reference, progress=track)
        seconds = time.perf_counter() - t0
    return {"weights": "random init (speed only)", "input_size": list(lr.GetSize()),
            "output_size": list(result.image.GetSize()), "seconds": round(seconds, 1), "stage_seconds": stages,
            "peak_rss_mib": peak_rss_mib()}


def run(args: argparse.Namespace, progress: ProgressCallback) -> dict:
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    results: dict = {"note": "random-init weights; measured with other jobs possibly running",
                     "threads": torch.get_num_threads()}
    for name, config in PRESETS.items():
        results[f"parameters_{name}"] = DiffMSRNetwork(config).parameter_counts()
        results[f"parameters_{name}_without_reference"] = DiffMSRNetwork(config.without_reference()).parameter_counts()
    cpu = DiffMSRNetwork(PRESETS["cpu"]).eval()
    results["slice_256_cpu_batch1"] = slice_timing(cpu, 1, args.repeats)
    results[f"slice_256_cpu_batch{args.batch_size}"] = slice_timing(cpu, args.batch_size, args.repeats)
    if not args.no_paper_timing:
        results["slice_256_paper_batch1"] = slice_timing(DiffMSRNetwork(PRESETS["paper"]).eval(), 1, 1)
    if not args.no_volume:
        results["volume_mni_kspace4"] = volume_run(progress)
    return results
