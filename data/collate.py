from __future__ import annotations

from collections.abc import Sequence

import torch


def pad_sequences(
    seqs: Sequence[torch.Tensor], pad_value: int = 0, multiple: int = 1, limit: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad 1-D sequences to the longest in the batch, rounded up to a multiple of ``multiple`` but
    not beyond ``limit`` (the model's length); the mask comes from lengths, never from values (a black
    pixel or token id 0 is data, not padding)."""
    lengths = torch.tensor([len(s) for s in seqs])
    n = int(lengths.max()) if len(seqs) else 0
    rounded = -(-n // multiple) * multiple
    n = max(n, min(rounded, limit)) if limit is not None else rounded
    out = torch.full((len(seqs), n), pad_value, dtype=seqs[0].dtype if seqs else torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s
    mask = torch.arange(n)[None, :] < lengths[:, None]
    return out, mask


def pad_collate(
    batch: Sequence[dict], multiple: int = 1, limit: int | None = None
) -> dict[str, torch.Tensor]:
    """Collate examples ``{"input_ids": 1-D tensor, "label": int, ["input_ids2": 1-D tensor]}``.

    ``multiple`` > 1 rounds every batch's padded length up to a multiple of it (``data.pad_to_multiple``):
    with a few distinct tensor shapes the allocator reuses freed blocks instead of fragmenting its
    heap, and a CPU run's memory stays flat (docs/results.md). Every attention's real outputs are
    independent of the padding (tested), so predictions do not change."""
    out: dict[str, torch.Tensor] = {}
    out["input_ids"], out["mask"] = pad_sequences([ex["input_ids"] for ex in batch], 0, multiple, limit)
    if "input_ids2" in batch[0]:
        out["input_ids2"], out["mask2"] = pad_sequences(
            [ex["input_ids2"] for ex in batch], 0, multiple, limit
        )
    out["label"] = torch.tensor([int(ex["label"]) for ex in batch], dtype=torch.long)
    return out
