"""Reformer attention (Kitaev et al., 2020): LSH-bucketed attention with shared query-key vectors.

Shared QK: the core receives q and k from two projections and uses their mean ``s = (q + k) / 2`` as
the one query-key vector (a shared projection ``W_qk = (W_q + W_k) / 2``, so both projections train).
Keys are normalised, ``s_j / |s_j|``, and logits are ``s_i . s_j / (|s_j| sqrt(d))``.

For each of ``num_hashes`` rounds r, tokens are hashed by a random rotation, ``h(x) = argmax([xR; -xR])``
with R (d x nb/2) Gaussian and ``nb = 2 ceil(L / (2 c))`` buckets for a sequence of L real tokens
(c = ``bucket_size``), sorted by (bucket, position) and cut into chunks of c; a query attends to the
keys of its own bucket within its chunk and the chunk before. A token attends to itself only when no
other key is available (the paper's self logit of -1e5). The rounds are combined so that every key a
query attends in any round counts once: the result is exactly softmax over the union of the attended
keys, which is what the paper's duplicate correction (logits lowered by log N_ij) computes; here a
pair already attended in an earlier round is left out of the later ones, and the rounds share one
normaliser (each round's sums are rescaled to the largest row maximum).

Per-sequence throughout: padded tokens get a bucket that sorts after every real one, chunks start at
the sequence's first sorted token (no wrap-around), and the rotations are hashed from (seed, round,
dimension, column) (:mod:`attention._random`; a fresh seed every training forward, the fixed
``eval_seed`` in evaluation), so a sequence's buckets and chunks are the same alone or padded inside any
batch. O(n log n) for the sorts, O(r n c d) for the attention, O(r n^2 d / c) flops (O(n) memory) for
hashing against the n / 2c rotation columns.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from attention._common import ceil_div, compute_dtype, masked_value, real_mask, zero_padded
from attention._random import counter_normal, eval_seed, forward_seed
from attention.base import AttentionBase, check_inputs, integer, probability

SELF_LOGIT = -1e5  # the paper's mask value for attending to oneself (a token alone attends to itself)


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
    """(b, h, R, n) bucket of every token in every round; padded tokens get 2 * columns (sorts last).

    ``argmax([sR; -sR])`` over a sequence's first ``ceil(L / 2c)`` columns of R. R has about n / 2c
    columns, so hashing costs O(n^2 d / c) flops (as the paper's scheme with L / c buckets does); tokens
    are hashed in slices so that its memory stays O(n)."""
    b, h, n, d = s.shape
    columns = max(1, ceil_div(n, 2 * bucket_size))
    half = bucket_counts(mask, bucket_size)[:, None, None, None]  # (b, 1, 1, 1)
    rot = rotations(seed, num_hashes, d, columns, s.dtype)
    unused = torch.arange(columns, device=s.device) >= half[..., None]  # (b, 1, 1, 1, columns)
    step = max(1, 2**24 // (b * h * num_hashes * columns))
    buckets = []
    for start in range(0, n, step):
        rotated = torch.einsum("bhnd,rdc->bhrnc", s[:, :, start : start + step], rot)
        up = rotated.masked_fill(unused, float("-inf")).max(dim=-1)  # best of sR
        down = rotated.masked_fill(unused, float("inf")).min(dim=-1)  # best of -sR
        # argmax over [sR; -sR]: the first half wins ties
        buckets.append(torch.where(up.values >= -down.values, up.indices, down.indices + half))
    bucket = torch.cat(buckets, dim=-1)
    return torch.where(mask[:, None, None, :], bucket, 2 * columns)


class ReformerAttention(AttentionBase):
    """Knobs: ``num_hashes`` (rounds), ``bucket_size`` (c: chunk length; about L / c buckets),
    ``dropout`` (on the attention weights, training only)."""

    knobs = {
        "num_hashes": integer(2),  # hashing rounds (2 in the Nyströmformer and Skyformer authors' LRA runs)
        "bucket_size": integer(64),  # chunk length c; a sequence of L tokens gets 2 ceil(L / 2c) buckets
        "dropout": probability(0.1),  # on the attention weights, as softmax
    }

    def __init__(self, num_heads: int, head_dim: int, max_len: int | None = None, **settings):
        super().__init__(num_heads, head_dim, max_len, **settings)
        self.register_buffer("eval_seed", eval_seed())  # the random draws in evaluation mode

    def forward(self, q, k, v, key_padding_mask: torch.Tensor | None = None):
        check_inputs(q, k, v, key_padding_mask)
        b, h, n, d = q.shape
        rounds, c = self.num_hashes, self.bucket_size
        seed = forward_seed(self, q.device)
        dtype = compute_dtype(q.dtype)
        lowest = masked_value(dtype)
        with torch.autocast(device_type=q.device.type, enabled=False):
            mask = real_mask(key_padding_mask, b, n, q.device)
            s = zero_padded((q.to(dtype) + k.to(dtype)) * 0.5, key_padding_mask)
            v32 = zero_padded(v.to(dtype), key_padding_mask)
            num_chunks = ceil_div(n, c)
            pad = num_chunks * c - n
            with torch.no_grad():
                bucket = hash_buckets(s, mask, seed, rounds, c)  # (b, h, R, n)
                position = torch.arange(n, device=q.device)
                order = (bucket * n + position).argsort(dim=-1)  # (b, h, R, n): sorted slot -> position
                rank = torch.empty_like(order).scatter_(-1, order, position.expand_as(order))
                # Sorted slots in chunks; slot n (a sentinel) fills the last chunk and the chunk "before"
                # the first one.
                qpos = F.pad(order, (0, pad), value=n).view(b, h, rounds, num_chunks, c)
                kpos = torch.cat([F.pad(qpos, (0, 0, 1, 0), value=n)[..., :-1, :], qpos], dim=-1)
                keep = self._attended(bucket, rank, qpos, kpos, num_chunks)  # (b, h, R, NC, c, 2c)
            keys = s / s.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(dtype).tiny)
            sq = _rows(s * d**-0.5, qpos)  # (b, h, R, NC, c, d)
            sk, sv = _rows(keys, kpos), _rows(v32, kpos)  # (b, h, R, NC, 2c, d)
            logits = (sq @ sk.transpose(-1, -2)).masked_fill_(~keep, lowest)
            row_max = logits.detach().amax(dim=-1, keepdim=True)
            weights = torch.exp(logits - row_max)  # unnormalised; every round is normalised together below
            total = weights.sum(dim=-1)
            weights = self.drop(weights)
            out = (weights @ sv).view(b, h, rounds, num_chunks * c, d)
            # Back to positions (slot rank[i] of each round holds position i), then the rounds together:
            # softmax over the union of the keys attended in any round.
            out = out.gather(3, rank[..., None].expand(b, h, rounds, n, d))
            total = total.view(b, h, rounds, num_chunks * c).gather(3, rank)
            row_max = row_max.view(b, h, rounds, num_chunks * c).gather(3, rank)
            top = row_max.amax(dim=2, keepdim=True)
            scale = torch.exp(row_max - top)  # (b, h, R, n)
            out = (scale[..., None] * out).sum(dim=2) / (scale * total).sum(dim=2)[..., None]
            # A token with no other key in its buckets attends to itself (the paper's -1e5 self logit).
            alone = (top.squeeze(2) == lowest)[..., None]
            out = torch.where(alone, v32, out)
        return out.to(v.dtype)

    def _attended(self, bucket, rank, qpos, kpos, num_chunks):
        """Which key of each round's window a query attends, each pair in one round only: key j is
        attended by query i in round r when they share r's bucket and j's chunk is i's or the one
        before; a pair already attended in an earlier round is left out (so every key counts once),
        and so is the token itself (handled after the rounds are combined)."""
        b, h, rounds, n = bucket.shape
        c = self.bucket_size
        chunk = torch.div(rank, c, rounding_mode="floor")
        # code = bucket * stride + chunk: i attends j in a round iff code_i - code_j is 0 or 1.
        stride = num_chunks + 2
        max_bucket = 2 * max(1, ceil_div(n, 2 * c))  # padded tokens' bucket, the largest
        code_dtype = torch.int32 if (max_bucket + 2) * stride < 2**30 else torch.int64
        code = (bucket * stride + chunk).to(code_dtype)
        code = F.pad(code.transpose(2, 3), (0, 0, 0, 1), value=-4 * stride)  # (b, h, n + 1, R); n: sentinel
        q_code, k_code = _rows(code, qpos, pad=False), _rows(code, kpos, pad=False)  # (..., c | 2c, R)

        def attends(r):
            gap = q_code[..., r, None] - k_code[..., None, :, r]
            return (gap >> 1) == 0  # gap in {0, 1}

        keep = []
        for r in range(rounds):
            current = attends(r)[:, :, r]  # the round's own window, at the round's own slots
            for earlier in range(r):
                current = current & ~attends(earlier)[:, :, r]
            keep.append(current)
        keep = torch.stack(keep, dim=2)  # (b, h, R, NC, c, 2c)
        self_pair = F.pad(
            torch.eye(c, dtype=torch.bool, device=bucket.device), (c, 0)
        )  # slot a <-> key c + a
        return keep & ~self_pair


def _rows(x: torch.Tensor, index: torch.Tensor, pad: bool = True) -> torch.Tensor:
    """Rows of ``x`` (b, h, n, e) at positions ``index`` (b, h, ...), where ``index == n`` is a zero
    row (``pad=False``: ``x`` has that row already): (b, h, ..., e)."""
    if pad:
        x = F.pad(x, (0, 0, 0, 1))
    b, h, _, e = x.shape
    flat = index.reshape(b, h, -1)
    return x.gather(2, flat[..., None].expand(b, h, flat.shape[-1], e)).view(*index.shape, e)
