"""Exact softmax attention and the backbone: numerics, masks, pooling, shapes."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from attention.softmax import SoftmaxAttention
from models.pooling import masked_mean
from models.transformer import LRATransformer


def reference_attention(q, k, v, mask):
    scores = (q @ k.transpose(-1, -2)) / q.shape[-1] ** 0.5
    scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
    return scores.softmax(-1) @ v


def test_softmax_matches_explicit_formula():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 17, 8, dtype=torch.float64) for _ in range(3))
    mask = torch.ones(2, 17, dtype=torch.bool)
    mask[1, 11:] = False
    out = SoftmaxAttention(3, 8, dropout=0.0)(q, k, v, mask)
    torch.testing.assert_close(out, reference_attention(q, k, v, mask))


def test_padded_keys_never_change_real_outputs():
    torch.manual_seed(1)
    q, k, v = (torch.randn(2, 2, 20, 8) for _ in range(3))
    mask = torch.ones(2, 20, dtype=torch.bool)
    mask[0, 13:] = False
    attn = SoftmaxAttention(2, 8, dropout=0.0)
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
    assert masked_mean(x, torch.tensor([[True, True, False]])).item() == 2.0


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


def test_padded_tokens_never_change_the_prediction():
    torch.manual_seed(2)
    model = tiny_model()
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
