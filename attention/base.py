from __future__ import annotations

import torch
from torch import nn


class AttentionBase(nn.Module):
    """Common shape arguments and the diagnostics slot shared by all variants.

    ``exact``: the variant computes softmax attention exactly (the contract test then compares it with
    a dense reference)."""

    exact = False

    def __init__(self, num_heads: int, head_dim: int, max_len: int | None = None):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.max_len = max_len
        # Tensors from the most recent forward (detached), e.g. {"delta": (heads,)}.
        self.diagnostics: dict[str, torch.Tensor] = {}

    def forward(self, q, k, v, key_padding_mask=None):  # pragma: no cover - interface
        raise NotImplementedError


def check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_padding_mask) -> None:
    if q.dim() != 4 or k.shape != q.shape[:2] + k.shape[2:] or v.shape[:3] != k.shape[:3]:
        raise ValueError(
            f"expected q, k, v of shape (batch, heads, n, head_dim); got {tuple(q.shape)}, "
            f"{tuple(k.shape)}, {tuple(v.shape)}"
        )
    if key_padding_mask is not None:
        if key_padding_mask.dtype != torch.bool or key_padding_mask.shape != (k.shape[0], k.shape[2]):
            raise ValueError(
                "key_padding_mask must be a bool tensor of shape (batch, n) with True at real tokens; "
                f"got {key_padding_mask.dtype} {tuple(key_padding_mask.shape)}"
            )
