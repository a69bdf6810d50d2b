"""The Swin U-Net backbone of Res-SRDiff: shapes, presets, windows, shifted-window mask, time embedding."""

import pytest
import torch
from torch import nn

from mrisr.errors import InputError
from mrisr.networks.swin_unet2d import (
    PRESETS, SwinBlock, SwinUNet2d, SwinUNetConfig, WindowAttention, _from_windows, _to_windows, build,
    parameter_count, preset, shift_mask,
)

TINY = SwinUNetConfig(model_channels=8, channel_mult=(1, 2), num_res_blocks=1, swin_levels=(1,), swin_embed_dim=8,
                      num_heads=2, window_size=4, norm_groups=4)



def randomise_zero_inits(network: nn.Module, seed: int = 0) -> None:
    """Give the zero-initialised output convolutions weights, so every input path reaches the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in network.parameters():
            if torch.all(p == 0):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))


def test_shapes_and_pad_multiple():
    net = SwinUNet2d(TINY)
    assert net.pad_multiple == 2 and TINY.window_multiple == 8
    for height, width in ((16, 24), (10, 6)):  # whole windows, and maps the Swin stage pads itself
        x = torch.randn(3, 1, height, width)
        out = net(x, torch.tensor([1, 2, 4]), x)
        assert out.shape == (3, 1, height, width) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="multiple of 2"):
        net(torch.randn(1, 1, 15, 16), torch.tensor([1]), torch.randn(1, 1, 15, 16))


def test_swin_stage_pads_to_whole_windows_and_crops():
    stage = SwinUNet2d(TINY).middle[0].swin.eval()
    x = torch.randn(1, 16, 6, 9, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        out = stage(x)
        padded = stage(torch.nn.functional.pad(x, (0, 3, 0, 2), mode="reflect"))
    assert out.shape == x.shape
    # The stage pads by reflection itself: the same as running on the reflect-padded map and cropping.
    torch.testing.assert_close(out, padded[..., :6, :9])


def test_patch_size_runs_at_lower_resolution():
    config = preset("cpu", model_channels=8, swin_embed_dim=16, window_size=4)
    net = SwinUNet2d(config)
    assert net.pad_multiple == 2 * 4
    x = torch.randn(2, 1, 40, 24)
    assert net(x, torch.tensor([1, 3]), x).shape == x.shape


def test_preset_sizes():
    assert 55e6 < parameter_count(SwinUNet2d(PRESETS["paper"])) < 58e6  # public brain config ≈ 56 M
    assert 0.5e6 < parameter_count(SwinUNet2d(PRESETS["cpu"])) < 2e6
    assert PRESETS["paper"].pad_multiple == 8 and PRESETS["cpu"].pad_multiple == 8


def test_config_errors_and_build_from_card_dict():
    with pytest.raises(InputError, match="norm_groups"):
        SwinUNetConfig(model_channels=12, norm_groups=8)
    with pytest.raises(InputError, match="swin_depth"):
        SwinUNetConfig(swin_depth=3)
    with pytest.raises(InputError, match="unknown Swin U-Net preset"):
        preset("huge")
    net = build({"model_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1, "swin_levels": [1],
                 "swin_embed_dim": 8, "num_heads": 2, "window_size": 4, "norm_groups": 4})
    assert net.config == TINY


def test_window_partition_round_trip_and_order():
    x = torch.arange(2 * 3 * 8 * 12, dtype=torch.float32).view(2, 3, 8, 12)
    windows = _to_windows(x, 4)
    assert windows.shape == (2, 6, 16, 3)
    torch.testing.assert_close(windows[0, 1, :, 0], x[0, 0, 0:4, 4:8].reshape(-1))  # second window: rows 0-3, cols 4-7
    torch.testing.assert_close(_from_windows(windows, 4, 8, 12), x)


def test_shift_mask_by_hand():
    mask = shift_mask(8, 8, window=4, shift=2)
    assert mask.shape == (4, 16, 16)
    assert torch.all(mask[0] == 0)  # the top-left window holds one region
    # Bottom-right window: 4 regions of 2×2 tokens; token 0 (row 0, col 0) and token 15 (row 3, col 3) differ.
    assert mask[3, 0, 15] == float("-inf") and mask[3, 0, 1] == 0 and mask[3, 0, 2] == float("-inf")
    assert int((mask[3] == 0).sum()) == 4 * 4 * 4  # each of 16 tokens sees the 4 of its own region


def test_relative_position_bias_index():
    attention = WindowAttention(8, window=4, heads=2)
    index = attention.bias_index
    assert index.shape == (16, 16) and int(index.min()) == 0 and int(index.max()) == 48
    assert torch.all(index.diagonal() == index[0, 0])  # zero offset → one table entry
    assert index[0, 1] == index[4, 5] and index[0, 1] != index[1, 0]


def _block_without_norms(shift: int) -> SwinBlock:
    torch.manual_seed(0)
    block = SwinBlock(8, heads=2, window=4, shift=shift, mlp_ratio=2.0, groups=4)
    block.norm1, block.norm2 = nn.Identity(), nn.Identity()  # GroupNorm mixes all positions
    return block.eval()


def _changed(block: SwinBlock, row: int, col: int) -> torch.Tensor:
    x = torch.randn(1, 8, 8, 8, generator=torch.Generator().manual_seed(1))
    y = x.clone()
    y[0, :, row, col] += 1.0
    with torch.no_grad():
        return (block(x) - block(y)).abs().sum(1)[0] > 1e-6


def test_regular_windows_keep_information_inside_each_window():
    changed = _changed(_block_without_norms(0), 0, 0)
    assert changed[:4, :4].all() and not changed[4:].any() and not changed[:, 4:].any()


def test_shifted_windows_cross_window_borders_but_not_the_wrap_around():
    changed = _changed(_block_without_norms(2), 3, 3)  # crosses the regular 4×4 window border
    assert changed[2:6, 2:6].all() and changed.sum() == 16
    corner = _changed(_block_without_norms(2), 0, 0)  # rolled next to the far corner, masked from it
    assert corner[:2, :2].all() and corner.sum() == 4 and not corner[7, 7]


def test_step_index_and_condition_reach_the_output():
    net = SwinUNet2d(TINY).eval()
    randomise_zero_inits(net)
    x = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    y = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        base = net(x, torch.tensor([1]), y)
        assert not torch.allclose(base, net(x, torch.tensor([4]), y))
        assert not torch.allclose(base, net(y, torch.tensor([1]), x))  # channel 0 is x_t, channel 1 is y
