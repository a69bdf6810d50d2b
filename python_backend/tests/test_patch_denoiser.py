"""Whole-volume block denoiser: exact blending, background skipping, batching, and no seams."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from mrisr.diffusion.scheduler import sample
from mrisr.diffusion.vdm import VDMScheduler
from mrisr.errors import InputError
from mrisr.inference.patch_denoiser import BlockDenoiser, BlockPlan
from mrisr.inference.tiling import PatchGrid


def _smooth_volume(shape, seed=0):
    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.standard_normal(shape), 3).astype(np.float32) * 10


def test_identity_models_reproduce_the_condition_and_the_global_x_t():
    condition = _smooth_volume((20, 33, 27))  # smaller than a block on one axis: padded
    plan = BlockPlan(patch_size=8, parts=3, overlap=0.5, batch_size=2)
    x_t = torch.from_numpy(_smooth_volume((20, 33, 27), seed=1))[None, None]
    as_condition = BlockDenoiser(lambda x, c, t: c, condition, plan, "cpu")
    as_x_t = BlockDenoiser(lambda x, c, t: x, condition, plan, "cpu")
    expected = torch.from_numpy(condition)
    torch.testing.assert_close(as_condition(x_t, torch.zeros(1))[0, 0], expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(as_x_t(x_t, torch.zeros(1)), x_t, atol=1e-5, rtol=1e-5)


def test_background_blocks_are_skipped_and_their_voxels_keep_the_condition():
    condition = _smooth_volume((48, 48, 48))
    mask = np.zeros(condition.shape, bool)
    mask[2:6, 2:6, 2:6] = True
    calls = []

    def model(x, c, t):
        calls.append(x.shape[0])
        return torch.full_like(x, 7.0)

    denoiser = BlockDenoiser(model, condition, BlockPlan(8, 3, 0.25, 4), "cpu", mask=mask)
    out = denoiser(torch.zeros(1, 1, 48, 48, 48), torch.ones(1))[0, 0].numpy()
    assert denoiser.num_blocks == 1 and calls == [1] and len(PatchGrid((48,) * 3, 24, 0.25)) == 27
    np.testing.assert_allclose(out[:24, :24, :24], 7.0, rtol=1e-6)
    np.testing.assert_array_equal(out[24:], condition[24:])


def test_batch_size_and_progress():
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(2, 1, 3, padding=1)
    model = lambda x, c, t: conv(torch.cat((x, c), 1)) * (1 + t[:, None, None, None, None])  # noqa: E731
    condition = _smooth_volume((30, 30, 30))
    x_t = torch.randn(1, 1, 30, 30, 30)
    outputs, ticks = [], []
    for batch in (1, 3):
        denoiser = BlockDenoiser(model, condition, BlockPlan(8, 3, 0.25, batch), "cpu",
                                 on_block=lambda done, total: ticks.append((batch, done, total)))
        outputs.append(denoiser(x_t, torch.full((1,), 0.5)))
    torch.testing.assert_close(outputs[0], outputs[1])
    assert [t for t in ticks if t[0] == 3] == [(3, 3, 8), (3, 6, 8), (3, 8, 8)]


def _seam_ratio(volume: np.ndarray, block: int, stride: int) -> float:
    """Mean |difference| between neighbouring voxels across block edge planes / across all other planes."""
    edges = {e for s in range(0, volume.shape[0], stride) for e in (s, s + block) if 0 < e < volume.shape[0]}
    across, inside = [], []
    for axis in range(3):
        diff = np.abs(np.diff(volume, axis=axis))
        for plane in range(diff.shape[axis]):
            (across if plane + 1 in edges else inside).append(np.take(diff, plane, axis=axis).mean())
    return float(np.mean(across) / np.mean(inside))


def test_no_seams_with_one_global_x_t_but_seams_with_independent_blocks():
    """A model with a block-wide term (like attention over a block): blocks sampled independently from
    their own noise disagree at their borders; blending every step over one x_t leaves no seam."""
    condition = _smooth_volume((48, 48, 48))
    model = lambda x, c, t: c + 0.5 * x.mean(dim=(2, 3, 4), keepdim=True)  # noqa: E731
    scheduler = VDMScheduler(6)
    g = torch.Generator().manual_seed(0)
    denoiser = BlockDenoiser(model, condition, BlockPlan(8, 3, 0.5, 4), "cpu")
    x = torch.randn((1, 1, 48, 48, 48), generator=g)
    blended = sample(denoiser, x, scheduler, generator=g)[0, 0].numpy()
    independent = np.zeros_like(condition)
    for patch in PatchGrid(condition.shape, 24, 0.0):
        local = torch.from_numpy(condition[patch.slices])[None, None]
        x = torch.randn(local.shape, generator=g)
        independent[patch.slices] = sample(lambda x, t: model(x, local, t), x, scheduler, generator=g)[0, 0].numpy()
    assert _seam_ratio(blended, 24, 12) < 1.1
    assert _seam_ratio(independent, 24, 24) > 1.5


def test_plan_validation():
    with pytest.raises(InputError, match="overlap"):
        BlockPlan(overlap=1.0)
    with pytest.raises(InputError, match="batch size"):
        BlockPlan(batch_size=0)
    assert BlockPlan(patch_size=32, parts=3).block_size == 96
