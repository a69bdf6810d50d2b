import math

import pytest
import torch

from mrisr.errors import InputError
from mrisr.networks.sr3_unet2d import (PRESETS, SelfAttention, SR3UNet2d, SR3UNet2dConfig, build,
                                       noise_level_embedding, parameter_count)
from mrisr.registry import get_spec

TINY = SR3UNet2dConfig(base_channels=8, channel_multipliers=(1, 2, 2), res_blocks=1, attention_levels=(1,),
                       norm_groups=4, dropout=0.0)



def _inputs(batch=3, size=(8, 12), seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, 1, *size, generator=g), torch.randn(batch, 1, *size, generator=g),
            torch.rand(batch, generator=g))


def test_shapes_pad_multiple_and_size_check():
    net = SR3UNet2d(TINY).eval()
    assert TINY.pad_multiple == 4 and PRESETS["paper"].pad_multiple == 16 and PRESETS["cpu"].pad_multiple == 8
    x, y, level = _inputs()
    assert net(x, y, level).shape == (3, 1, 8, 12)
    with pytest.raises(ValueError, match="multiple of 4"):
        net(x[..., :10], y[..., :10], level)


def test_samples_in_a_batch_do_not_interact():
    """GroupNorm and attention are per sample: a batch gives what each sample gives alone."""
    net = SR3UNet2d(TINY).eval()
    x, y, level = _inputs()
    with torch.no_grad():
        together = net(x, y, level)
        alone = torch.cat([net(x[i:i + 1], y[i:i + 1], level[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-4)


def test_output_depends_on_condition_and_noise_level():
    torch.manual_seed(0)
    net = SR3UNet2d(TINY).eval()
    x, y, level = _inputs()
    with torch.no_grad():
        base = net(x, y, level)
        assert (net(x, -y, level) - base).abs().max() > 1e-3
        assert (net(x, y, level * 0.5) - base).abs().max() > 1e-3


def test_attention_matches_explicit_softmax():
    torch.manual_seed(1)
    attention = SelfAttention(8, 4).eval()
    x = torch.randn(2, 8, 3, 5)
    h = attention.qkv(attention.norm(x)).reshape(2, 3, 8, 15)
    q, k, v = h[:, 0], h[:, 1], h[:, 2]  # (B, C, N)
    weights = torch.softmax(q.transpose(1, 2) @ k / math.sqrt(8), dim=-1)  # (B, N, N)
    expected = x + attention.out((v @ weights.transpose(1, 2)).reshape(2, 8, 3, 5))
    torch.testing.assert_close(attention(x), expected, atol=1e-5, rtol=1e-4)


def test_noise_level_embedding_values():
    emb = noise_level_embedding(torch.tensor([0.0, 0.5]), 4, 1000.0)
    expected = torch.tensor([[0, 0, 1, 1], [math.sin(500), math.sin(5), math.cos(500), math.cos(5)]])
    torch.testing.assert_close(emb, expected.float())


def test_config_round_trip_and_validation():
    assert SR3UNet2dConfig.from_dict(TINY.to_dict()) == TINY
    assert isinstance(build(TINY.to_dict()), SR3UNet2d)
    with pytest.raises(InputError, match="unknown"):
        SR3UNet2dConfig.from_dict({"channels": 3})
    with pytest.raises(InputError, match="prediction"):
        SR3UNet2dConfig(prediction="v")
    with pytest.raises(InputError, match="norm_groups"):
        SR3UNet2dConfig(base_channels=12, norm_groups=8)
    with pytest.raises(InputError, match="attention_levels"):
        SR3UNet2dConfig(attention_levels=(7,))


def test_registry_parameter_counts_match_the_presets():
    presets = get_spec("sr3pdm").config["presets"]
    for name, config in PRESETS.items():
        assert parameter_count(SR3UNet2d(config)) == presets[name]["parameters"]
    assert 0.5e6 <= presets["cpu"]["parameters"] <= 2e6
