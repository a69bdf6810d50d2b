"""DiffusionIQT training recipe: the card of a short run loads through the method and enhances a volume;
a few optimiser steps on one phantom lower the loss (tiny network, fake pair cache, seconds of CPU)."""

import logging

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter1d

from mrisr.imaging.geometry import Grid, grid_with_spacing, resample
from mrisr.methods import MethodInput, RunSettings, build_method
from mrisr.networks.iqt_unet3d import IQTUNetConfig
from mrisr.progress import CancelToken
from mrisr.registry import get_spec
from mrisr.training.tasks.diffusioniqt import DiffusionIQTTask, DiffusionRecipe, sample_blocks
from mrisr.training.trainer import TrainConfig, Trainer

from conftest import make_image, phantom_array

TINY = IQTUNetConfig(init_channels=8, channels=(8, 8, 16), blocks=(0, 0, 0), attention=(False, True, False),
                     token_sizes=(2, 2, 2), heads=2, head_channels=4, groups=4, se_reduction=4, final_block=False)
PATCH = 8  # TINY.patch_multiple: blocks of 24³


@pytest.fixture(scope="module")
def pair_folder(tmp_path_factory):
    """A pair cache holding one training and one validation phantom (z-blurred condition, as thick slices)."""
    folder = tmp_path_factory.mktemp("pairs")
    for name, seed in (("train_00000", 0), ("val_00000", 1)):
        hr = phantom_array((32, 32, 32), seed=seed) / 250.0
        condition = gaussian_filter1d(hr, 2.0, axis=0)
        np.savez(folder / f"{name}.npz", hr=hr.astype(np.float16), condition=condition.astype(np.float16),
                 reference=hr.astype(np.float16), mask=hr > 0)
    return folder


def _task(folder, batch_size=1):
    return DiffusionIQTTask("cpu", batch_size, 1, PATCH, config=TINY, folder=folder, validation_pairs=1)


def _mean_loss(task, network, draws=4):
    rng, generator = np.random.default_rng(123), torch.Generator().manual_seed(123)
    with torch.no_grad():
        return float(np.mean([float(task.loss(network, rng, generator, "cpu")) for _ in range(draws)]))


def test_a_few_steps_lower_the_loss(pair_folder):
    task = _task(pair_folder, batch_size=2)
    torch.manual_seed(0)
    network = task.build_network()
    before = _mean_loss(task, network)
    optimiser = torch.optim.Adam(network.parameters(), lr=3e-3)
    rng, generator = np.random.default_rng(0), torch.Generator().manual_seed(0)
    for _ in range(12):
        loss = task.loss(network, rng, generator, "cpu")
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    after = _mean_loss(task, network)
    assert before > 0.1  # an untrained x̂ ≈ 0 is far from images in [−1, 1]
    assert after < 0.3 * before, (before, after)


def test_pdm_block_sampling_starts_from_the_diffused_condition():
    """With a network that returns the condition channel, the aligned PDM chain ends exactly on it."""
    condition = torch.rand(2, 1, 24, 24, 24) * 2 - 1

    def echo(x, noise_level):
        return x[:, 1:2]

    out = sample_blocks(echo, condition, DiffusionRecipe(steps=8, start_step=2), torch.Generator().manual_seed(0))
    assert (out - condition).abs().max() < 5e-3  # α_0 < 1 and e^(λ_t1 − λ_0) > 0 leave ~1e-3


def test_card_of_a_short_run_loads_through_the_method(pair_folder, tmp_path, monkeypatch, caplog):
    card_path = Trainer(_task(pair_folder), TrainConfig(steps=3, out=tmp_path, warmup_steps=1, validate_every=3,
                                                        checkpoint_every=3)).run()
    assert card_path == tmp_path / "diffusioniqt_cpu.json"
    monkeypatch.setenv("MRISR_MODELS", str(tmp_path))
    method = build_method(get_spec("diffusioniqt"))
    card = method._model("cpu")[1]
    assert card["network"] == TINY.to_dict() and card["patch_size"] == PATCH and card["block_size"] == 3 * PATCH
    assert card["latent_alignment"]["start_time"] == 0.25 and card["diffusion"]["start_step"] == 5
    assert set(card["validation"]) == {"step", "psnr", "psnr_bspline"} and card["validation"]["step"] == 3

    hr_array = phantom_array((28, 36, 32)) / 250.0
    hr = make_image(hr_array)
    lr = resample(hr, grid_with_spacing(Grid.of(hr), [1.0, 1.0, 4.0]), "linear")
    settings = RunSettings(steps=4, start_step=1, patch_size=PATCH, overlap=0.25, device="cpu", seed=0,
                           batch_size=2, slice_axes=None)
    with caplog.at_level(logging.WARNING):
        out = method.run(MethodInput(lr, Grid.of(hr), hr_array > 0, None, settings), lambda event: None,
                         CancelToken())
    assert out.shape == hr_array.shape and out.dtype == np.float32 and np.isfinite(out).all()
    assert not caplog.records  # K / steps = 1/4 = the card's t_K: no trajectory warning
