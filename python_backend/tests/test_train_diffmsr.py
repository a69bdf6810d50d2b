"""DiffMSR's training recipe: stage 1 then stage 2 through the Trainer on a tiny multi-contrast pool,
the card loads through the method, PE stays frozen in stage 2, and both stages' losses fall on an
over-fit batch."""

import dataclasses
import json
from functools import lru_cache

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from mrisr.evaluation.benchmarks.diffmsr import t2_like
from mrisr.simulation.degradation import DegradationConfig, degrade
from mrisr.training.diffmsr_losses import stage2_loss
from mrisr.errors import InputError
from mrisr.imaging.geometry import Grid, grid_with_spacing, resample
from mrisr.methods import MethodInput, RunSettings
from mrisr.methods.diffmsr import DiffMSRMethod
from mrisr.io.model_store import load_card, load_state_dict
from mrisr.networks.diffmsr import PRESETS, DiffMSRConfig, PriorConfig
from mrisr.networks.plwformer import PLWformerConfig
from mrisr.progress import CancelToken
from mrisr.registry import get_spec
from mrisr.training.tasks.diffmsr import FROZEN, DiffMSRTask
from mrisr.training.tasks.slices import SliceData
from mrisr.training.trainer import TrainConfig, Trainer

CROP = 32
TINY = DiffMSRConfig(prior=PriorConfig(latent_channels=8, features=16, res_blocks=1, downscale=8), denoiser_layers=3,
                     decoder=PLWformerConfig(channels=16, layers=(1, 1), heads=2, window=8, catl_blocks=1,
                                             catl_locality_init=4.0, prior_dim=32, ffn_expansion=2.0,
                                             upsampler="subpixel"))


@lru_cache(maxsize=1)
def mni_pair() -> dict[str, np.ndarray]:
    """A 2 mm MNI pair: T2-like target, its 6 mm thick-slice condition, the T1 reference, the mask."""
    from mrisr.simulation.template import mni_image

    grid = grid_with_spacing(Grid.of(mni_image("t1")), (2.0, 2.0, 2.0))
    t1, gm, wm = (sitk.GetArrayFromImage(resample(mni_image(k), grid, "linear")) for k in ("t1", "gm", "wm"))
    t1 = t1 / t1.max()
    target = grid.image_from_array(t2_like(t1, gm, wm))
    lr = degrade(target, DegradationConfig(slice_thickness=6.0))
    condition = sitk.GetArrayFromImage(resample(lr, grid, "bspline"))
    hr = sitk.GetArrayFromImage(target)
    return {"hr": hr, "condition": condition, "reference": t1, "mask": hr > 0.05}


@pytest.fixture
def tiny_pool(tmp_path, monkeypatch):
    """A pair pool of one training and one validation pair in a temporary cache, and a `tiny` preset."""
    monkeypatch.setenv("MRISR_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(PRESETS, "tiny", TINY)
    folder = tmp_path / "cache" / "pairs"
    folder.mkdir(parents=True)
    for name in ("train_00000", "val_00000"):
        np.savez(folder / f"{name}.npz", **mni_pair())
    return tmp_path


def task(stage: int, init=None) -> DiffMSRTask:
    out = DiffMSRTask("tiny", batch_size=4, pairs=1, stage=stage, init=init, crop=CROP)
    out.data = SliceData(pairs=1, batch_size=4, crop=CROP, validation_pairs=1, validation_slices=4)
    return out


def train(out, stage: int, steps: int, init=None):
    config = TrainConfig(steps=steps, out=out, warmup_steps=2, checkpoint_every=100, validate_every=100,
                         learning_rate=2e-3)
    return Trainer(task(stage, init), config).run()


def method_input(shape=(6, 40, 40)) -> MethodInput:
    """A small volume with an in-plane k-space ×4 LR of the T2-like target and the T1 as reference."""
    data = mni_pair()
    z, y, x = (np.asarray(data["hr"].shape) - shape) // 2
    region = (slice(z, z + shape[0]), slice(y, y + shape[1]), slice(x, x + shape[2]))
    target, reference = (sitk.GetImageFromArray(np.ascontiguousarray(data[k][region])) for k in ("hr", "reference"))
    lr = degrade(target, DegradationConfig(kspace_factor=4))
    settings = RunSettings(steps=None, start_step=None, patch_size=None, overlap=0.25, device="cpu", seed=0,
                           batch_size=None)
    return MethodInput(lr=lr, grid=Grid.of(target), mask=np.ones(shape, bool), reference=reference, settings=settings)


def test_two_stage_run_writes_a_card_the_method_loads(tiny_pool, monkeypatch):
    stage1 = train(tiny_pool / "s1", 1, 4)
    assert stage1.name == "diffmsr_tiny_stage1.json"
    with pytest.raises(InputError, match="needs --init"):
        task(2).build_network()
    stage2 = train(tiny_pool / "s2", 2, 4, init=str(tiny_pool / "s1"))
    card = json.loads(stage2.read_text())
    assert (card["name"], card["method"], card["stage"]) == ("diffmsr_tiny", "diffmsr", 2)
    assert card["diffusion"]["num_train_steps"] == 4 and DiffMSRConfig.from_dict(card["network"]) == TINY
    assert {"psnr", "psnr_bspline", "psnr_pe_prior"} <= set(card["validation"])
    with pytest.raises(InputError, match="not a stage-1"):
        task(2, init=str(stage2)).build_network()

    first = load_state_dict({**json.loads(stage1.read_text()), "_folder": str(stage1.parent)})
    second = load_state_dict({**card, "_folder": str(stage2.parent)})
    for key, value in first.items():  # PE is frozen in stage 2; CE and the denoiser only train there
        if key.startswith("prior_extractor"):
            torch.testing.assert_close(second[key], value, rtol=0, atol=0)
    assert not torch.equal(second["condition_extractor.mlp.0.weight"], first["condition_extractor.mlp.0.weight"])

    monkeypatch.setenv("MRISR_MODELS", str(stage2.parent))
    spec = get_spec("diffmsr")
    spec = dataclasses.replace(spec, config={**spec.config, "card": "diffmsr_tiny", "register_reference": False})
    assert load_card("diffmsr_tiny")["sha256"] == card["sha256"]
    inputs = method_input()
    out = DiffMSRMethod(spec).run(inputs, lambda event: None, CancelToken())
    again = DiffMSRMethod(spec).run(inputs, lambda event: None, CancelToken())
    assert out.shape == (6, 40, 40) and out.dtype == np.float32 and np.isfinite(out).all()
    np.testing.assert_array_equal(out, again)


def overfit(network, recipe: DiffMSRTask, steps: int) -> list[float]:
    """`steps` Adam steps of the recipe's loss on one fixed batch; the loss history."""
    optimiser = torch.optim.Adam([p for p in network.parameters() if p.requires_grad], lr=2e-3)
    generator, history = torch.Generator().manual_seed(0), []
    for _ in range(steps):
        loss = recipe.loss(network, np.random.default_rng(3), generator, "cpu")
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        history.append(float(loss.detach()))
    return history


def test_both_stage_losses_fall_on_an_overfit_batch(tiny_pool):
    torch.manual_seed(0)
    recipe = task(1)
    network = recipe.build_network()
    assert not any(p.requires_grad for n, p in network.named_parameters() if n.startswith(FROZEN[1]))
    first = overfit(network, recipe, 60)
    assert np.mean(first[-5:]) < 0.5 * np.mean(first[:5])

    recipe.stage = 2  # as the stage-2 run: PE frozen, CE and the denoiser trained
    for name, parameter in network.named_parameters():
        parameter.requires_grad_(not name.startswith(FROZEN[2]))
    batch = recipe._batch(recipe.data.batch(np.random.default_rng(3), "cpu"))
    before = stage2_loss(network, batch, recipe.lr_shape, torch.Generator().manual_seed(1))[1]
    second = overfit(network, recipe, 40)
    after = stage2_loss(network, batch, recipe.lr_shape, torch.Generator().manual_seed(1))[1]
    assert np.mean(second[-5:]) < 0.6 * np.mean(second[:5])
    assert after["diffusion"] < 0.5 * before["diffusion"] and after["image"] < before["image"]
