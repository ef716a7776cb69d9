"""Checks and data shared by the attention test files."""

from __future__ import annotations

from pathlib import Path

import torch


def lengths_mask(n, lengths):
    return torch.arange(n)[None, :] < torch.tensor(lengths)[:, None]


def seeded_call(module, *args, seed=0):
    torch.manual_seed(seed)  # variants that sample (keys, features) draw the same numbers each call
    return module(*args)


def assert_padding_never_reaches_real_outputs(module, q, k, v, mask):
    """Padded q, k, v replaced by huge values and some inf and NaN change no real output (float64
    inputs)."""
    out = seeded_call(module, q, k, v, mask)
    pad = ~mask[:, None, :, None]
    q2, k2, v2 = (torch.where(pad, torch.randn_like(t) * 1e3, t) for t in (q, k, v))
    v2 = torch.where(pad & (torch.rand_like(v) < 0.3), torch.full_like(v, float("inf")), v2)
    k2 = torch.where(pad & (torch.rand_like(k) < 0.2), torch.full_like(k, float("nan")), k2)
    q2 = torch.where(pad & (torch.rand_like(q) < 0.2), torch.full_like(q, float("-inf")), q2)
    q2 = torch.where(pad & (torch.rand_like(q) < 0.1), torch.full_like(q, float("nan")), q2)
    out2 = seeded_call(module, q2, k2, v2, mask)
    real = mask[:, None, :, None].expand_as(out)
    assert torch.isfinite(out2[real]).all()
    torch.testing.assert_close(out2[real], out[real], rtol=0, atol=1e-10)


def generated_listops(tmp_path: Path, max_len: int, num_test: int):
    """A set-up ListOps data module on a small generated set whose test lengths span 10..max_len."""
    from data.listops import ListOpsDataModule

    dm = ListOpsDataModule(
        path=str(tmp_path / "release"),
        generated_path=str(tmp_path / "gen"),
        cache_dir=str(tmp_path / "cache"),
        source="generate",
        max_len=max_len,
        generate={
            "num_train": 8,
            "num_val": 8,
            "num_test": num_test,
            "min_length": 10,
            "max_length": max_len,
        },
        workers=1,
    )
    dm.prepare_data()
    dm.setup()
    return dm
