"""The CPU dropout: same distribution and gradient as ``F.dropout``, only a different random stream."""

from __future__ import annotations

import pytest
import torch

from attention.dropout import Dropout, dropout


def test_keeps_each_element_with_probability_one_minus_p_and_rescales():
    torch.manual_seed(0)
    x = torch.ones(400_000)
    y = dropout(x, 0.1)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.9) < 3e-3  # binomial sd ~ 5e-4
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1 / 0.9))
    assert abs(y.mean().item() - 1.0) < 5e-3  # unbiased in expectation, as F.dropout


def test_gradient_is_the_same_mask_and_scale():
    torch.manual_seed(1)
    x = torch.randn(64, 32, dtype=torch.float64, requires_grad=True)
    y = dropout(x, 0.3)
    g = torch.randn_like(y)
    y.backward(g)
    keep = (y != 0).to(x.dtype)
    scale = 2**15 / (2**15 - round(0.3 * 2**15))  # 1 / (1 - p), p as the mask rounds it
    torch.testing.assert_close(y, x.detach() * keep * scale)
    torch.testing.assert_close(x.grad, g * keep * scale)


def test_identity_in_eval_and_at_zero_and_all_dropped_at_one():
    x = torch.randn(8, 8)
    assert dropout(x, 0.5, training=False) is x
    assert dropout(x, 0.0) is x
    assert torch.count_nonzero(dropout(x, 1.0)) == 0
    module = Dropout(0.5).eval()
    assert module(x) is x


def test_low_precision_inputs_keep_their_dtype():
    x = torch.ones(10_000, dtype=torch.bfloat16)
    y = dropout(x, 0.25)
    assert y.dtype == torch.bfloat16
    assert abs((y != 0).float().mean().item() - 0.75) < 0.02


def test_low_precision_scale_is_not_rounded_before_the_product():
    """In bf16 the scale 1 / (1 - 0.1) itself rounds to 1.109375: a mask holding it would shrink every
    kept element by 0.16%. Rounding each product once instead leaves kept values and gradients
    unbiased to far better than that, on average over random values."""
    torch.manual_seed(0)
    scale = 2**15 / (2**15 - round(0.1 * 2**15))
    x = torch.randn(1_000_000, dtype=torch.bfloat16, requires_grad=True)
    g = torch.randn(1_000_000, dtype=torch.bfloat16)
    y = dropout(x, 0.1)
    y.backward(g)
    kept = y.detach() != 0
    value_ratio = (y.detach().double() / x.detach().double())[kept].mean().item()
    grad_ratio = (x.grad.double() / g.double())[kept & (g != 0)].mean().item()
    assert value_ratio == pytest.approx(scale, rel=2e-4)
    assert grad_ratio == pytest.approx(scale, rel=2e-4)


def test_bad_probability_is_refused():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        Dropout(1.5)


def test_mask_lanes_are_unbiased_and_independent():
    """Four mask elements share one 64-bit draw: each must still be dropped with probability p,
    independently of the other three (and at lengths that are not a multiple of four)."""
    from attention.dropout import keep_mask

    torch.manual_seed(2)
    lanes = keep_mask((2_000_000,), 0.1, "cpu").view(-1, 4).float()
    torch.testing.assert_close(1 - lanes.mean(dim=0), torch.full((4,), 0.1), atol=2e-3, rtol=0)  # sd 4e-4
    corr = torch.corrcoef(lanes.T) - torch.eye(4)
    assert corr.abs().max() < 5e-3  # sd ~ 1e-3
    odd = keep_mask((3, 7, 5), 0.5, "cpu")
    assert odd.shape == (3, 7, 5) and odd.dtype == torch.bool


@pytest.mark.parametrize("p", [0.3, 0.99999, 1 - 2**-17])
def test_expectation_is_kept_at_every_p(p):
    """Kept elements are scaled by 1 / (1 - p) of the p the mask really uses, so E[out] = x; p so
    close to 1 that the mask's rounding reaches 1 still drops (almost) everything."""
    torch.manual_seed(4)
    y = dropout(torch.ones(1_000_000), p)
    kept = (y != 0).float().mean().item()
    assert abs(kept - (1 - p)) < 6 * ((1 - p) * p / 1e6) ** 0.5 + 1e-6
    if kept:
        torch.testing.assert_close(y[y != 0].mean(), torch.tensor(1 / (1 - p)), rtol=5e-4, atol=0)
