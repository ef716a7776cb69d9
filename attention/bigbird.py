"""BigBird attention (Zaheer et al., 2020), block-sparse: local + global + random blocks (ITC).

The sequence is cut into blocks of ``block_size`` positions. With ``nb`` the number of blocks that
hold real tokens of a sequence:

- global blocks: the first ``ceil(g/2)`` and the last ``floor(g/2)`` of its ``nb`` blocks
  (g = ``num_global_blocks``; g = 2 is BigBird-ITC's first and last block). They attend to every
  real key, and every query attends to them;
- every other query block attends to its own and the two neighbouring blocks, the global blocks, and
  ``num_random_blocks`` (r) random blocks drawn per head and query block, without replacement, among
  the sequence's own blocks that are neither neighbours nor global. Each key block is counted once.

The random blocks are hashed from (seed, head, query block, key block) (:mod:`attention._random`), so
a sequence draws the same blocks alone or padded inside any batch; the seed is drawn from torch's
global generator every training forward, and is the module's fixed ``eval_seed`` in evaluation. O(n (3 + g + r) b d) time and memory (b = block size).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from attention._common import ceil_div, compute_dtype, masked_value, real_mask, zero_padded
from attention._random import counter_uniform, eval_seed, forward_seed
from attention.base import AttentionBase, check_inputs, integer, probability


def real_blocks(mask: torch.Tensor, block_size: int) -> torch.Tensor:
    """(b,) number of blocks up to the last real token of each sequence."""
    n = mask.shape[1]
    last = (mask * torch.arange(1, n + 1, device=mask.device)).amax(dim=-1)
    return torch.div(last + block_size - 1, block_size, rounding_mode="floor")


def global_blocks(nb: torch.Tensor, num_global: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(b, g) indices of the global blocks and whether each is a valid, first occurrence."""
    first = ceil_div(num_global, 2)
    last = num_global // 2
    device = nb.device
    head = torch.arange(first, device=device).expand(nb.shape[0], first)
    tail = nb[:, None] - last + torch.arange(last, device=device)[None, :]
    blocks = torch.cat([head, tail], dim=1)
    valid = (blocks >= 0) & (blocks < nb[:, None])
    earlier = blocks[:, :, None] == blocks[:, None, :]  # (b, g, g): [i, j] block i equals block j
    earlier = earlier & torch.ones(num_global, num_global, dtype=torch.bool, device=device).tril(-1)
    valid = valid & ~(earlier & valid[:, None, :]).any(dim=-1)
    return blocks, valid


def random_blocks(
    seed: torch.Tensor, nb: torch.Tensor, heads: int, num_blocks: int, count: int, excluded: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(b, h, NB, r) random key blocks per query block and whether each is valid: the r candidates
    with the highest hashed score; candidates are blocks < nb not ``excluded`` (b, NB, NB)."""
    device = nb.device
    blocks = torch.arange(num_blocks, device=device)
    score = counter_uniform(
        seed, torch.arange(heads, device=device)[:, None, None], blocks[None, :, None], blocks[None, None, :]
    )  # (h, NB, NB): depends on (head, query block, key block) only, not on the padded length
    candidate = (blocks[None, None, :] < nb[:, None, None]) & ~excluded  # (b, NB, NB)
    score = torch.where(candidate[:, None], score[None], torch.full((), -1.0, device=device))
    top = score.topk(min(count, num_blocks), dim=-1)
    return top.indices, top.values >= 0


class BigBirdAttention(AttentionBase):
    """Knobs: ``block_size``, ``num_random_blocks`` (r), ``num_global_blocks`` (g), ``dropout`` (on
    the attention weights, training only)."""

    knobs = {
        "block_size": integer(64),  # as the Skyformer authors' LRA runs
        # random key blocks per query block and head, redrawn every forward
        "num_random_blocks": integer(3, minimum=0),
        # first ceil(g/2) and last floor(g/2) blocks of each sequence are global
        "num_global_blocks": integer(2, minimum=0),
        "dropout": probability(0.1),  # on the attention weights, as softmax
    }

    def __init__(self, num_heads: int, head_dim: int, max_len: int | None = None, **settings):
        super().__init__(num_heads, head_dim, max_len, **settings)
        self.register_buffer("eval_seed", eval_seed())  # the random draws in evaluation mode

    def key_blocks(self, mask: torch.Tensor, num_blocks: int, seed: torch.Tensor):
        """The key blocks of every query block: (b, h, NB, K) indices, (b, h, NB, K) validity, and the
        global blocks (b, g) with their validity."""
        b = mask.shape[0]
        h, g, r = self.num_heads, self.num_global_blocks, self.num_random_blocks
        device = mask.device
        nb = real_blocks(mask, self.block_size)
        blocks = torch.arange(num_blocks, device=device)
        window = blocks[:, None] + torch.arange(-1, 2, device=device)[None, :]  # (NB, 3)
        window_valid = (window >= 0) & (window < nb[:, None, None])  # (b, NB, 3)
        index = [window[None, None].expand(b, h, num_blocks, 3)]
        valid = [window_valid[:, None].expand(b, h, num_blocks, 3)]
        excluded = (blocks[None, :] - blocks[:, None]).abs() <= 1  # (NB, NB) neighbours
        excluded = excluded[None].expand(b, num_blocks, num_blocks)
        gblocks = torch.zeros(b, 0, dtype=torch.long, device=device)
        gvalid = torch.zeros(b, 0, dtype=torch.bool, device=device)
        if g > 0:
            gblocks, gvalid = global_blocks(nb, g)
            in_window = (gblocks[:, None, :] - blocks[None, :, None]).abs() <= 1  # (b, NB, g)
            index.append(gblocks[:, None, None, :].expand(b, h, num_blocks, g))
            valid.append((gvalid[:, None, :] & ~in_window)[:, None].expand(b, h, num_blocks, g))
            is_global = torch.zeros(b, num_blocks + 1, dtype=torch.bool, device=device)
            is_global = is_global.scatter(1, torch.where(gvalid, gblocks, num_blocks), True)[:, :num_blocks]
            excluded = excluded | is_global[:, None, :]
        if r > 0:
            rblocks, rvalid = random_blocks(seed, nb, h, num_blocks, r, excluded)
            index.append(rblocks)
            valid.append(rvalid)
        index = torch.cat(index, dim=-1).clamp(0, num_blocks - 1)
        return index, torch.cat(valid, dim=-1), gblocks, gvalid

    def forward(self, q, k, v, key_padding_mask: torch.Tensor | None = None):
        check_inputs(q, k, v, key_padding_mask)
        b, h, n, d = q.shape
        bs = self.block_size
        num_blocks = ceil_div(n, bs)
        pad = num_blocks * bs - n
        seed = forward_seed(self, q.device)
        dtype = compute_dtype(q.dtype)
        with torch.autocast(device_type=q.device.type, enabled=False):
            mask = real_mask(key_padding_mask, b, n, q.device)
            q32, k32, v32 = (zero_padded(t.to(dtype), key_padding_mask) for t in (q, k, v))
            q32 = q32 * d**-0.5
            index, valid, gblocks, gvalid = self.key_blocks(mask, num_blocks, seed)
            kk = index.shape[-1]
            flat = index.reshape(b, h, num_blocks * kk)

            def gather_blocks(x):  # (b, h, n, d) -> (b, h, NB, K bs, d)
                x = F.pad(x, (0, 0, 0, pad)).reshape(b, h, num_blocks, bs * d)
                x = x.gather(2, flat[..., None].expand(b, h, num_blocks * kk, bs * d))
                return x.view(b, h, num_blocks, kk * bs, d)

            keys, values = gather_blocks(k32), gather_blocks(v32)
            mask_blocks = F.pad(mask, (0, pad)).reshape(b, 1, num_blocks, bs).expand(b, h, num_blocks, bs)
            key_real = mask_blocks.gather(2, flat[..., None].expand(b, h, num_blocks * kk, bs))
            usable = key_real.view(b, h, num_blocks, kk, bs) & valid[..., None]
            usable = usable.view(b, h, num_blocks, 1, kk * bs)
            queries = F.pad(q32, (0, 0, 0, pad)).reshape(b, h, num_blocks, bs, d)
            logits = (queries @ keys.transpose(-1, -2)).masked_fill_(~usable, masked_value(dtype))
            out = (self.drop(logits.softmax(dim=-1)) @ values).view(b, h, num_blocks, bs * d)
            if gblocks.shape[1] > 0:
                out = self._global_rows(out, queries, k32, v32, mask, gblocks.clamp(0, num_blocks - 1))
            out = out.view(b, h, num_blocks * bs, d)[:, :, :n]
        return out.to(v.dtype)

    def _global_rows(self, out, queries, k, v, mask, gblocks):
        """Replace the rows of the global query blocks by attention over every real key."""
        b, h, num_blocks, bs, d = queries.shape
        g = gblocks.shape[1]
        index = gblocks[:, None, :, None].expand(b, h, g, bs * d)
        qg = queries.reshape(b, h, num_blocks, bs * d).gather(2, index).view(b, h, g * bs, d)
        logits = (qg @ k.transpose(-1, -2)).masked_fill_(~mask[:, None, None, :], masked_value(qg.dtype))
        rows = (self.drop(logits.softmax(dim=-1)) @ v).view(b, h, g, bs * d)
        # A block listed twice (a sequence with fewer than g blocks) gets the same rows twice.
        return out.scatter(2, index, rows)
