"""Nyström attention against exact computations (float64) and against a naive per-head reference."""

from __future__ import annotations

import pytest
import torch

from attention._pinv import newton_schulz_pinv
from attention.nystrom import NystromAttention
from attention.reference import dense_softmax_attention


def qkv(b=2, h=2, n=50, d=8, dtype=torch.float64, seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, h, n, d, generator=g, dtype=dtype, requires_grad=requires_grad) for _ in range(3)]


def padding_mask(b, n, lengths):
    return torch.arange(n)[None, :] < torch.tensor(lengths)[:, None]


def naive_nystrom(q, k, v, mask, m, iterations):
    """The spec, literally: per batch item and head, the sequence's own real tokens split into m
    contiguous segments (real token of rank r in segment floor(r m / L)), landmarks their means,
    dense F, A, B, Newton-Schulz with the per-matrix start; a sequence of at most m real tokens gets
    exact softmax."""
    b, h, n, d = q.shape
    out = torch.zeros_like(v)
    mask = torch.ones(b, n, dtype=torch.bool) if mask is None else mask
    for bi in range(b):
        real = mask[bi]
        positions = real.nonzero().flatten().tolist()
        length = len(positions)
        for hi in range(h):
            Q, K, V = q[bi, hi] * d**-0.25, k[bi, hi] * d**-0.25, v[bi, hi]
            if length <= m:
                s = (Q[real] @ K[real].T).softmax(-1)
                out[bi, hi, real] = s @ V[real]
                continue
            groups = [[p for r, p in enumerate(positions) if r * m // length == j] for j in range(m)]
            Ql = torch.stack([Q[g].mean(0) for g in groups])
            Kl = torch.stack([K[g].mean(0) for g in groups])
            F = (Q @ Kl.T).softmax(-1)
            A = (Ql @ Kl.T).softmax(-1)
            B = (Ql @ K[real].T).softmax(-1)
            Z = A.T / (A.abs().sum(0).max() * A.abs().sum(1).max())
            eye = torch.eye(m, dtype=A.dtype)
            for _ in range(iterations):
                AZ = A @ Z
                Z = 0.25 * Z @ (13 * eye - AZ @ (15 * eye - AZ @ (7 * eye - AZ)))
            out[bi, hi] = F @ Z @ (B @ V[real])
    return out


def rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


def test_matches_naive_reference_with_padding_and_ragged_length():
    q, k, v = qkv(n=50)
    mask = padding_mask(3, 50, [50, 23, 6])  # lengths not divisible by 7; the third is exact (6 <= 7)
    q, k, v = qkv(b=3, n=50)
    attn = NystromAttention(2, 8, num_landmarks=7, conv_kernel=0)
    out = attn(q, k, v, mask)
    ref = naive_nystrom(q, k, v, mask, m=7, iterations=6)
    assert out.shape == q.shape
    torch.testing.assert_close(
        out[mask[:, None, :, None].expand_as(out)], ref[mask[:, None, :, None].expand_as(ref)]
    )


@pytest.mark.parametrize("m", [50, 64])
def test_m_at_least_n_is_exact_softmax(m):
    q, k, v = qkv(n=50)
    mask = padding_mask(2, 50, [50, 31])
    out = NystromAttention(2, 8, num_landmarks=m, conv_kernel=0)(q, k, v, mask)
    ref = dense_softmax_attention(q, k, v, mask)
    torch.testing.assert_close(out[0], ref[0])
    torch.testing.assert_close(out[1, :, :31], ref[1, :, :31])


@pytest.mark.parametrize("conv_kernel", [0, 35, 4])
@pytest.mark.parametrize("m", [6, 64])
def test_padded_positions_do_not_change_real_outputs(conv_kernel, m):
    q, k, v = qkv(n=45)
    mask = padding_mask(2, 45, [45, 29])
    attn = NystromAttention(2, 8, num_landmarks=m, conv_kernel=conv_kernel)
    out = attn(q, k, v, mask)
    pad = ~mask[:, None, :, None]
    q2, k2, v2 = (torch.where(pad, torch.randn_like(t) * 1e3, t) for t in (q, k, v))
    v2 = torch.where(pad & (torch.rand_like(v) < 0.2), torch.full_like(v, float("inf")), v2)
    k2 = torch.where(pad & (torch.rand_like(k) < 0.2), torch.full_like(k, float("nan")), k2)
    q2 = torch.where(pad & (torch.rand_like(q) < 0.2), torch.full_like(q, float("-inf")), q2)
    out2 = attn(q2, k2, v2, mask)
    real = mask[:, None, :, None].expand_as(out)
    torch.testing.assert_close(out2[real], out[real], rtol=0, atol=1e-12)
    assert torch.isfinite(out2[real]).all()


def test_newton_schulz_converges_per_matrix():
    g = torch.Generator().manual_seed(1)
    a = torch.rand(3, 6, 6, generator=g, dtype=torch.float64) + 6 * torch.eye(6, dtype=torch.float64)
    a = a * torch.tensor([1.0, 1e-3, 1e3], dtype=torch.float64)[:, None, None]  # very different scales
    z = newton_schulz_pinv(a, iterations=12)
    torch.testing.assert_close(z, torch.linalg.inv(a))
    # The start is per matrix: each matrix's iterate is what it would be on its own.
    for i in range(3):
        torch.testing.assert_close(z[i : i + 1], newton_schulz_pinv(a[i : i + 1], iterations=12))


def test_exact_pinv_option():
    q, k, v = qkv(n=40)
    nys = NystromAttention(2, 8, num_landmarks=8, pinv="exact", conv_kernel=0)(q, k, v)
    # Enough Newton-Schulz iterations converge to the same pseudo-inverse on these well-posed A.
    many = NystromAttention(2, 8, num_landmarks=8, pinv_iterations=60, conv_kernel=0)(q * 0.3, k * 0.3, v)
    exact_small = NystromAttention(2, 8, num_landmarks=8, pinv="exact", conv_kernel=0)(q * 0.3, k * 0.3, v)
    torch.testing.assert_close(many, exact_small, rtol=1e-6, atol=1e-8)
    assert torch.isfinite(nys).all()


def test_conv_skip_is_depthwise_conv_along_sequence():
    q, k, v = qkv(n=40)
    attn = NystromAttention(2, 8, num_landmarks=8, conv_kernel=5)
    base = NystromAttention(2, 8, num_landmarks=8, conv_kernel=0)
    w = attn.skip.weight  # (heads, 1, kernel)
    vp = torch.nn.functional.pad(v, (0, 0, 2, 2))
    conv = sum(w[:, 0, t].to(v.dtype)[None, :, None, None] * vp[:, :, t : t + 40] for t in range(5))
    torch.testing.assert_close(attn(q, k, v), base(q, k, v) + conv)


def test_bf16_autocast_keeps_fp32_inside_and_gradients_finite():
    q, k, v = qkv(n=100, dtype=torch.float32, requires_grad=True)
    attn = NystromAttention(2, 8, num_landmarks=16)
    mask = padding_mask(2, 100, [100, 70])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attn(q.bfloat16(), k.bfloat16(), v.bfloat16(), mask)
    assert out.dtype == torch.bfloat16
    out.float().square().sum().backward()
    for t in (q, k, v, attn.skip.weight):
        assert torch.isfinite(t.grad).all()
    # The attention part is computed in fp32 from the bf16 inputs: only the final rounding differs.
    ref = NystromAttention(2, 8, num_landmarks=16, conv_kernel=0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        core = ref(q.bfloat16(), k.bfloat16(), v.bfloat16(), mask)
    core32 = ref(q.bfloat16().float(), k.bfloat16().float(), v.bfloat16().float(), mask)
    torch.testing.assert_close(core.float(), core32.bfloat16().float())


@pytest.mark.parametrize(
    ("knobs", "key"),
    [
        ({"num_landmarks": 0}, "attention.num_landmarks"),
        ({"pinv": "svd"}, "attention.pinv must be one of newton|exact"),
        ({"pinv_iterations": 0}, "attention.pinv_iterations"),
        ({"conv_kernel": -1}, "attention.conv_kernel"),
        ({"conv_impl": "fft"}, "attention.conv_impl must be one of gemm|native"),
    ],
)
def test_bad_knobs_name_the_config_key(knobs, key):
    with pytest.raises(ValueError, match=key):
        NystromAttention(2, 8, **knobs)


@pytest.mark.parametrize("kernel", [1, 4, 35, 80])
@pytest.mark.parametrize("n", [7, 32, 100])
def test_conv_skip_matches_depthwise_conv1d_with_gradients(kernel, n):
    """The block-Toeplitz GEMM form equals a depthwise conv1d with zero 'same' padding, forward and
    backward (the formulation PyTorch's convolution would compute)."""
    from attention.nystrom import ValueConvSkip

    skip = ValueConvSkip(2, kernel).double()
    v = torch.randn(3, 2, n, 5, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(3, 2, n, 5, dtype=torch.float64)
    (skip(v) * grad).sum().backward()
    ours = skip(v).detach(), v.grad.clone(), skip.weight.grad.clone()

    v.grad, skip.weight.grad = None, None
    x = v.transpose(-1, -2).reshape(3, 2 * 5, n)
    weight = skip.weight.repeat_interleave(5, dim=0)
    total = kernel - 1
    ref = torch.nn.functional.conv1d(
        torch.nn.functional.pad(x, (total // 2, total - total // 2)), weight, groups=10
    )
    ref = ref.reshape(3, 2, 5, n).transpose(-1, -2)
    (ref * grad).sum().backward()
    torch.testing.assert_close(ours[0], ref.detach())
    torch.testing.assert_close(ours[1], v.grad)
    torch.testing.assert_close(ours[2], skip.weight.grad)


@pytest.mark.parametrize("kernel", [1, 4, 35, 80])
@pytest.mark.parametrize("n", [7, 100])
def test_native_conv_skip_equals_the_gemm_form_with_gradients(kernel, n):
    """``conv_impl: native`` (PyTorch's grouped convolution, for GPUs) computes what the default GEMM
    form computes, forward and backward, also for even kernels and kernels longer than the sequence."""
    from attention.nystrom import ValueConvSkip

    gemm = ValueConvSkip(2, kernel).double()
    native = ValueConvSkip(2, kernel, impl="native").double()
    native.load_state_dict(gemm.state_dict())
    v = torch.randn(3, 2, n, 5, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(3, 2, n, 5, dtype=torch.float64)
    results = []
    for skip in (gemm, native):
        v.grad = None
        out = skip(v)
        (out * grad).sum().backward()
        results.append((out.detach(), v.grad.clone(), skip.weight.grad.clone()))
    for ours, theirs in zip(*results, strict=True):
        torch.testing.assert_close(theirs, ours)


def test_native_conv_skip_keeps_padding_out_of_real_outputs():
    q, k, v = qkv(n=45)
    mask = padding_mask(2, 45, [45, 29])
    gemm = NystromAttention(2, 8, num_landmarks=6, conv_kernel=35)
    native = NystromAttention(2, 8, num_landmarks=6, conv_kernel=35, conv_impl="native")
    native.load_state_dict(gemm.state_dict())
    v2 = torch.where(~mask[:, None, :, None], torch.full_like(v, float("inf")), v)
    real = mask[:, None, :, None].expand_as(v)
    torch.testing.assert_close(native(q, k, v2, mask)[real], gemm(q, k, v, mask)[real])
