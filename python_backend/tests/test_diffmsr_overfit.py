"""Over-fit sanity of DiffMSR on a synthetic multi-contrast pair: the MNI T1 is the reference and a
T2-like contrast made from the MNI tissue maps is the target, degraded in-plane by k-space ×4."""

from functools import lru_cache

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from mrisr.simulation import kspace
from mrisr.evaluation.benchmarks.diffmsr import t2_like
from mrisr.simulation.degradation import DegradationConfig, degrade
from mrisr.diffusion.latent_ddpm import LatentDiffusionConfig, sample_prior
from mrisr.training.diffmsr_losses import stage1_loss, stage2_loss
from mrisr.imaging.geometry import Grid, grid_with_spacing, resample
from mrisr.evaluation.metrics import psnr
from mrisr.networks.diffmsr import DiffMSRConfig, DiffMSRNetwork, PriorConfig
from mrisr.networks.plwformer import PLWformerConfig
from mrisr.simulation.template import mni_image



@lru_cache(maxsize=4)
def slices(count: int, side: int, contrast: str = "t2", first: int = 25, last: int = 40) -> dict[str, np.ndarray]:
    """Axial slices (count, side, side) at 3 mm: HR target, its k-space ×4 LR, the B-spline condition, the T1.

    contrast "t2": the T2-like contrast from the tissue maps; "t1^1.5": a contrast that is a pointwise
    function of the reference, so all its detail is in the reference.
    """
    grid = grid_with_spacing(Grid.of(mni_image("t1")), (3.0, 3.0, 3.0))
    t1, gm, wm = (sitk.GetArrayFromImage(resample(mni_image(k), grid, "linear")) for k in ("t1", "gm", "wm"))
    t1 = t1 / t1.max()
    z = np.linspace(first, last, count).round().astype(int)
    y0, x0 = (t1.shape[1] - side) // 2, (t1.shape[2] - side) // 2
    crop = (z, slice(y0, y0 + side), slice(x0, x0 + side))
    target = np.ascontiguousarray((t2_like(t1, gm, wm) if contrast == "t2" else t1**1.5)[crop])
    image = sitk.GetImageFromArray(target)
    lr = degrade(image, DegradationConfig(kspace_factor=4))
    condition = sitk.GetArrayFromImage(resample(lr, Grid.of(image), "bspline"))
    return {"target": target, "lr": sitk.GetArrayFromImage(lr), "condition": condition,
            "reference": np.ascontiguousarray(t1[crop])}


def tiny(use_reference: bool) -> DiffMSRConfig:
    return DiffMSRConfig(prior=PriorConfig(latent_channels=8, features=16, res_blocks=1, downscale=8),
                         denoiser_layers=3,
                         decoder=PLWformerConfig(channels=16, layers=(1, 1), heads=2, window=8, catl_blocks=1,
                                                 catl_locality_init=4.0, prior_dim=32, ffn_expansion=2.0,
                                                 upsampler="subpixel", use_reference=use_reference))


def batch_of(data: dict[str, np.ndarray], index=slice(None)) -> dict[str, torch.Tensor]:
    keys = ("target", "condition", "reference")
    return {k: torch.from_numpy(np.ascontiguousarray(data[k][index]))[:, None] for k in keys}


def subset(data: dict[str, np.ndarray], index: np.ndarray) -> dict[str, np.ndarray]:
    return {k: np.ascontiguousarray(v[index]) for k, v in data.items()}


def train(data: dict[str, np.ndarray], use_reference: bool, stage1: int, stage2: int,
          batch_size: int = 8) -> tuple[DiffMSRNetwork, list]:
    """Stage 1 (PE + PLWformer), then stage 2 (CE + denoiser + PLWformer) on random batches of the
    slices (all of them when there are at most `batch_size`); returns the image-loss history."""
    torch.manual_seed(0)
    network, lr_shape, rng = DiffMSRNetwork(tiny(use_reference)), data["lr"].shape[1:], np.random.default_rng(0)
    count = len(data["target"])

    def batch() -> dict[str, torch.Tensor]:
        return batch_of(data, rng.choice(count, batch_size, replace=False) if count > batch_size else slice(None))

    history = []
    first = [p for n, p in network.named_parameters() if n.startswith(("prior_extractor", "decoder"))]
    optimiser = torch.optim.Adam(first, lr=2e-3)
    for _ in range(stage1):
        loss, parts = stage1_loss(network, batch(), lr_shape)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        history.append(parts["image"])
    second = [p for n, p in network.named_parameters() if not n.startswith("prior_extractor")]
    optimiser, generator = torch.optim.Adam(second, lr=2e-3), torch.Generator().manual_seed(0)
    for _ in range(stage2):
        loss, parts = stage2_loss(network, batch(), lr_shape, generator)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        history.append(parts["image"])
    return network.eval(), history


@torch.no_grad()
def infer(network: DiffMSRNetwork, data: dict[str, np.ndarray]) -> np.ndarray:
    """§3.4 inference (CE → 4 latent steps from noise → PLWformer) and k-space data consistency with the LR."""
    batch = batch_of(data)
    condition = network.extract_condition(batch["condition"])
    generators = [torch.Generator().manual_seed(i) for i in range(len(data["target"]))]
    prior = sample_prior(network, condition, LatentDiffusionConfig(), 4, generators)
    out = network.decode(batch["condition"], batch["reference"], prior)[:, 0]
    return kspace.replace_measured(out, torch.from_numpy(data["lr"])).numpy()


def stage_one_history() -> list:
    return train(slices(2, 48), use_reference=True, stage1=60, stage2=0)[1]


def test_stage_one_overfits_a_few_slices():
    """Run in a fresh interpreter: after some earlier tests of the suite in the same process, about one
    full-suite run in four saw NaN from the very first loss (data finite, torch seeded; never in isolation,
    not reproduced with diagnostics on). The cause is not found yet; this keeps the check meaningful."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); import test_diffmsr_overfit as t; "
            "print(json.dumps(t.stage_one_history()))")
    answer = subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent)], capture_output=True,
                            text=True, timeout=600)
    assert answer.returncode == 0, answer.stderr[-2000:]
    history = json.loads(answer.stdout.strip().splitlines()[-1])
    assert np.all(np.isfinite(history)) and np.mean(history[-5:]) < 0.5 * np.mean(history[:3])


@pytest.mark.slow
def test_two_stage_overfit_beats_bspline_and_the_reference_helps(record_property):
    """Stage 1 + stage 2, then inference from noise, on the T2-like target. Measured (4 slices of 64²,
    400 + 200 iterations): B-spline 21.1 dB, with reference 28.4 dB, without 27.4 dB. (With the public
    code's flat CATL bias init the two variants were within ±0.5 dB at this budget.)"""
    data = slices(4, 64)
    bspline = psnr(data["condition"], data["target"])
    scores = {}
    for use_reference in (True, False):
        network, history = train(data, use_reference, stage1=400, stage2=200)
        scores[use_reference] = psnr(infer(network, data), data["target"])
        record_property(f"psnr_{'with' if use_reference else 'without'}_reference", round(scores[use_reference], 2))
        assert scores[use_reference] > bspline + 3.0
        assert np.mean(history[-10:]) < 0.25 * np.mean(history[:3])
    assert scores[True] > scores[False] + 0.3


@pytest.mark.slow
def test_the_reference_carries_detail_to_held_out_slices(record_property):
    """24 training and 12 held-out slices of a contrast whose detail is all in the reference: only the
    variant with reference generalises. Measured (300 + 100 iterations): B-spline 20.3 dB, with
    reference 25.1 dB, without 22.0 dB on the held-out slices (with a flat CATL bias init: 22.1 dB)."""
    data = slices(36, 64, "t1^1.5", 14, 49)
    held_out = np.arange(1, 36, 3)
    train_data, test_data = subset(data, np.setdiff1d(np.arange(36), held_out)), subset(data, held_out)
    scores = {}
    for use_reference in (True, False):
        network, _ = train(train_data, use_reference, stage1=300, stage2=100)
        scores[use_reference] = psnr(infer(network, test_data), test_data["target"])
        name = f"held_out_psnr_{'with' if use_reference else 'without'}_reference"
        record_property(name, round(scores[use_reference], 2))
    assert scores[True] > scores[False] + 1.5
    assert scores[True] > psnr(test_data["condition"], test_data["target"]) + 3.0
