"""The contract every attention config (``conf/attention/*.yaml``, the registry) must satisfy.

Parametrised over the registry, so a new variant is tested by adding its module and its yaml. Each is
built as the benchmarks build it (its defaults, dropout off, few landmarks so that approximations
really approximate at these small lengths).
"""

from __future__ import annotations

import pytest
import torch

from attention.reference import dense_softmax_attention
from lra.registry import attention_names, benchmark_overrides, build_attention
from tests.helpers.attention import assert_padding_never_reaches_real_outputs, lengths_mask, seeded_call

H, D, M = 2, 8, 16


def build(name: str, dtype=torch.float32):
    module = build_attention(name, H, D, max_len=256, **benchmark_overrides(name, landmarks=M))
    return module.to(dtype)


def inputs(b, n, dtype=torch.float32, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return [scale * torch.randn(b, H, n, D, generator=g, dtype=dtype) for _ in range(3)]


call = seeded_call


@pytest.fixture(params=attention_names())
def name(request):
    return request.param


def test_shapes_and_dtype(name):
    q, k, v = inputs(3, 50)
    out = call(build(name), q, k, v, lengths_mask(50, [50, 31, 7]))
    assert out.shape == q.shape and out.dtype == q.dtype


def test_padding_never_reaches_real_outputs(name):
    q, k, v = inputs(2, 45, torch.float64)
    assert_padding_never_reaches_real_outputs(build(name, torch.float64), q, k, v, lengths_mask(45, [45, 29]))


@pytest.mark.parametrize("length", [40, 37, 5])
def test_output_does_not_depend_on_the_batch(name, length):
    module = build(name, torch.float64)
    q, k, v = inputs(3, 120, torch.float64, seed=length, scale=1.5)
    mask = lengths_mask(120, [length, 120, 77])
    batched = call(module, q, k, v, mask)[0, :, :length]
    alone = call(module, q[:1, :, :length], k[:1, :, :length], v[:1, :, :length], None)[0]
    assert ((batched - alone).norm() / alone.norm()).item() <= 1e-5


def test_gradients_are_finite(name):
    module = build(name)
    q, k, v = (t.requires_grad_() for t in inputs(2, 64, scale=2.0))
    call(module, q, k, v, lengths_mask(64, [64, 40])).square().sum().backward()
    for t in (q, k, v, *module.parameters()):
        assert t.grad is None or torch.isfinite(t.grad).all()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))


def test_bf16_autocast(name):
    module = build(name)
    q, k, v = (t.requires_grad_() for t in inputs(2, 64))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = call(module, q.bfloat16(), k.bfloat16(), v.bfloat16(), lengths_mask(64, [64, 33]))
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    out.float().square().sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))


def test_diagnostics_are_detached_tensors(name):
    module = build(name)
    q, k, v = (t.requires_grad_() for t in inputs(2, 64))
    call(module, q, k, v, None)
    assert isinstance(module.diagnostics, dict)
    for key, value in module.diagnostics.items():
        assert isinstance(key, str) and isinstance(value, torch.Tensor)
        assert not value.requires_grad and value.is_floating_point()


def test_exact_where_claimed(name):
    module = build(name, torch.float64)
    if not getattr(module, "exact", False):
        pytest.skip(f"{name} is an approximation")
    q, k, v = inputs(2, 40, torch.float64)
    mask = lengths_mask(40, [40, 23])
    out = call(module, q, k, v, mask)
    real = mask[:, None, :, None].expand_as(out)
    torch.testing.assert_close(out[real], dense_softmax_attention(q, k, v, mask)[real])
