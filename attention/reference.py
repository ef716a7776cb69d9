"""The dense softmax reference every approximation is measured against (tests and benchmarks).

``softmax(q kᵀ / √d) v`` with the n × n weights materialised, in the input's dtype (float64 inputs give
a float64 reference). Padded keys get exactly zero weight and their values are zeroed, so whatever the
padding holds (even inf) never reaches a real output; a query with no real key gets NaN, as it should
in a reference. Torch only, like the rest of ``attention/``.
"""

from __future__ import annotations

import torch


def dense_softmax_weights(
    q: torch.Tensor, k: torch.Tensor, key_padding_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """The (batch, heads, n, n) attention weights; ``key_padding_mask`` (batch, n), True = real."""
    logits = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
    if key_padding_mask is not None:
        logits = logits.masked_fill(~key_padding_mask[:, None, None, :], float("-inf"))
    return logits.softmax(dim=-1)


def dense_softmax_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_padding_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Exact attention outputs, (batch, heads, n, head_dim)."""
    if key_padding_mask is not None:
        v = torch.where(key_padding_mask[:, None, :, None], v, v.new_zeros(()))
    return dense_softmax_weights(q, k, key_padding_mask) @ v
