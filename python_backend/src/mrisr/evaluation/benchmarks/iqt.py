"""DiffusionIQT: parameter counts, one paper-preset forward on 27×2×32³, whole-volume seconds and peak RSS.

Weights are random (no trained model is needed to time the network); each whole-volume run happens in
a fresh process so its peak RSS is its own. Select parts with --parts to keep runs short.
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from typing import TYPE_CHECKING

import numpy as np

from mrisr.errors import InputError
from mrisr.progress import ProgressCallback, ProgressEvent
from mrisr.evaluation.process_usage import peak_rss_mib

if TYPE_CHECKING:  # torch is imported when a benchmark runs, not when the CLI builds its parsers
    import torch

PARTS = ("params", "forward", "volume")
VARIANTS = ("patches-fp32", "block-fp32", "block-bf16")


class PaddedPatchLayout:
    """The public code's formulation of the cross-batch padding, for comparison: every 3³ convolution
    runs on the 27 patches, each padded with 1 voxel of its neighbours (assemble, pad, unfold)."""

    def __init__(self, parts: int = 3):
        from mrisr.networks.iqt_unet3d import BlockLayout

        self.layout = BlockLayout(parts)
        self.merge, self.split = self.layout.merge, self.layout.split

    def conv(self, conv: torch.nn.Conv3d, x: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        n, c, s = x.shape[:3]
        block = F.pad(self.merge(x), (1, 1) * 3)
        patches = block.unfold(2, s + 2, s).unfold(3, s + 2, s).unfold(4, s + 2, s)
        patches = patches.permute(0, 2, 3, 4, 1, 5, 6, 7).reshape(n, c, s + 2, s + 2, s + 2)
        return F.conv3d(patches, conv.weight, conv.bias)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma list of {', '.join(PARTS)} (default all)")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"forward part: comma list of {', '.join(VARIANTS)} (bf16 needs native CPU support)")
    parser.add_argument("--forward-preset", default="paper", help="network preset of the forward part (default paper)")
    parser.add_argument("--volume-preset", default="cpu", help="network preset of the volume part (default cpu)")
    parser.add_argument("--steps", type=int, default=20, help="volume part: sampling steps T (default 20)")
    parser.add_argument("--start-steps", default="0,5",
                        help="volume part: comma list of start steps K, 0 = full diffusion (default 0,5)")
    parser.add_argument("--overlap", type=float, default=0.25, help="volume part: block overlap (default 0.25)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice); on a shared "
                        "CPU one thread avoids OpenMP barrier stalls")


def parameter_counts() -> dict:
    from mrisr.networks.iqt_unet3d import PRESETS, IQTUNet3D, count_parameters

    counts = {name: count_parameters(IQTUNet3D(config)) for name, config in PRESETS.items()}
    return {"parameters": counts, "paper_reported": 15_200_000,
            "paper_preset_vs_reported": round(counts["paper"] / 15_200_000 - 1, 4)}


def _forward_seconds(network: torch.nn.Module, variant: str) -> dict:
    """Wall and process-CPU seconds of one forward of a 96³ block (= 27 patches of 32³, 2 channels)."""
    import torch

    x = torch.randn(1, 2, 96, 96, 96, generator=torch.Generator().manual_seed(0))
    network, x = network.to(memory_format=torch.channels_last_3d), x.to(memory_format=torch.channels_last_3d)
    layout = PaddedPatchLayout(3) if variant.startswith("patches") else None
    precision = torch.autocast("cpu", dtype=torch.bfloat16, enabled=variant.endswith("bf16"))
    with torch.inference_mode(), precision:
        network(x, torch.ones(1), layout)  # warm-up: one-off kernel generation
        wall, cpu = time.perf_counter(), time.process_time()
        network(x, torch.ones(1), layout)
    return {"seconds": round(time.perf_counter() - wall, 2), "cpu_seconds": round(time.process_time() - cpu, 2)}


def forward_timings(preset: str, variants: list[str], progress: ProgressCallback) -> dict:
    import torch

    from mrisr.methods.diffusioniqt import precision_for
    from mrisr.networks.iqt_unet3d import PRESETS, IQTUNet3D, count_parameters

    torch.manual_seed(0)
    network = IQTUNet3D(PRESETS[preset]).eval()
    rows = {"preset": preset, "parameters": count_parameters(network), "input": [27, 2, 32, 32, 32],
            "variants": "patches = the public code's per-conv pad/unfold of 27 patches; block = assembled block",
            "cpu_bf16_native": precision_for("cpu") is not None, "public_code_seconds": 102.0}
    for i, variant in enumerate(variants):
        progress(ProgressEvent("forward", i, len(variants), variant))
        if variant.endswith("bf16") and not rows["cpu_bf16_native"]:
            rows[variant] = "skipped: no native bf16 on this CPU"
            continue
        rows[variant] = _forward_seconds(network, variant)
        rows[variant]["speed_up_vs_public"] = round(102.0 / rows[variant]["seconds"], 2)
    if "patches-fp32" in rows and "block-fp32" in rows:
        ratio = rows["patches-fp32"]["cpu_seconds"] / rows["block-fp32"]["cpu_seconds"]
        rows["block_vs_patches_cpu_ratio"] = round(ratio, 2)
    return rows


def _volume_run(preset: str, steps: int, start_step: int, overlap: float, threads: int | None) -> dict:
    """One whole-volume run (in its own process): MNI152 T1 → 5 mm axial slices → DiffusionIQT."""
    import SimpleITK as sitk
    import torch

    from mrisr.simulation.degradation import PRESETS as DEGRADATIONS, degrade
    from mrisr.imaging.foreground import foreground_mask
    from mrisr.imaging.geometry import Grid, resample
    from mrisr.methods import MethodInput, RunSettings
    from mrisr.methods.diffusioniqt import DiffusionIQTMethod
    from mrisr.networks.iqt_unet3d import PRESETS, IQTUNet3D
    from mrisr.imaging.normalization import robust_scale
    from mrisr.pipeline import EnhanceOptions, output_grid
    from mrisr.progress import CancelToken
    from mrisr.registry import get_spec
    from mrisr.simulation.template import mni_image

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    started = time.perf_counter()
    lr = degrade(mni_image("t1"), DEGRADATIONS["thick5"])
    array = sitk.GetArrayFromImage(lr)
    mask = foreground_mask(array)
    scaled = Grid.of(lr).image_from_array(robust_scale(array, mask).apply(array))
    grid = output_grid(lr, EnhanceOptions())
    on_grid = resample(Grid.of(lr).image_from_array(mask.astype(np.float32)), grid, "nearest")
    out_mask = sitk.GetArrayFromImage(on_grid) > 0.5
    settings = RunSettings(steps=steps, start_step=start_step, patch_size=32, overlap=overlap, device="cpu", seed=0,
                           batch_size=None)
    method = DiffusionIQTMethod(get_spec("diffusioniqt"), IQTUNet3D(PRESETS[preset]))
    events: list[ProgressEvent] = []
    prepared = time.perf_counter()
    method.run(MethodInput(scaled, grid, out_mask, None, settings), events.append, CancelToken())
    seconds = time.perf_counter() - prepared
    return {"seconds": round(seconds, 1), "input_preparation_seconds": round(prepared - started, 1),
            "threads": torch.get_num_threads(), "output_size": list(grid.size), "network_evaluations": events[-1].total,
            "blocks_per_step": events[-1].total // max(1, (start_step or steps)),
            "peak_rss_mib": peak_rss_mib()}


def volume_timings(preset: str, steps: int, start_steps: list[int], overlap: float, threads: int | None,
                   progress: ProgressCallback) -> dict:
    rows = {"preset": preset, "weights": "random initialisation (timing only)",
            "input": "MNI152 T1, thick5 (5 mm axial)"}
    context = multiprocessing.get_context("spawn")
    for i, start_step in enumerate(start_steps):
        label = f"T={steps}" if not start_step else f"PDM K={start_step} of T={steps}"
        progress(ProgressEvent("volume", i, len(start_steps), label))
        with context.Pool(1) as pool:
            rows[label] = pool.apply(_volume_run, (preset, steps, start_step, overlap, threads))
    return rows


def run(args: argparse.Namespace, progress: ProgressCallback) -> dict:
    import torch

    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise InputError(f"unknown benchmark parts {unknown}: use a comma list of {', '.join(PARTS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    results: dict = {"threads": torch.get_num_threads(), "note": "measured on a shared CPU unless stated otherwise"}
    if "params" in parts:
        results["params"] = parameter_counts()
    if "forward" in parts:
        variants = [v.strip() for v in args.variants.split(",") if v.strip()]
        results["forward"] = forward_timings(args.forward_preset, variants, progress)
    if "volume" in parts:
        start_steps = [int(k) for k in args.start_steps.split(",") if k.strip()]
        results["volume"] = volume_timings(args.volume_preset, args.steps, start_steps, args.overlap, args.threads,
                                           progress)
    return results
