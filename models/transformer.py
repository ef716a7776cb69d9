from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import nn

from models.block import TransformerBlock
from models.embedding import EMBEDDINGS
from models.heads import ClassifierHead
from models.pooling import POOLINGS


class LRATransformer(nn.Module):
    """Encoder + classifier used for every LRA task.

    Task attributes (vocabulary, classes, length, pooling, towers, embedding) arrive as constructor
    arguments from the composed config; ``attention`` is a partial that builds one attention core per
    block given ``num_heads``, ``head_dim`` and ``max_len``. Defaults are the published
    Nyströmformer LRA setting: 2 layers, dim 64, 2 heads, FFN 128, token and position embeddings
    drawn from N(0, 0.02^2), a ReLU MLP head.
    """

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        max_len: int,
        *,
        attention: Callable[..., nn.Module],
        dim: int = 64,
        depth: int = 2,
        num_heads: int = 2,
        ffn_dim: int = 128,
        dropout: float = 0.1,
        pooling: str = "mean",
        two_towers: bool = False,
        embedding: str = "token",
        head_hidden_dim: int | None = None,
        embedding_init_std: float | None = 0.02,
        head_activation: str = "relu",
    ):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"model.pooling={pooling!r} is not one of {sorted(POOLINGS)}")
        if embedding not in EMBEDDINGS:
            raise ValueError(f"model.embedding={embedding!r} is not one of {sorted(EMBEDDINGS)}")
        self.embed = EMBEDDINGS[embedding](
            vocab_size, dim, max_len, dropout=dropout, init_std=embedding_init_std
        )
        self.blocks = nn.ModuleList(
            TransformerBlock(dim, num_heads, ffn_dim, attention=attention, max_len=max_len, dropout=dropout)
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)
        self.pool = POOLINGS[pooling]
        self.max_len = max_len
        self.head = ClassifierHead(
            dim, head_hidden_dim or ffn_dim, num_classes, two_towers=two_towers, activation=head_activation
        )
        self.two_towers = two_towers

    def encode(self, input_ids: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = self.embed(input_ids)
        for block in self.blocks:
            x = block(x, mask)
        return self.pool(self.norm(x), mask, self.max_len)

    def forward(
        self,
        input_ids: torch.Tensor,
        mask: torch.Tensor | None = None,
        input_ids2: torch.Tensor | None = None,
        mask2: torch.Tensor | None = None,
    ) -> torch.Tensor:
        u = self.encode(input_ids, mask)
        v = None
        if self.two_towers:
            if input_ids2 is None:
                raise ValueError("a two-tower model needs both documents (input_ids2 / mask2)")
            v = self.encode(input_ids2, mask2)  # the same weights encode both documents
        return self.head(u, v)

    def named_attention(self) -> Iterator[tuple[str, nn.Module]]:
        """("layer<i>", attention core) pairs, for diagnostics and q/k/v capture."""
        for i, block in enumerate(self.blocks):
            yield f"layer{i}", block.attn.inner
