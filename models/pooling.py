from __future__ import annotations

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over real tokens only: (batch, n, dim), (batch, n) -> (batch, dim)."""
    if mask is None:
        return x.mean(dim=1)
    w = mask.to(x.dtype).unsqueeze(-1)
    return (x * w).sum(dim=1) / w.sum(dim=1).clamp_min(1.0)


def first_token(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return x[:, 0]


POOLINGS = {"mean": masked_mean, "cls": first_token}
