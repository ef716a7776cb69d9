"""How the final layer's outputs become one vector per sequence (``model.pooling``).

Every pooling takes the normalised outputs (batch, n, dim), the padding mask (batch, n) and the
model's ``max_len``, and returns (batch, dim). ``n`` is the batch's padded length, which depends on
the batching; none of these results does.
"""

from __future__ import annotations

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None, max_len: int) -> torch.Tensor:
    """Mean over real tokens only: the pooled vector does not depend on the sequence's length."""
    if mask is None:
        return x.mean(dim=1)
    w = mask.to(x.dtype).unsqueeze(-1)
    return (x * w).sum(dim=1) / w.sum(dim=1).clamp_min(1.0)


def padded_mean(x: torch.Tensor, mask: torch.Tensor | None, max_len: int) -> torch.Tensor:
    """Mean over all ``max_len`` positions with padding zeroed, as the Nyströmformer LRA code pools.

    That code pads every sequence to the task's fixed length, multiplies the final LayerNorm's output
    by the mask and averages over every position, so the pooled vector is the real tokens' mean
    scaled by length / max_len: the head also sees how long the sequence is. Dividing the masked sum
    by ``max_len`` gives the same vector whatever the batch is padded to.
    """
    if mask is not None:
        x = x * mask.to(x.dtype).unsqueeze(-1)
    return x.sum(dim=1) / max_len


def first_token(x: torch.Tensor, mask: torch.Tensor | None, max_len: int) -> torch.Tensor:
    return x[:, 0]


# mean: today's default; padded_mean: the Nyströmformer LRA code's; cls: the first token (LRA's code).
POOLINGS = {"mean": masked_mean, "padded_mean": padded_mean, "cls": first_token}
