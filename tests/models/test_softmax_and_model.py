"""Exact softmax attention and the backbone: numerics, masks, pooling, shapes."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from attention.reference import dense_softmax_attention
from attention.softmax import SoftmaxAttention
from models.pooling import masked_mean, padded_mean
from models.transformer import LRATransformer


def test_softmax_matches_explicit_formula():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 17, 8, dtype=torch.float64) for _ in range(3))
    mask = torch.ones(2, 17, dtype=torch.bool)
    mask[1, 11:] = False
    out = SoftmaxAttention(3, 8).eval()(q, k, v, mask)  # eval: no attention dropout
    torch.testing.assert_close(out, dense_softmax_attention(q, k, v, mask))


def test_padded_keys_never_change_real_outputs():
    torch.manual_seed(1)
    q, k, v = (torch.randn(2, 2, 20, 8) for _ in range(3))
    mask = torch.ones(2, 20, dtype=torch.bool)
    mask[0, 13:] = False
    attn = SoftmaxAttention(2, 8).eval()
    out = attn(q, k, v, mask)
    k2, v2 = k.clone(), v.clone()
    k2[0, :, 13:] = 1e3 * torch.randn_like(k2[0, :, 13:])
    v2[0, :, 13:] = -1e3
    out2 = attn(q, k2, v2, mask)
    torch.testing.assert_close(out[0, :, :13], out2[0, :, :13])
    torch.testing.assert_close(out[1], out2[1])


def test_bad_mask_is_rejected():
    q = torch.randn(1, 2, 5, 4)
    with pytest.raises(ValueError, match="key_padding_mask"):
        SoftmaxAttention(2, 4)(q, q, q, torch.ones(1, 5))


def test_masked_mean_ignores_padding():
    x = torch.tensor([[[1.0], [3.0], [100.0]]])
    assert masked_mean(x, torch.tensor([[True, True, False]]), 8).item() == 2.0


def test_padded_mean_is_the_published_codes_mean_over_the_fixed_length():
    """The Nyströmformer LRA code pads to max_len, zeroes padding (output * mask) and averages over
    every position; the same vector comes out whatever shorter length the batch was padded to."""
    torch.manual_seed(4)
    max_len, lengths = 12, [3, 7, 12]
    full = torch.randn(3, max_len, 5)
    full_mask = torch.arange(max_len)[None, :] < torch.tensor(lengths)[:, None]
    reference = torch.stack([full[i, :n].sum(0) / max_len for i, n in enumerate(lengths)])
    torch.testing.assert_close((full * full_mask[..., None]).mean(dim=1), reference)
    torch.testing.assert_close(padded_mean(full, full_mask, max_len), reference)
    short = full[:2, :8].clone()
    short[0, 3:] = 1e3  # whatever sits in the padding
    torch.testing.assert_close(padded_mean(short, full_mask[:2, :8], max_len), reference[:2])
    # Its vector is the real tokens' mean scaled by length / max_len.
    scale = torch.tensor(lengths, dtype=full.dtype)[:, None] / max_len
    torch.testing.assert_close(
        padded_mean(full, full_mask, max_len), masked_mean(full, full_mask, max_len) * scale
    )


def tiny_model(**kw):
    args = dict(
        vocab_size=16,
        num_classes=10,
        max_len=40,
        attention=partial(SoftmaxAttention),
        dim=16,
        num_heads=2,
        ffn_dim=32,
        dropout=0.0,
    )
    return LRATransformer(**{**args, **kw}).eval()


@pytest.mark.parametrize("pooling", ["mean", "padded_mean"])
def test_padded_tokens_never_change_the_prediction(pooling):
    torch.manual_seed(2)
    model = tiny_model(pooling=pooling)
    x = torch.randint(1, 16, (3, 30))
    mask = torch.ones(3, 30, dtype=torch.bool)
    mask[0, 10:] = False
    mask[2, 25:] = False
    y = model(x, mask)
    x2 = x.clone()
    x2[0, 10:] = torch.randint(1, 16, (20,))
    x2[2, 25:] = 0
    torch.testing.assert_close(model(x2, mask), y)
    # ...and the same sequence without any padding at all gives the same answer.
    torch.testing.assert_close(model(x[:1, :10], mask[:1, :10]), y[:1])


def test_backbone_defaults_are_the_published_setting():
    model = LRATransformer(vocab_size=16, num_classes=10, max_len=2000, attention=partial(SoftmaxAttention))
    assert len(model.blocks) == 2
    attn = model.blocks[0].attn
    assert (attn.num_heads, attn.head_dim) == (2, 32)
    assert model.blocks[0].ffn[0].out_features == 128
    assert [name for name, _ in model.named_attention()] == ["layer0", "layer1"]


def test_two_towers_need_both_documents():
    model = tiny_model(two_towers=True, num_classes=2)
    x = torch.randint(0, 16, (2, 12))
    m = torch.ones(2, 12, dtype=torch.bool)
    assert model(x, m, x, m).shape == (2, 2)
    with pytest.raises(ValueError, match="two-tower"):
        model(x, m)


def test_too_long_input_names_the_config_key():
    with pytest.raises(ValueError, match="model.max_len=40"):
        tiny_model()(torch.zeros(1, 41, dtype=torch.long), None)


@pytest.mark.parametrize("used", [(0, 1, 2), (0,), (1, 2)])
def test_head_split_matches_the_permuted_view_in_values_and_gradients(used):
    """The projection's split into q, k, v (a custom backward) gives autograd's values and gradients,
    also when only some of the three reach the loss."""
    from models.block import _SplitHeads

    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 7, 3 * 2 * 4, dtype=torch.float64, generator=g, requires_grad=True)
    weights = [torch.randn(3, 2, 7, 4, dtype=torch.float64, generator=g) for _ in range(3)]

    def loss(parts):
        return sum((parts[i] * weights[i]).sum() for i in used)

    split = _SplitHeads.apply(x, 2)
    reference = x.view(3, 7, 3, 2, 4).permute(2, 0, 3, 1, 4)
    for mine, ref in zip(split, reference, strict=True):
        assert mine.is_contiguous() and torch.equal(mine, ref)
    (mine_grad,) = torch.autograd.grad(loss(split), x)
    (ref_grad,) = torch.autograd.grad(loss(reference.unbind(0)), x)
    assert torch.equal(mine_grad, ref_grad)
