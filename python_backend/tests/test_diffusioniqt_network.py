"""DiffusionIQT's U-Net: sizes, and the cross-batch mechanism run on the assembled block (BlockLayout)
against its explicit per-patch definition (neighbour padding from PatchGrid neighbours, keys/values
gathered from all 27 patches)."""

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mrisr.errors import InputError
from mrisr.networks.iqt_unet3d import (PRESETS, BlockLayout, EfficientAttention, IQTUNet3D, IQTUNetConfig,
                                       PixelShuffleUp, count_parameters, film_group_norm, space_to_depth_conv)
from mrisr.inference.tiling import split_block



TINY = IQTUNetConfig(init_channels=8, channels=(8, 16, 16), blocks=(1, 0, 1), attention=(True, True, False),
                     token_sizes=(2, 2, 2), heads=2, head_channels=4, groups=4, se_reduction=4)


class ExplicitPatchLayout:
    """The paper's formulation: a batch of parts³ patches per block (raster order of split_block);
    each 3³ conv pads every patch with 1 voxel of its neighbours (zeros where the block ends)."""

    def __init__(self, parts: int = 3):
        self.parts = parts

    def _grid(self, side: int):
        return split_block((self.parts * side,) * 3, self.parts)

    def merge(self, x: torch.Tensor) -> torch.Tensor:
        n, s = self.parts**3, x.shape[-1]
        blocks = x.new_zeros((x.shape[0] // n, x.shape[1]) + (self.parts * s,) * 3)
        for i, patch in enumerate(self._grid(s)):
            blocks[(slice(None), slice(None), *patch.slices)] = x[i::n]
        return blocks

    def split(self, block: torch.Tensor) -> torch.Tensor:
        grid = self._grid(block.shape[-1] // self.parts)
        patches = torch.stack([block[(slice(None), slice(None), *p.slices)] for p in grid], dim=1)
        return patches.flatten(0, 1)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        n, s = self.parts**3, x.shape[-1]
        grid = self._grid(s)
        padded = F.pad(x, (1, 1) * 3)
        for i, patch in enumerate(grid):
            for offset, neighbour in grid.neighbours(patch).items():
                j = int(np.ravel_multi_index(neighbour.index, grid.grid_shape))
                source = tuple({-1: slice(s - 1, s), 0: slice(0, s), 1: slice(0, 1)}[o] for o in offset)
                target = tuple({-1: slice(0, 1), 0: slice(1, s + 1), 1: slice(s + 1, s + 2)}[o] for o in offset)
                padded[(slice(i, None, n), slice(None), *target)] = x[(slice(j, None, n), slice(None), *source)]
        return padded

    def conv(self, conv: torch.nn.Conv3d, x: torch.Tensor) -> torch.Tensor:
        return F.conv3d(self.pad(x), conv.weight, conv.bias)


def _patches(blocks: int, channels: int, side: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(blocks * 27, channels, side, side, side, dtype=torch.float64,
                       generator=torch.Generator().manual_seed(seed))


def test_block_conv_equals_neighbour_padded_patch_conv():
    conv = torch.nn.Conv3d(3, 5, 3, padding=1).double()
    x = _patches(2, 3, 4)
    with torch.no_grad():
        block = BlockLayout(3).conv(conv, x)
        explicit = ExplicitPatchLayout(3).conv(conv, x)
        zero_padded = F.conv3d(x, conv.weight, conv.bias, padding=1)
    torch.testing.assert_close(block, explicit, rtol=1e-12, atol=1e-12)
    assert (block - zero_padded).abs().max() > 1e-2  # the neighbours matter: not the same as zero padding


def test_merge_and_split_follow_split_block_raster_order():
    x = _patches(2, 2, 4)
    block, explicit = BlockLayout(3), ExplicitPatchLayout(3)
    torch.testing.assert_close(block.merge(x), explicit.merge(x), rtol=0, atol=0)
    torch.testing.assert_close(block.split(block.merge(x)), x, rtol=0, atol=0)


def test_attention_keys_and_values_come_from_all_patches_of_the_block():
    """Block computation = per-patch queries attending to keys/values gathered from all 27 patches."""
    attention = EfficientAttention(8, TINY, token_size=2).double()
    heads, d, side = 2, 4, 6  # 6³ tokens per block: 2³ per patch
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, heads, d, side**3, dtype=torch.float64, generator=g) for _ in range(3))
    block = attention.attend(q, k, v)
    tokens = torch.arange(side**3).view(side, side, side)
    for patch in split_block((side,) * 3, 3):
        own = tokens[patch.slices].flatten()
        others = torch.arange(side**3)  # keys/values of all patches, own and neighbours
        q_p = q[..., own].softmax(dim=2) * attention.scale
        context = torch.einsum("bhdn,bhen->bhde", k[..., others].softmax(dim=3), v[..., others])
        torch.testing.assert_close(block[..., own], torch.einsum("bhde,bhdn->bhen", context, q_p))
    alone = attention.attend(q[..., own], k[..., own], v[..., own])
    assert (alone - block[..., own]).abs().max() > 1e-3  # per-patch attention alone would differ


def test_channel_shuffle_downsampling_equals_strided_2x2x2_conv():
    conv = space_to_depth_conv(3, 7).double()
    x = torch.randn(2, 3, 4, 6, 8, dtype=torch.float64)
    shuffled = x.unflatten(2, (2, 2)).unflatten(4, (3, 2)).unflatten(6, (4, 2))  # (b, c, d, 2, h, 2, w, 2)
    shuffled = shuffled.permute(0, 1, 3, 5, 7, 2, 4, 6).flatten(1, 4)  # space-to-depth: (b, 8c, d, h, w)
    pointwise = conv.weight.flatten(1)[..., None, None, None]  # 1×1 conv on (c, s1, s2, s3) channels
    with torch.no_grad():
        torch.testing.assert_close(conv(x), F.conv3d(shuffled, pointwise, conv.bias))


def test_channel_shuffles_never_mix_patches():
    """Down (2×2×2 stride 2) and up (1×1 + pixel shuffle) on the block = on each patch (even patch sides)."""
    down, up = space_to_depth_conv(2, 3).double(), PixelShuffleUp(2, 3).double()
    x = _patches(1, 2, 4)
    layout = BlockLayout(3)
    with torch.no_grad():
        torch.testing.assert_close(layout.split(down(layout.merge(x))), down(x))
        torch.testing.assert_close(layout.split(up(layout.merge(x))), up(x))


def test_groupnorm_statistics_are_per_patch_not_per_block():
    norm = torch.nn.GroupNorm(2, 4).double()
    x = _patches(1, 4, 4) * torch.linspace(0.5, 3, 27, dtype=torch.float64)[:, None, None, None, None]
    film = torch.randn(1, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        per_patch = film_group_norm(norm, x, film)
        per_sample = film_group_norm(norm, x, film.expand(27, 8))  # unfolded FiLM path
        layout = BlockLayout(3)
        per_block = layout.split(F.group_norm(layout.merge(x), 2, norm.weight, norm.bias))
    expected = F.group_norm(x, 2) * (1 + film[:, :4, None, None, None]) + film[:, 4:, None, None, None]
    torch.testing.assert_close(per_patch, expected)
    torch.testing.assert_close(per_sample, expected)
    assert (per_block - F.group_norm(x, 2)).abs().max() > 0.1  # block statistics are not patch statistics


def test_network_on_assembled_blocks_equals_explicit_per_patch_network():
    torch.manual_seed(0)
    network = IQTUNet3D(TINY).double().eval()
    x = torch.randn(2, 2, 24, 24, 24, dtype=torch.float64)
    noise_level = torch.tensor([3.0, -2.0], dtype=torch.float64)
    with torch.no_grad():
        block = network(x, noise_level)
        explicit = network(x, noise_level, layout=ExplicitPatchLayout(3))
    assert block.shape == (2, 1, 24, 24, 24)
    torch.testing.assert_close(block, explicit, rtol=1e-10, atol=1e-10)


def test_benchmarks_public_style_padded_patches_compute_the_same_network():
    from mrisr.evaluation.benchmarks.iqt import PaddedPatchLayout

    torch.manual_seed(0)
    network = IQTUNet3D(TINY).double().eval()
    x = torch.randn(1, 2, 24, 24, 24, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(network(x, torch.ones(1)), network(x, torch.ones(1), PaddedPatchLayout(3)))


def test_blocks_in_a_batch_are_independent_and_share_one_embedding_at_equal_times():
    torch.manual_seed(0)
    network = IQTUNet3D(TINY).double().eval()
    x = torch.randn(2, 2, 24, 24, 24, dtype=torch.float64)
    with torch.no_grad():
        same = network(x, torch.tensor([1.5, 1.5], dtype=torch.float64))
        mixed = network(x, torch.tensor([1.5, -4.0], dtype=torch.float64))
        single = network(x[:1], torch.tensor([1.5], dtype=torch.float64))
    torch.testing.assert_close(same[:1], single)
    torch.testing.assert_close(mixed[:1], single)
    assert (mixed[1] - same[1]).abs().max() > 1e-4  # the noise level conditions the output


def test_parameter_counts_of_the_presets():
    paper = count_parameters(IQTUNet3D(PRESETS["paper"]))
    released = count_parameters(IQTUNet3D(dataclasses.replace(PRESETS["paper"], attention=(False,) * 3,
                                                              deep_feature=False)))
    assert abs(paper / 15.2e6 - 1) < 0.10  # the paper reports 15.2 M
    assert abs(released / 13.6e6 - 1) < 0.01  # the public code's released config (no attention): 13.6 M
    assert 0.3e6 <= count_parameters(IQTUNet3D(PRESETS["cpu"])) <= 2e6


def test_patch_multiples_and_config_round_trip():
    assert PRESETS["paper"].patch_multiple == 16 and PRESETS["cpu"].patch_multiple == 8
    assert IQTUNetConfig.from_dict(PRESETS["cpu"].to_dict()) == PRESETS["cpu"]
    with pytest.raises(InputError, match="groups"):
        IQTUNetConfig(init_channels=12)
    with pytest.raises(InputError, match="blocks"):
        IQTUNetConfig(blocks=(1, 1))
    with pytest.raises(InputError, match="unknown fields"):
        IQTUNetConfig.from_dict({"width": 3})
    with pytest.raises(ValueError, match="multiple of 3 patches"):
        IQTUNet3D(TINY)(torch.randn(1, 2, 20, 20, 20), torch.zeros(1))
