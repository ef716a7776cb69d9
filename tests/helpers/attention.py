"""Checks and settings shared by the attention test files."""

from __future__ import annotations

import torch

from lra.registry import attention_names, has_knob


def lengths_mask(n, lengths):
    return torch.arange(n)[None, :] < torch.tensor(lengths)[:, None]


def seeded_call(module, *args, seed=0):
    torch.manual_seed(seed)  # variants that sample (keys, features) draw the same numbers each call
    return module(*args)


def assert_padding_never_reaches_real_outputs(module, q, k, v, mask):
    """Padded q, k, v replaced by huge values and some inf and NaN change no real output (float64
    inputs)."""
    out = seeded_call(module, q, k, v, mask)
    pad = ~mask[:, None, :, None]
    q2, k2, v2 = (torch.where(pad, torch.randn_like(t) * 1e3, t) for t in (q, k, v))
    v2 = torch.where(pad & (torch.rand_like(v) < 0.3), torch.full_like(v, float("inf")), v2)
    k2 = torch.where(pad & (torch.rand_like(k) < 0.2), torch.full_like(k, float("nan")), k2)
    q2 = torch.where(pad & (torch.rand_like(q) < 0.2), torch.full_like(q, float("-inf")), q2)
    q2 = torch.where(pad & (torch.rand_like(q) < 0.1), torch.full_like(q, float("nan")), q2)
    out2 = seeded_call(module, q2, k2, v2, mask)
    real = mask[:, None, :, None].expand_as(out)
    assert torch.isfinite(out2[real]).all()
    torch.testing.assert_close(out2[real], out[real], rtol=0, atol=1e-10)


# Spectral shift's estimators of the shift, as knobs (every one is tested in each form).
ESTIMATOR_KNOBS = [
    {"delta": "trace", "normaliser": "free"},
    {"delta": "trace", "normaliser": "moments"},
    {"delta": "fixed", "fixed_delta": 0.3},
]


def registry_variants() -> list[str]:
    """Every attention config of the registry (conf/attention/), and, where a config has the knob, its
    conv skip as PyTorch's grouped convolution (``conv_impl=native``, the form meant for GPUs)."""
    names = attention_names()
    return [*names, *(f"{n}:conv_impl=native" for n in names if has_knob(n, "conv_impl"))]
