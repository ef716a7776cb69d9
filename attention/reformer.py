"""Reformer attention (Kitaev et al., 2020): LSH-bucketed attention with shared query-key vectors.

Shared QK: the core receives q and k from two projections and uses their mean ``s = (q + k) / 2`` as
the one query-key vector (a shared projection ``W_qk = (W_q + W_k) / 2``, so both projections train).
Keys are normalised, ``s_j / |s_j|``, and logits are ``s_i . s_j / (|s_j| sqrt(d))``.

For each of ``num_hashes`` rounds r, tokens are hashed by a random rotation, ``h(x) = argmax([xR; -xR])``
with R (d x nb/2) Gaussian and ``nb = 2 ceil(L / (2 c))`` buckets for a sequence of L real tokens
(c = ``bucket_size``), sorted by (bucket, position) and cut into chunks of c; a query attends to the
keys of its own bucket within its chunk and the chunk before. A token attends to itself only when no
other key is available (its logit is -1e5, the paper's mask value). The rounds are combined with the
paper's duplicate correction: a key attended in N_ij rounds has its logit lowered by log N_ij in each,
which makes the result exactly softmax over the union of the keys a query attends in any round.

Per-sequence throughout: padded tokens get a bucket that sorts after every real one, chunks start at
the sequence's first sorted token (no wrap-around), and the rotations are hashed from (seed, round,
dimension, column) (:mod:`attention._random`; one seed per forward from torch's global generator), so
a sequence's buckets and chunks are the same alone or padded inside any batch. O(n log n) for the
sorts, O(r n c d) for the attention.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from attention._common import (
    check_int,
    check_probability,
    compute_dtype,
    masked_value,
    real_mask,
    zero_padded,
)
from attention._random import counter_normal, draw_seed
from attention.base import AttentionBase, check_inputs

SELF_LOGIT = -1e5  # the paper's mask value for attending to oneself


def rotations(seed: torch.Tensor, num_hashes: int, dim: int, columns: int, dtype) -> torch.Tensor:
    """(num_hashes, dim, columns) Gaussian rotations; entry (r, i, j) depends on (seed, r, i, j) only."""
    device = seed.device
    r = torch.arange(num_hashes, device=device)[:, None, None]
    i = torch.arange(dim, device=device)[None, :, None]
    j = torch.arange(columns, device=device)[None, None, :]
    return counter_normal(seed, r, i, j, dtype=dtype)


def bucket_counts(mask: torch.Tensor, bucket_size: int) -> torch.Tensor:
    """(b,) half the number of buckets of each sequence: ceil(L / (2c)), at least 1."""
    length = mask.sum(dim=-1)
    return torch.div(length + 2 * bucket_size - 1, 2 * bucket_size, rounding_mode="floor").clamp_min(1)


def hash_buckets(s: torch.Tensor, mask: torch.Tensor, seed: torch.Tensor, num_hashes: int, bucket_size: int):
    """(b, h, R, n) bucket of every token in every round; padded tokens get 2 * columns (sorts last)."""
    b, h, n, d = s.shape
    columns = max(1, -(-n // (2 * bucket_size)))
    half = bucket_counts(mask, bucket_size)  # (b,)
    rotated = torch.einsum("bhnd,rdc->bhrnc", s, rotations(seed, num_hashes, d, columns, s.dtype))
    used = (torch.arange(columns, device=s.device)[None, :] < half[:, None])[:, None, None, None, :]
    neg = torch.full((), float("-inf"), dtype=s.dtype, device=s.device)
    both = torch.cat([torch.where(used, rotated, neg), torch.where(used, -rotated, neg)], dim=-1)
    top = both.argmax(dim=-1)  # (b, h, R, n) in [0, 2 columns)
    bucket = torch.where(top < columns, top, top - columns + half[:, None, None, None])
    return torch.where(mask[:, None, None, :], bucket, 2 * columns)


class ReformerAttention(AttentionBase):
    """Knobs: ``num_hashes`` (rounds), ``bucket_size`` (c: chunk length; about L / c buckets),
    ``dropout`` (on the attention weights, training only)."""

    def __init__(
        self,
        num_heads: int,
        head_dim: int,
        max_len: int | None = None,
        num_hashes: int = 2,
        bucket_size: int = 64,
        dropout: float = 0.1,
    ):
        super().__init__(num_heads, head_dim, max_len)
        check_int(num_hashes, "num_hashes")
        check_int(bucket_size, "bucket_size")
        check_probability(dropout, "dropout")
        self.num_hashes = num_hashes
        self.bucket_size = bucket_size
        self.dropout = dropout

    def extra_repr(self) -> str:
        return f"num_hashes={self.num_hashes}, bucket_size={self.bucket_size}, dropout={self.dropout}"

    def forward(self, q, k, v, key_padding_mask: torch.Tensor | None = None):
        check_inputs(q, k, v, key_padding_mask)
        b, h, n, d = q.shape
        rounds, c = self.num_hashes, self.bucket_size
        seed = draw_seed(q.device)
        dtype = compute_dtype(q.dtype)
        with torch.autocast(device_type=q.device.type, enabled=False):
            mask = real_mask(key_padding_mask, b, n, q.device)
            s = zero_padded((q.to(dtype) + k.to(dtype)) * 0.5, key_padding_mask)
            v32 = zero_padded(v.to(dtype), key_padding_mask)
            num_chunks = -(-n // c)
            pad = num_chunks * c - n
            with torch.no_grad():
                bucket = hash_buckets(s, mask, seed, rounds, c)  # (b, h, R, n)
                position = torch.arange(n, device=q.device)
                order = (bucket * n + position).argsort(dim=-1)  # (b, h, R, n): sorted slot -> position
                rank = torch.empty_like(order).scatter_(-1, order, position.expand_as(order))
                # Sorted slots in chunks; slot n (a sentinel row) fills the last chunk and the chunk
                # "before" the first one.
                qpos = F.pad(order, (0, pad), value=n).view(b, h, rounds, num_chunks, c)
                kpos = torch.cat([F.pad(qpos, (0, 0, 1, 0), value=n)[..., :-1, :], qpos], dim=-1)
                bucket_ext = F.pad(bucket, (0, 1), value=-1)
                qbucket = _take(bucket_ext, qpos)
                kbucket = _take(bucket_ext, kpos)
                kreal = _take(F.pad(mask, (0, 1))[:, None, None].expand(b, h, rounds, n + 1), kpos)
                valid = kreal[..., None, :] & (qbucket[..., :, None] == kbucket[..., None, :])
                self_pair = qpos[..., :, None] == kpos[..., None, :]
                log_count = self._log_duplicates(bucket, rank, qpos, kpos, dtype) if rounds > 1 else None
            keys = s / s.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(dtype).tiny)
            sq = _rows(s * d**-0.5, qpos)  # (b, h, R, NC, c, d)
            sk, sv = _rows(keys, kpos), _rows(v32, kpos)  # (b, h, R, NC, 2c, d)
            logits = sq @ sk.transpose(-1, -2)
            logits = logits.masked_fill(self_pair, SELF_LOGIT)
            if log_count is not None:
                logits = logits - log_count
            logits = logits.masked_fill(~valid, masked_value(dtype))
            lse = logits.logsumexp(dim=-1, keepdim=True)
            weights = torch.exp(logits - lse)
            if self.training and self.dropout > 0:
                weights = F.dropout(weights, self.dropout)
            out = (weights @ sv).view(b, h, rounds, num_chunks * c, d)
            lse = lse.view(b, h, rounds, num_chunks * c)
            # Back to positions: slot rank[i] of each round holds position i.
            out = out.gather(3, rank[..., None].expand(b, h, rounds, n, d))
            lse = lse.gather(3, rank)
            out = (lse.softmax(dim=2)[..., None] * out).sum(dim=2)
        return out.to(v.dtype)

    def _log_duplicates(self, bucket, rank, qpos, kpos, dtype):
        """log N_ij: in how many rounds key j is attended by query i (same bucket, and j's chunk is i's
        or the one before), for every query-key pair of every round's chunks."""
        b, h, rounds, n = bucket.shape
        c = self.bucket_size
        chunk = torch.div(rank, c, rounding_mode="floor")
        # Per position, every round's bucket and chunk; the sentinel row never matches a real one.
        sig_bucket = bucket.transpose(2, 3)  # (b, h, n, R); the sentinel slots' pairs are never valid
        sig_chunk = chunk.transpose(2, 3)
        qb, kb = _rows(sig_bucket, qpos), _rows(sig_bucket, kpos)  # (..., c, R), (..., 2c, R)
        qc, kc = _rows(sig_chunk, qpos), _rows(sig_chunk, kpos)
        count = torch.zeros(qpos.shape + kpos.shape[-1:], dtype=dtype, device=bucket.device)
        for r in range(rounds):
            gap = qc[..., r, None] - kc[..., None, :, r]
            count += ((qb[..., r, None] == kb[..., None, :, r]) & (gap >= 0) & (gap <= 1)).to(dtype)
        return count.clamp_min(1.0).log()


def _take(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x`` (b, h, R, m) at ``index`` (b, h, R, ...): per round, the entries of the given slots."""
    b, h, rounds = index.shape[:3]
    return x.gather(3, index.reshape(b, h, rounds, -1)).view(index.shape)


def _rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows of ``x`` (b, h, n, e) at positions ``index`` (b, h, ...), where ``index == n`` is a zero
    row: (b, h, ..., e)."""
    b, h, n, e = x.shape
    x = F.pad(x, (0, 0, 0, 1))
    flat = index.reshape(b, h, -1)
    return x.gather(2, flat[..., None].expand(b, h, flat.shape[-1], e)).view(*index.shape, e)
