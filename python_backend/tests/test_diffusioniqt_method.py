"""The DiffusionIQT method: registry entry, whole-volume run, PDM mapping, warnings, progress, cancel."""

import logging

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from mrisr.errors import CancelledError, InputError
from mrisr.imaging.geometry import Grid, grid_with_spacing, resample
from mrisr.methods import MethodInput, RunSettings, build_method
from mrisr.methods.diffusioniqt import DiffusionIQTMethod, trajectory_warning
from mrisr.networks.iqt_unet3d import IQTUNet3D, IQTUNetConfig
from mrisr.pipeline import EnhanceOptions, enhance
from mrisr.progress import CancelToken
from mrisr.registry import get_spec

from conftest import make_image, phantom_array

TINY = IQTUNetConfig(init_channels=8, channels=(8, 8, 16), blocks=(0, 0, 0), attention=(False, True, False),
                     token_sizes=(2, 2, 2), heads=2, head_channels=4, groups=4, se_reduction=4, final_block=False)


@pytest.fixture(scope="module")
def inputs_for():
    hr_array = phantom_array((28, 36, 32)) / 250.0
    hr = make_image(hr_array)
    lr = resample(hr, grid_with_spacing(Grid.of(hr), [1.0, 1.0, 4.0]), "linear")

    def make(**settings) -> MethodInput:
        values = dict(steps=4, start_step=0, patch_size=8, overlap=0.25, device="cpu", seed=0, batch_size=2)
        values.update(settings)
        return MethodInput(lr, Grid.of(hr), hr_array > 0, None, RunSettings(**values))

    return make


def _method(card=None):
    torch.manual_seed(0)
    return DiffusionIQTMethod(get_spec("diffusioniqt"), IQTUNet3D(TINY), card=card)


def test_registry_entry():
    spec = get_spec("diffusioniqt")
    assert spec.kind == "diffusion" and spec.config["card"] == "diffusioniqt_cpu"
    assert (spec.steps.default, spec.start_step.default, spec.patch_size.default) == (20, 5, 32)
    assert spec.patch_size.multiple_of == 8 and spec.start_step.minimum == 0
    assert isinstance(build_method(spec), DiffusionIQTMethod)


def test_without_trained_weights_the_user_gets_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("MRISR_MODELS", str(tmp_path))
    monkeypatch.setattr("mrisr.io.model_store.shipped_folder", lambda: tmp_path / "no_shipped_weights")
    image = make_image(phantom_array((12, 16, 16)), spacing=(1.0, 1.0, 3.0))
    with pytest.raises(InputError, match="no trained weights"):
        enhance(image, EnhanceOptions(method="diffusioniqt"))


def test_run_is_seeded_and_reports_blocks_per_step(inputs_for):
    events = []
    first = _method().run(inputs_for(), events.append, CancelToken())
    again = _method().run(inputs_for(), lambda e: None, CancelToken())
    other = _method().run(inputs_for(seed=1), lambda e: None, CancelToken())
    assert first.shape == (28, 36, 32) and first.dtype == np.float32 and np.isfinite(first).all()
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).max() > 1e-3
    blocks = events[-1].total // 4
    assert events[-1].done == events[-1].total and blocks == 8  # 2×2×2 blocks of 24³ cover 28×36×32
    assert [e.message for e in events[:2]] == ["step 1/4, block 0/8", "step 1/4, block 2/8"]
    assert events[-1].message == "step 4/4, block 8/8"


def test_partial_diffusion_runs_k_steps_and_warns_for_unaligned_models(inputs_for, caplog):
    events = []
    with caplog.at_level(logging.WARNING, logger="mrisr.methods.diffusioniqt"):
        out = _method().run(inputs_for(start_step=2), events.append, CancelToken())
    assert events[-1].total == 2 * 8 and np.isfinite(out).all()
    assert "not trained with latent alignment" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mrisr.methods.diffusioniqt"):
        aligned = _method(card={"latent_alignment": {"start_time": 0.5}})
        aligned.run(inputs_for(start_step=2), lambda e: None, CancelToken())
    assert caplog.text == ""


def test_trajectory_warnings():
    aligned = {"latent_alignment": {"start_time": 0.25}}
    assert trajectory_warning({}, None) is None and trajectory_warning(aligned, 0.25) is None
    assert "Fig. 3b" in trajectory_warning({}, 0.25)
    assert "t_K = K / steps = 0.5" in trajectory_warning(aligned, 0.5)
    assert "outside its training" in trajectory_warning(aligned, None)


def test_start_step_beyond_steps_and_bad_patch_sizes_are_input_errors(inputs_for):
    with pytest.raises(InputError, match="start step 5 is out of range"):
        _method().run(inputs_for(start_step=5), lambda e: None, CancelToken())
    with pytest.raises(InputError, match="multiple of 8"):
        _method().run(inputs_for(patch_size=12), lambda e: None, CancelToken())


def test_cancel_stops_between_blocks(inputs_for):
    cancel = CancelToken()
    events = []

    def progress(event):
        events.append(event)
        if event.done >= 3:
            cancel.cancel()

    with pytest.raises(CancelledError):
        _method().run(inputs_for(), progress, cancel)
    assert events[-1].done == 4  # cancelled at the next block after done = 4 (batches of 2 blocks)


def test_empty_foreground_returns_the_condition(inputs_for):
    base = inputs_for()
    empty = MethodInput(base.lr, base.grid, np.zeros(base.mask.shape, bool), None, base.settings)
    out = _method().run(empty, lambda e: None, CancelToken())
    expected = sitk.GetArrayFromImage(resample(base.lr, base.grid, "bspline"))
    np.testing.assert_allclose(out, expected, atol=1e-6)
