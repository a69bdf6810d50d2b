import numpy as np
import pytest

from mrisr.errors import CancelledError
from mrisr.inference.slicewise import SlicePlan, default_axes, enhance_slicewise
from mrisr.progress import CancelToken


def identity(stack, reference, seeds):
    return stack


def test_identity_model_reproduces_volume_with_padding_and_fusion():
    volume = np.random.default_rng(0).normal(size=(13, 17, 22)).astype(np.float32)
    out = enhance_slicewise(identity, volume, SlicePlan(axes=(1, 2), batch_size=5, pad_multiple=8))
    np.testing.assert_allclose(out, volume, atol=1e-6)


def test_models_see_padded_slices_and_one_seed_per_slice():
    seen = []

    def model(stack, reference, seeds):
        seen.append((stack.shape, list(seeds)))
        return stack + 1

    volume = np.zeros((5, 10, 12), np.float32)
    mask = np.zeros(volume.shape, bool)
    mask[1:3] = True
    out = enhance_slicewise(model, volume, SlicePlan(axes=(0,), batch_size=4, pad_multiple=8), mask=mask, seed=7)
    assert seen == [((2, 16, 16), [8, 9])]
    assert np.all(out[1:3] == 1) and np.all(out[[0, 3, 4]] == 0)  # empty slices keep the condition


def test_seeds_do_not_depend_on_batch_size():
    def noisy(stack, reference, seeds):
        return np.stack([s + np.random.default_rng(k).normal(size=s.shape) for s, k in zip(stack, seeds)])

    volume = np.zeros((6, 8, 8), np.float32)
    a = enhance_slicewise(noisy, volume, SlicePlan(axes=(0, 1), batch_size=1))
    b = enhance_slicewise(noisy, volume, SlicePlan(axes=(0, 1), batch_size=4))
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_reference_slices_follow_the_condition():
    def use_reference(stack, reference, seeds):
        return reference

    volume = np.zeros((4, 6, 6), np.float32)
    reference = np.random.default_rng(1).normal(size=volume.shape).astype(np.float32)
    out = enhance_slicewise(use_reference, volume, SlicePlan(axes=(2,)), reference=reference)
    np.testing.assert_allclose(out, reference)


@pytest.mark.parametrize("spacing, axes", [((1, 1, 5), (1, 2)), ((5, 1, 1), (0, 1)), ((1, 1, 1), (0,)),
                                            ((2, 2, 2), (0,)), ((4, 4, 1), (0,)), ((1, 4, 4), (2,))])
def test_default_axes_contain_the_low_resolution_axis(spacing, axes):
    assert default_axes(spacing, (1, 1, 1) if spacing != (2, 2, 2) else (1, 1, 1)) == axes


def test_cancel_between_batches():
    token = CancelToken()

    def model(stack, reference, seeds):
        token.cancel()
        return stack

    with pytest.raises(CancelledError):
        enhance_slicewise(model, np.zeros((4, 4, 4), np.float32), SlicePlan(axes=(0,), batch_size=1), cancel=token)


def test_multi_channel_output_fills_background_and_averages_planes():
    """A (B, C, H, W) model: channel c of a foreground slice is (c + 1) × the slice; slices without
    foreground take the given background; planes are averaged per channel."""
    volume = np.random.default_rng(3).uniform(size=(6, 9, 10)).astype(np.float32)
    mask = np.zeros(volume.shape, bool)
    mask[1:5, 2:7, 3:8] = True
    background = np.stack([np.full(volume.shape, 7.0, np.float32), np.zeros(volume.shape, np.float32)])

    def two_channels(stack, reference, seeds):
        assert stack.shape[1] % 4 == 0 and stack.shape[2] % 4 == 0
        return np.stack([stack, 2 * stack], axis=1)

    out = enhance_slicewise(two_channels, volume, SlicePlan((0, 2), 3, pad_multiple=4), mask, background=background)
    assert out.shape == (2, 6, 9, 10) and out.dtype == np.float32
    inside = np.zeros(volume.shape, bool)
    inside[1:5, :, :] = True  # axis 0 slices with foreground
    inside_x = np.zeros(volume.shape, bool)
    inside_x[:, :, 3:8] = True  # axis 2 slices with foreground
    for channel, scale, fill in ((0, 1.0, 7.0), (1, 2.0, 0.0)):
        expected = (np.where(inside, scale * volume, fill) + np.where(inside_x, scale * volume, fill)) / 2
        np.testing.assert_allclose(out[channel], expected, rtol=1e-6)
    with pytest.raises(ValueError, match="background shape"):
        enhance_slicewise(two_channels, volume, SlicePlan((0,)), background=background[:, :3])


@pytest.mark.parametrize("mode, shape, expected_mode", [("reflect", (2, 13, 22), "reflect"),
                                                       ("reflect", (2, 3, 22), "edge"),
                                                       ("constant", (2, 13, 22), "constant")])
def test_pad_to_multiple_numpy_and_torch_agree(mode, shape, expected_mode):
    import torch

    from mrisr.networks.padding import pad_to_multiple

    stack = np.random.default_rng(4).normal(size=shape).astype(np.float32)
    padded = pad_to_multiple(stack, 8, mode)
    extra = (-shape[1] % 8, -shape[2] % 8)
    np.testing.assert_array_equal(padded, np.pad(stack, ((0, 0), (0, extra[0]), (0, extra[1])), mode=expected_mode))
    np.testing.assert_array_equal(pad_to_multiple(torch.from_numpy(stack)[:, None], 8, mode)[:, 0].numpy(), padded)
    assert pad_to_multiple(stack, 1, mode) is stack
    with pytest.raises(ValueError, match="padding mode"):
        pad_to_multiple(stack, 8, "wrap")
