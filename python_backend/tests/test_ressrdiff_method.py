"""The Res-SRDiff method on volumes: condition, planes, seeds, batching, cancel, missing weights."""

import dataclasses

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import make_image, phantom_array
from torch import nn

from mrisr.errors import CancelledError, InputError
from mrisr.imaging.foreground import foreground_mask
from mrisr.imaging.geometry import Grid, resample
from mrisr.methods import MethodInput, build_method
from mrisr.methods.ressrdiff import ResSRDiffMethod
from mrisr.networks.swin_unet2d import SwinUNet2d, SwinUNetConfig
from mrisr.imaging.normalization import robust_scale
from mrisr.pipeline import EnhanceOptions, output_grid, resolve_settings
from mrisr.progress import CancelToken
from mrisr.registry import get_spec

SPEC = get_spec("ressrdiff")
TINY = SwinUNetConfig(model_channels=8, channel_mult=(1, 2), num_res_blocks=1, swin_levels=(1,), swin_embed_dim=8,
                      num_heads=2, window_size=4, norm_groups=4)



class Recorder(nn.Module):
    """Wraps a network, recording (step indices, slice shape) of every call."""

    def __init__(self, network: nn.Module, pad_multiple: int = 8, cancel_after: tuple[int, CancelToken] | None = None):
        super().__init__()
        self.network, self.pad_multiple, self.cancel_after, self.calls = network, pad_multiple, cancel_after, []

    def forward(self, x_t, t, y):
        self.calls.append((t.tolist(), tuple(x_t.shape[-2:])))
        if self.cancel_after is not None and len(self.calls) == self.cancel_after[0]:
            self.cancel_after[1].cancel()
        return self.network(x_t, t, y)


class Oracle(nn.Module):
    """Predicts x̂ = y: the chain then returns the condition itself."""

    def forward(self, x_t, t, y):
        return y


def thick_image() -> sitk.Image:
    return make_image(phantom_array((6, 24, 20)), spacing=(1.0, 1.0, 4.0))


def method_input(image: sitk.Image, axes=None, **options) -> MethodInput:
    """What the pipeline hands a method (normalised LR, output grid, mask, settings)."""
    settings = resolve_settings(SPEC, EnhanceOptions(method="ressrdiff", device="cpu", **options))
    array = sitk.GetArrayFromImage(image)
    mask = foreground_mask(array)
    lr = Grid.of(image).image_from_array(robust_scale(array, mask).apply(array))
    grid = output_grid(image, EnhanceOptions())
    out_mask = sitk.GetArrayFromImage(resample(Grid.of(image).image_from_array(mask.astype(np.float32)), grid, "nearest")) > 0.5
    return MethodInput(lr, grid, out_mask, None, dataclasses.replace(settings, slice_axes=axes))


def run(network, inputs, cancel=None, events=None):
    progress = (lambda e: events.append(e)) if events is not None else (lambda e: None)
    return ResSRDiffMethod(SPEC, network).run(inputs, progress, cancel or CancelToken())


def tiny_network(seed=0):
    torch.manual_seed(seed)
    return SwinUNet2d(TINY)


def test_oracle_denoiser_returns_the_bspline_condition_on_two_fused_planes():
    inputs = method_input(thick_image())
    recorder = Recorder(Oracle())
    out = run(recorder, inputs)
    condition = sitk.GetArrayFromImage(resample(inputs.lr, inputs.grid, "bspline"))
    assert out.dtype == np.float32 and out.shape == inputs.grid.shape == (24, 24, 20)
    np.testing.assert_allclose(out, condition, atol=1e-5)
    # Thick axial input: coronal (z, x) and sagittal (z, y) slices, padded to multiples of 8, 4 steps each.
    assert {shape for _, shape in recorder.calls} == {(24, 24)}
    assert sorted({tuple(t) for t, _ in recorder.calls})[0][0] == 1 and max(max(t) for t, _ in recorder.calls) == 4


def test_tiny_network_is_deterministic_and_independent_of_batch_size():
    inputs = method_input(thick_image(), axes=(1,), seed=3, batch_size=1)
    first = run(tiny_network(), inputs)
    again = run(tiny_network(), dataclasses.replace(inputs, settings=dataclasses.replace(inputs.settings, batch_size=8)))
    np.testing.assert_allclose(first, again, atol=1e-5)  # same noise per slice; only float rounding differs
    other = run(tiny_network(), dataclasses.replace(inputs, settings=dataclasses.replace(inputs.settings, seed=4)))
    assert np.isfinite(first).all() and np.abs(first - other).max() > 1e-3


def test_steps_setting_and_range():
    recorder = Recorder(Oracle())
    run(recorder, method_input(thick_image(), axes=(0,), steps=2, batch_size=64))
    assert [t[0] for t, _ in recorder.calls] == [4, 1]
    with pytest.raises(InputError, match="steps 5"):
        method_input(thick_image(), steps=5)


def test_empty_slices_keep_the_condition_and_progress_is_reported():
    inputs = method_input(thick_image(), axes=(0,))
    mask = np.zeros_like(inputs.mask)
    mask[5:9] = True
    events = []
    recorder = Recorder(Oracle())
    run(recorder, dataclasses.replace(inputs, mask=mask), events=events)
    assert len(recorder.calls) == 4  # one batch of 4 slices, 4 steps
    assert [e.stage for e in events] == ["resample", "resample", "slices"] and events[-1].done == events[-1].total == 1


def test_cancel_between_sampling_steps():
    cancel = CancelToken()
    recorder = Recorder(Oracle(), cancel_after=(2, cancel))
    with pytest.raises(CancelledError):
        run(recorder, method_input(thick_image(), axes=(0,)), cancel=cancel)
    assert len(recorder.calls) == 2


def test_without_weights_the_method_asks_for_training(monkeypatch, tmp_path):
    monkeypatch.setenv("MRISR_MODELS", str(tmp_path))
    spec = dataclasses.replace(SPEC, config={**SPEC.config, "card": "ressrdiff_not_installed"})
    with pytest.raises(InputError, match="no trained weights for 'ressrdiff_not_installed'"):
        build_method(spec).run(method_input(thick_image()), lambda e: None, CancelToken())


def test_registry_entry():
    assert SPEC.kind == "diffusion" and SPEC.implementation == "ressrdiff:ResSRDiffMethod"
    assert (SPEC.steps.default, SPEC.steps.minimum, SPEC.steps.maximum) == (4, 1, 4)
    assert SPEC.config["card"] == "ressrdiff_cpu"
