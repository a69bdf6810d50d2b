import dataclasses
import logging

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from mrisr.errors import CancelledError, InputError
from mrisr.imaging.foreground import foreground_mask
from mrisr.imaging.geometry import Grid, resample
from mrisr.methods import MethodInput, RunSettings
from mrisr.methods.sr3pdm import SR3PDMMethod, check_steps, training_warning
from mrisr.networks.sr3_unet2d import SR3UNet2d, SR3UNet2dConfig
from mrisr.imaging.normalization import robust_scale
from mrisr.pipeline import EnhanceOptions, output_grid
from mrisr.progress import CancelToken
from mrisr.registry import get_spec

TINY = SR3UNet2dConfig(base_channels=8, channel_multipliers=(1, 2), res_blocks=1, attention_levels=(),
                       norm_groups=4, dropout=0.0)


def _inputs(image, **settings):
    array = sitk.GetArrayFromImage(image)
    mask = foreground_mask(array)
    lr = Grid.of(image).image_from_array(robust_scale(array, mask).apply(array))
    grid = output_grid(image, EnhanceOptions())
    out_mask = sitk.GetArrayFromImage(resample(Grid.of(image).image_from_array(mask.astype(np.float32)), grid, "nearest")) > 0.5
    base = dict(steps=3, start_step=3, patch_size=None, overlap=0.0, device="cpu", seed=0, batch_size=4)
    return MethodInput(lr=lr, grid=grid, mask=out_mask, reference=None, settings=RunSettings(**{**base, **settings}))


def _bspline(inputs):
    return sitk.GetArrayFromImage(resample(inputs.lr, inputs.grid, "bspline"))


class Echo(torch.nn.Module):
    """An x₀-network that returns its condition: the sampler must then return the B-spline input."""

    config = dataclasses.replace(TINY, prediction="x0")

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, x_t, condition, level):
        self.calls.append(tuple(x_t.shape))
        return condition



@pytest.fixture
def small(oblique_thick):
    image = oblique_thick[:, :, 2:6]  # 4 thick slices keep the output grid small (40×44×22)
    return image


def test_echo_network_reproduces_bspline_on_default_planes(small):
    inputs = _inputs(small)
    echo = Echo()
    out = SR3PDMMethod(get_spec("sr3pdm"), network=echo).run(inputs, lambda e: None, CancelToken())
    assert out.shape == inputs.grid.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, np.clip(_bspline(inputs), -0.25, 1.25), atol=1e-5)
    assert inputs.grid.shape == (22, 44, 40)
    assert {s[2:] for s in echo.calls} == {(22, 40), (22, 44)}  # coronal + sagittal: the planes holding z
    slices = [int(inputs.mask.any(axis=(0, 2)).sum()), int(inputs.mask.any(axis=(0, 1)).sum())]
    assert len(echo.calls) == 3 * sum(-(-n // 4) for n in slices)  # K = 3 steps per batch of 4 foreground slices


def test_sampling_plan_uses_ancestral_steps_for_k_and_ddim_below(small):
    method = SR3PDMMethod(get_spec("sr3pdm"), network=Echo())
    full = method.sampling_plan(_inputs(small, steps=25, start_step=25))
    ddim = method.sampling_plan(_inputs(small, steps=5, start_step=25))
    assert (full.eta, full.steps, full.start_step) == (1.0, 25, 25)
    assert (ddim.eta, ddim.steps, ddim.clip) == (0.0, 5, 1.5)


@pytest.fixture
def tiny_network():
    torch.manual_seed(0)
    return SR3UNet2d(TINY).eval()


def test_random_network_output_seeds_and_empty_slices(small, tiny_network):
    method = SR3PDMMethod(get_spec("sr3pdm"), network=tiny_network)
    inputs = _inputs(small)
    events = []
    a = method.run(inputs, events.append, CancelToken())
    b = method.run(inputs, lambda e: None, CancelToken())
    c = method.run(dataclasses.replace(inputs, settings=dataclasses.replace(inputs.settings, seed=1)), lambda e: None, CancelToken())
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-3
    stages = {e.stage for e in events}
    assert {"slices", "denoise"} <= stages
    assert [e.done for e in events if e.stage == "denoise"][:3] == [1, 2, 3]


@pytest.mark.parametrize("steps", [2, 4])  # 2 of K = 4: DDIM (η = 0); 4 of 4: ancestral (η = 1, noise every step)
def test_result_does_not_depend_on_batch_size_and_empty_slices_keep_the_input(small, tiny_network, steps):
    method = SR3PDMMethod(get_spec("sr3pdm"), network=tiny_network)
    runs = [method.run(_inputs(small, steps=steps, start_step=4, batch_size=b, slice_axes=(1,)), lambda e: None,
                       CancelToken()) for b in (1, 5)]
    np.testing.assert_allclose(runs[0], runs[1], atol=1e-5)
    inputs = _inputs(small, slice_axes=(1,))
    empty = ~inputs.mask.any(axis=(0, 2))
    assert empty.any() and not empty.all()
    np.testing.assert_allclose(runs[0][:, empty], _bspline(inputs)[:, empty], atol=1e-6)
    assert np.abs(runs[0][:, ~empty] - _bspline(inputs)[:, ~empty]).max() > 1e-2


def test_cancel_between_steps(small, tiny_network):
    token = CancelToken()

    def progress(event):
        if event.stage == "denoise":
            token.cancel()

    with pytest.raises(CancelledError):
        SR3PDMMethod(get_spec("sr3pdm"), network=tiny_network).run(_inputs(small), progress, token)


def test_steps_above_start_step_rejected_before_loading(small, tmp_path, monkeypatch):
    monkeypatch.setenv("MRISR_MODELS", str(tmp_path))
    spec = get_spec("sr3pdm")
    method = SR3PDMMethod(dataclasses.replace(spec, config={**spec.config, "card": "sr3pdm_not_installed"}))
    with pytest.raises(InputError, match="steps 10 exceeds start step 5"):
        method.run(_inputs(small, steps=10, start_step=5), lambda e: None, CancelToken())
    with pytest.raises(InputError, match="no trained weights"):
        method.run(_inputs(small, steps=5, start_step=5), lambda e: None, CancelToken())
    with pytest.raises(InputError, match="start step 120"):
        check_steps(5, 120, 100)


def test_warns_for_models_without_latent_alignment(small, caplog):
    spec = get_spec("sr3pdm")
    plain = dataclasses.replace(spec, config={**spec.config, "latent_alignment": False})
    with caplog.at_level(logging.WARNING, logger="mrisr.methods.sr3pdm"):
        SR3PDMMethod(plain, network=Echo()).run(_inputs(small, steps=1, start_step=1), lambda e: None, CancelToken())
    assert "not trained with latent alignment" in caplog.text
    assert training_warning({"T_train": 100, "latent_alignment": False}, 100) is None  # full SR3 is fine
    assert "K = 50 but runs with K = 25" in training_warning(
        {"T_train": 100, "latent_alignment": True, "trained_start_step": 50}, 25)
    assert "steps 1..25 only" in training_warning({"T_train": 100, "trained_start_step": 25}, 50)
    assert training_warning({"T_train": 100, "latent_alignment": True, "trained_start_step": 25}, 25) is None


def test_pipeline_loads_a_model_card_and_warns_without_alignment(small, tmp_path, monkeypatch, caplog):
    from mrisr.io.model_store import save_model
    from mrisr.pipeline import enhance

    torch.manual_seed(0)
    card = {"method": "sr3pdm", "preset": "test", "network": TINY.to_dict(),
            "diffusion": {"T_train": 100, "beta_schedule": "linear", "latent_alignment": False}}
    save_model(SR3UNet2d(TINY).state_dict(), card, tmp_path, get_spec("sr3pdm").config["card"])
    monkeypatch.setenv("MRISR_MODELS", str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="mrisr.methods.sr3pdm"):
        result = enhance(small, EnhanceOptions(method="sr3pdm", steps=2, start_step=2, batch_size=16))
    assert "not trained with latent alignment" in caplog.text
    image = sitk.GetArrayFromImage(result.image)
    assert result.image.GetSize() == output_grid(small, EnhanceOptions()).size and image.dtype == np.float32
    assert np.isfinite(image).all()
