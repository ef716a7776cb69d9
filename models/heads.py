from __future__ import annotations

import torch
from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU}


class ClassifierHead(nn.Module):
    """MLP on a pooled vector (one tower) or on [u, v, u*v, u-v] (two towers, as in AAN retrieval)."""

    def __init__(
        self,
        dim: int,
        hidden_dim: int,
        num_classes: int,
        *,
        two_towers: bool = False,
        activation: str = "relu",
    ):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"model.head_activation={activation!r} is not one of {sorted(ACTIVATIONS)}")
        in_dim = 4 * dim if two_towers else dim
        self.two_towers = two_towers
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden_dim), ACTIVATIONS[activation](), nn.Linear(hidden_dim, num_classes)
        )

    def forward(self, u: torch.Tensor, v: torch.Tensor | None = None) -> torch.Tensor:
        if self.two_towers:
            if v is None:
                raise ValueError("a two-tower head needs both documents (input_ids2 / mask2)")
            u = torch.cat([u, v, u * v, u - v], dim=-1)
        return self.mlp(u)
