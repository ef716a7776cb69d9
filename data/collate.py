from __future__ import annotations

from collections.abc import Sequence

import torch


def pad_sequences(seqs: Sequence[torch.Tensor], pad_value: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad 1-D sequences to the longest in the batch; the mask comes from lengths, never from values
    (a black pixel or token id 0 is data, not padding)."""
    lengths = torch.tensor([len(s) for s in seqs])
    n = int(lengths.max()) if len(seqs) else 0
    out = torch.full((len(seqs), n), pad_value, dtype=seqs[0].dtype if seqs else torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s
    mask = torch.arange(n)[None, :] < lengths[:, None]
    return out, mask


def pad_collate(batch: Sequence[dict]) -> dict[str, torch.Tensor]:
    """Collate examples ``{"input_ids": 1-D tensor, "label": int, ["input_ids2": 1-D tensor]}``."""
    out: dict[str, torch.Tensor] = {}
    out["input_ids"], out["mask"] = pad_sequences([ex["input_ids"] for ex in batch])
    if "input_ids2" in batch[0]:
        out["input_ids2"], out["mask2"] = pad_sequences([ex["input_ids2"] for ex in batch])
    out["label"] = torch.tensor([int(ex["label"]) for ex in batch], dtype=torch.long)
    return out
