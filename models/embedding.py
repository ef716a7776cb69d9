from __future__ import annotations

import torch
from torch import nn

from attention.dropout import Dropout


def init_embedding(table: nn.Embedding, std: float | None) -> None:
    """N(0, std^2) entries (the published LRA code uses 0.02); None keeps PyTorch's N(0, 1)."""
    if std is not None:
        nn.init.normal_(table.weight, std=std)


class TokenEmbedding(nn.Module):
    """Token ids (batch, n) -> vectors, plus learned absolute positions."""

    def __init__(
        self, vocab_size: int, dim: int, max_len: int, *, dropout: float = 0.0, init_std: float | None = None
    ):
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, dim)
        self.positions = nn.Embedding(max_len, dim)
        init_embedding(self.tokens, init_std)
        init_embedding(self.positions, init_std)
        self.dropout = Dropout(dropout)
        self.max_len = max_len
        self.vocab_size = vocab_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[1]
        if n > self.max_len:
            raise ValueError(f"sequence of length {n} exceeds model.max_len={self.max_len}")
        pos = torch.arange(n, device=x.device)
        return self.dropout(self.tokens(x) + self.positions(pos))


class PixelLinearEmbedding(nn.Module):
    """Pixel intensities (batch, n) in 0..255 -> a linear projection of the normalised value.

    The alternative to treating each of the 256 grey levels as its own token.
    """

    def __init__(
        self, vocab_size: int, dim: int, max_len: int, *, dropout: float = 0.0, init_std: float | None = None
    ):
        super().__init__()
        self.proj = nn.Linear(1, dim)
        self.positions = nn.Embedding(max_len, dim)
        init_embedding(self.positions, init_std)
        self.dropout = Dropout(dropout)
        self.max_len = max_len
        self.scale = float(max(vocab_size - 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[1]
        if n > self.max_len:
            raise ValueError(f"sequence of length {n} exceeds model.max_len={self.max_len}")
        values = (x.float() / self.scale).unsqueeze(-1)
        pos = torch.arange(n, device=x.device)
        return self.dropout(self.proj(values) + self.positions(pos))


EMBEDDINGS = {"token": TokenEmbedding, "pixel_linear": PixelLinearEmbedding}
