from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from attention.dropout import Dropout


class _SplitHeads(torch.autograd.Function):
    """``(b, n, 3 h d) -> q, k, v``, each a contiguous ``(b, h, n, d)``.

    The same values as ``view(b, n, 3, h, d).permute(2, 0, 3, 1, 4)`` unpacked, but autograd's
    backward of that unpacking stacks the three gradients (a cat) and then copies the stack into the
    projection's layout: two full passes, the first the largest single copy of a Nyström ListOps
    step. Here backward writes each gradient straight into its place (one pass), and forward hands
    the attention contiguous heads, so its GEMMs need no copies of their own.
    """

    @staticmethod
    def forward(ctx, qkv: torch.Tensor, heads: int):
        b, n, width = qkv.shape
        parts = qkv.view(b, n, 3, heads, width // (3 * heads))
        ctx.parts_shape = parts.shape
        return tuple(parts[:, :, i].transpose(1, 2).contiguous() for i in range(3))

    @staticmethod
    def backward(ctx, *grads):
        b, n, three, heads, d = ctx.parts_shape
        ref = next(g for g in grads if g is not None)
        grad = ref.new_empty(ctx.parts_shape)
        for i, g in enumerate(grads):
            if g is None:
                grad[:, :, i].zero_()
            else:
                grad[:, :, i].copy_(g.transpose(1, 2))
        return grad.view(b, n, three * heads * d), None


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
        q, k, v = _SplitHeads.apply(self.qkv(x), self.num_heads)
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
