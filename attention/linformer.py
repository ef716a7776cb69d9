"""Linformer attention (Wang et al., 2020): learned projections of K and V along the sequence.

    out = softmax(Q (E^T K)^T / sqrt(d)) (F^T V)        E, F: (max_len x k), k = ``proj_len``

so the attention matrix is n x k: O(n k d) time and memory. Padded rows of K and V are zeroed before
projecting, and a sequence of n positions uses the first n rows of E and F: a sequence alone and the
same sequence padded inside a longer batch therefore give the same output (the extra rows multiply
zeros). Position i of every sequence uses row i, as in the paper.

``share_kv: true`` uses one projection for K and V (E = F; the LRA paper's setting), ``per_head:
true`` gives every head its own projections (the paper's default shares them across heads).
E and F are initialised N(0, 1/k) (the JL-style projection of the paper's analysis).
"""

from __future__ import annotations

import torch
from torch import nn

from attention._common import compute_dtype, zero_padded
from attention.base import AttentionBase, check_inputs, flag, integer, probability


class LinformerAttention(AttentionBase):
    """Knobs: ``proj_len`` (k), ``share_kv`` (E = F), ``per_head`` (projections per head),
    ``dropout`` (on the n x k attention weights, training only). Needs ``max_len`` (the rows of E)."""

    knobs = {
        "proj_len": integer(256),  # k, the projected length (256 in the Nyströmformer authors' LRA runs)
        # one projection for K and V (the LRA paper's setting); false: separate E and F
        "share_kv": flag(True),
        # true: projections per head; false: shared across heads (the paper's default)
        "per_head": flag(False),
        "dropout": probability(0.1),  # on the attention weights, as softmax
    }

    def __init__(self, num_heads: int, head_dim: int, max_len: int | None = None, **settings):
        super().__init__(num_heads, head_dim, max_len, **settings)
        if max_len is None:
            raise ValueError("linformer projects along the sequence and needs max_len (model.max_len)")
        shape = (num_heads if self.per_head else 1, max_len, self.proj_len)
        self.proj_k = nn.Parameter(torch.randn(shape) * self.proj_len**-0.5)
        self.proj_v = None if self.share_kv else nn.Parameter(torch.randn(shape) * self.proj_len**-0.5)

    def extra_repr(self) -> str:
        return f"max_len={self.max_len}, {super().extra_repr()}"

    def forward(self, q, k, v, key_padding_mask: torch.Tensor | None = None):
        check_inputs(q, k, v, key_padding_mask)
        n = q.shape[-2]
        if n > self.max_len:
            raise ValueError(f"linformer: sequence of length {n} exceeds max_len={self.max_len}")
        dtype = compute_dtype(q.dtype)
        with torch.autocast(device_type=q.device.type, enabled=False):
            q32 = zero_padded(q.to(dtype), key_padding_mask)
            k32 = zero_padded(k.to(dtype), key_padding_mask)
            v32 = zero_padded(v.to(dtype), key_padding_mask)
            e = self.proj_k[:, :n].to(dtype)  # (1 or h, n, k)
            f = e if self.proj_v is None else self.proj_v[:, :n].to(dtype)
            k_proj = e.transpose(-1, -2) @ k32  # (b, h, k, d)
            v_proj = f.transpose(-1, -2) @ v32
            weights = ((q32 @ k_proj.transpose(-1, -2)) * q.shape[-1] ** -0.5).softmax(dim=-1)
            weights = self.drop(weights)
            out = weights @ v_proj
        return out.to(v.dtype)
