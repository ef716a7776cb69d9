from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from attention._dropout import Dropout


class MultiHeadSelfAttention(nn.Module):
    """Projections around a pluggable attention core (see the ``attention`` package)."""

    def __init__(self, dim: int, num_heads: int, *, attention: Callable[..., nn.Module], max_len: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"model.dim={dim} is not divisible by model.num_heads={num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.inner = attention(num_heads=num_heads, head_dim=self.head_dim, max_len=max_len)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        y = self.inner(q, k, v, mask)  # (b, heads, n, head_dim)
        return self.out(y.transpose(1, 2).reshape(b, n, -1))


class TransformerBlock(nn.Module):
    """Pre-LayerNorm block: x + attn(LN(x)), then x + FFN(LN(x))."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        ffn_dim: int,
        *,
        attention: Callable[..., nn.Module],
        max_len: int,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = MultiHeadSelfAttention(dim, num_heads, attention=attention, max_len=max_len)
        self.drop1 = Dropout(dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn_dim), nn.GELU(), Dropout(dropout), nn.Linear(ffn_dim, dim)
        )
        self.drop2 = Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.drop1(self.attn(self.norm1(x), mask))
        return x + self.drop2(self.ffn(self.norm2(x)))
