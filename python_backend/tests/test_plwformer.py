import numpy as np
import pytest
import torch

from mrisr.errors import InputError
from mrisr.networks.plwformer import (
    CrossWindowAttention,
    PermutedWindowAttention,
    PLWformer,
    PLWformerConfig,
    PriorModulation,
    from_windows,
    relative_position_index,
    to_windows,
)


TINY = PLWformerConfig(channels=16, layers=(1, 1), heads=2, window=4, catl_blocks=1, prior_dim=8,
                       ffn_expansion=2.0, unshuffle=2, upsampler="subpixel")


def naive_permuted_attention(module: PermutedWindowAttention, x: torch.Tensor) -> torch.Tensor:
    """Eq. 3 for one window (1, L, L, C), written out token by token."""
    _, side, _, c = x.shape
    r, heads = module.reduction, module.heads
    p, d = side // r, c // heads
    q = module.q(x)[0].reshape(side * side, c)
    kv = module.kv(x)[0]  # (L, L, 2C/r²)
    keys, values = [], []
    for a in range(p):
        for b in range(p):
            group = kv[a * r:(a + 1) * r, b * r:(b + 1) * r]  # (r, r, 2C/r²): rows, columns, channels
            keys.append(group[..., : c // r**2].reshape(c))
            values.append(group[..., c // r**2:].reshape(c))
    keys, values = torch.stack(keys), torch.stack(values)  # (p², C)
    out = torch.zeros(side * side, c)
    for h in range(heads):
        qh, kh, vh = (t[:, h * d:(h + 1) * d] for t in (q, keys, values))
        scores = qh @ kh.T / d**0.5
        for i in range(side * side):
            qi, qj = divmod(i, side)
            for j in range(p * p):
                ka, kb = divmod(j, p)
                offset = (qi // r - ka + p - 1) * (2 * p - 1) + (qj // r - kb + p - 1)
                scores[i, j] += module.bias_table[offset, h]
        out[:, h * d:(h + 1) * d] = scores.softmax(-1) @ vh
    return module.proj(out).reshape(1, side, side, c)


def test_permuted_attention_matches_a_token_by_token_reference():
    torch.manual_seed(0)
    module = PermutedWindowAttention(channels=8, heads=2, window=4, reduction=2)
    with torch.no_grad():
        module.bias_table.normal_()
        x = torch.randn(1, 4, 4, 8)
        np.testing.assert_allclose(module(x).numpy(), naive_permuted_attention(module, x).numpy(), atol=1e-5)


def test_keys_are_a_quarter_of_the_queries_for_k_2():
    module = PermutedWindowAttention(channels=16, heads=4, window=16, reduction=2)
    assert module.bias_index.shape == (256, 64)
    assert module.bias_table.shape == ((2 * 8 - 1) ** 2, 4)
    assert module.kv.out_features == 2 * 16 // 4


def test_aligned_relative_position_index_by_hand():
    index = relative_position_index(query_side=2, key_side=1, stride=2)
    assert index.tolist() == [[0], [0], [0], [0]]  # every query of a 2×2 window sits on the single key
    index = relative_position_index(query_side=2, key_side=2, stride=1)
    # offsets (dy + 1) * 3 + (dx + 1) for query (0, 0) against keys (0,0), (0,1), (1,0), (1,1)
    assert index[0].tolist() == [4, 3, 1, 0]


def test_windows_round_trip():
    x = torch.randn(2, 8, 12, 3)
    windows = to_windows(x, 4)
    assert windows.shape == (2 * 2 * 3, 16, 3)
    torch.testing.assert_close(from_windows(windows, 8, 12), x)
    assert to_windows(x, 4, group=2).shape == (12, 4, 12)


def test_cross_attention_with_one_key_position_returns_projected_reference_values():
    torch.manual_seed(1)
    module = CrossWindowAttention(channels=4, heads=1, window=1)
    target, reference = torch.randn(1, 3, 3, 4), torch.randn(1, 3, 3, 4)
    with torch.no_grad():
        expected = module.proj(module.kv(reference)[..., 4:])
        torch.testing.assert_close(module(target, reference), expected)


def test_locality_init_makes_cross_attention_start_on_the_same_position():
    torch.manual_seed(6)
    target, reference = torch.randn(1, 4, 4, 4) * 0.1, torch.randn(1, 4, 4, 4)
    flat = CrossWindowAttention(channels=4, heads=1, window=4)
    local = CrossWindowAttention(channels=4, heads=1, window=4, locality_init=20.0)
    local.load_state_dict({**flat.state_dict(), "bias_table": local.bias_table.detach()})
    with torch.no_grad():
        own = local.proj(local.kv(reference)[..., 4:])  # every query takes its own position's value
        torch.testing.assert_close(local(target, reference), own, atol=1e-4, rtol=1e-4)
        assert (flat(target, reference) - own).abs().max() > 0.1


def test_prior_modulation_is_scale_and_shift_of_the_normalised_features():
    torch.manual_seed(2)
    module = PriorModulation(channels=3, prior_dim=2)
    x, prior = torch.randn(2, 4, 5, 3), torch.randn(2, 2)
    scale, shift = module.linear(prior).chunk(2, dim=-1)
    expected = module.norm(x) * scale[:, None, None] + shift[:, None, None]
    torch.testing.assert_close(module(x, prior), expected)


@pytest.mark.parametrize("size", [(16, 16), (24, 10), (6, 30)])
def test_decoder_keeps_the_condition_grid_for_any_multiple_of_the_unshuffle(size):
    torch.manual_seed(3)
    decoder = PLWformer(TINY).eval()
    condition, reference = torch.rand(2, 1, *size), torch.rand(2, 1, *size)
    with torch.no_grad():
        out = decoder(condition, reference, torch.randn(2, 8))
    assert out.shape == condition.shape and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="multiple of the unshuffle"):
        decoder(torch.rand(1, 1, 15, 16), torch.rand(1, 1, 15, 16), torch.randn(1, 8))


def test_reference_matters_only_in_the_reference_variant():
    torch.manual_seed(4)
    condition, prior = torch.rand(1, 1, 16, 16), torch.randn(1, 8)
    with torch.no_grad():
        with_ref = PLWformer(TINY).eval()
        a = with_ref(condition, torch.rand(1, 1, 16, 16), prior)
        b = with_ref(condition, torch.rand(1, 1, 16, 16), prior)
        assert (a - b).abs().max() > 1e-4
        without = PLWformer(PLWformerConfig(**{**TINY.__dict__, "use_reference": False})).eval()
        assert not any(name.startswith(("catl", "reference_embed")) for name, _ in without.named_parameters())
        torch.testing.assert_close(without(condition, None, prior), without(condition, torch.rand(1, 1, 16, 16), prior))
    with pytest.raises(InputError, match="reference"):
        with_ref(condition, None, prior)


def test_prior_changes_the_output():
    torch.manual_seed(5)
    decoder = PLWformer(TINY).eval()
    condition = torch.rand(1, 1, 16, 16)
    with torch.no_grad():
        first = decoder(condition, condition, torch.randn(1, 8))
        assert (first - decoder(condition, condition, torch.randn(1, 8))).abs().max() > 1e-4


def test_progressive_upsampler_and_two_channel_images():
    config = PLWformerConfig(**{**TINY.__dict__, "upsampler": "progressive", "unshuffle": 4, "image_channels": 2})
    decoder = PLWformer(config).eval()
    with torch.no_grad():
        assert decoder(torch.rand(1, 2, 32, 16), torch.rand(1, 2, 32, 16), torch.randn(1, 8)).shape == (1, 2, 32, 16)


@pytest.mark.parametrize("change, message", [({"heads": 3}, "channels"), ({"window": 5}, "window"),
                                             ({"unshuffle": 3}, "power of two"),
                                             ({"upsampler": "bicubic"}, "upsampler"), ({"layers": ()}, "layers")])
def test_config_errors_name_the_value(change, message):
    with pytest.raises(InputError, match=message):
        PLWformerConfig(**{**TINY.__dict__, **change})
