"""Attention variants behind one interface.

Every variant is an ``nn.Module`` constructed as ``Variant(num_heads, head_dim, max_len, **knobs)``
(Hydra supplies the knobs, the backbone the shape arguments) and called as::

    out = attn(q, k, v, key_padding_mask)   # q, k, v: (batch, heads, n, head_dim)
                                             # key_padding_mask: (batch, n) bool, True = real token
                                             # out: (batch, heads, n, head_dim)

Padded positions must never change outputs at real positions. A variant may publish scalar or
per-head tensors from its last forward in ``self.diagnostics`` (a dict); callbacks log them.
This package depends on torch only.
"""

from attention.base import AttentionBase
from attention.bigbird import BigBirdAttention
from attention.linear import LinearAttention
from attention.linformer import LinformerAttention
from attention.local import LocalAttention
from attention.nystrom import NystromAttention
from attention.performer import PerformerAttention
from attention.reformer import ReformerAttention
from attention.skyformer import SkyformerAttention
from attention.softmax import SoftmaxAttention
from attention.spectral_shift import SpectralShiftAttention

__all__ = [
    "AttentionBase",
    "BigBirdAttention",
    "LinearAttention",
    "LinformerAttention",
    "LocalAttention",
    "NystromAttention",
    "PerformerAttention",
    "ReformerAttention",
    "SkyformerAttention",
    "SoftmaxAttention",
    "SpectralShiftAttention",
]
