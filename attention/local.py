"""Local (sliding-window) attention, the Longformer / BigBird local pattern, with optional global
tokens.

Query i attends to the keys j with |i - j| <= ``window`` (exact softmax restricted to that band, over
real keys only). With ``num_global = g > 0`` the first g *real* tokens of every sequence are global:
every query also attends to them, and they attend to every real key (Longformer's symmetric global
attention; a global key inside a query's window is counted once).

Computed in blocks of ``window`` positions: each block of queries meets the keys of its own and the
two neighbouring blocks, O(3 n w d) time and memory; when n <= 3w a dense banded n x n softmax is
cheaper and is used instead. Windows are over positions (padding at the end, as the loaders pad), so
a sequence's output does not depend on how far the batch is padded.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from attention._common import ceil_div, compute_dtype, masked_value, real_mask, zero_padded
from attention.base import AttentionBase, check_inputs, integer, probability


def first_real_positions(mask: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions of the first ``count`` real tokens of every sequence, (b, count), and whether each
    exists (a sequence may have fewer). A stable sort puts real positions first, in order."""
    count = min(count, mask.shape[1])
    order = torch.sort((~mask).to(torch.uint8), dim=-1, stable=True).indices[:, :count]
    return order, mask.gather(1, order)


class LocalAttention(AttentionBase):
    """Knobs: ``window`` (w: keys within w positions on each side), ``num_global`` (g: the first g real
    tokens are global), ``dropout`` (on the attention weights, training only)."""

    knobs = {
        # keys within this many positions on each side (the LRA Longformer's 512-token window)
        "window": integer(256),
        # the first num_global real tokens attend to and are attended by every token
        "num_global": integer(0, minimum=0),
        "dropout": probability(0.1),  # on the attention weights, as softmax
    }

    def forward(self, q, k, v, key_padding_mask: torch.Tensor | None = None):
        check_inputs(q, k, v, key_padding_mask)
        b, h, n, d = q.shape
        mask = real_mask(key_padding_mask, b, n, q.device)
        g = min(self.num_global, n)
        is_global = mask & (mask.cumsum(dim=-1) - 1 < g)  # (b, n): the first g real tokens
        dtype = compute_dtype(q.dtype)
        with torch.autocast(device_type=q.device.type, enabled=False):
            q32, k32, v32 = (zero_padded(t.to(dtype), key_padding_mask) for t in (q, k, v))
            q32 = q32 * d**-0.5
            if n <= 3 * self.window:
                out = self._dense(q32, k32, v32, mask, is_global)
            else:
                out = self._blocked(q32, k32, v32, mask, is_global, g)
        return out.to(v.dtype)

    def _dense(self, q, k, v, mask, is_global):
        n = q.shape[-2]
        pos = torch.arange(n, device=q.device)
        band = (pos[:, None] - pos[None, :]).abs() <= self.window  # (n, n)
        allowed = band[None] | is_global[:, None, :] | is_global[:, :, None]  # (b, n, n)
        allowed = allowed & mask[:, None, :]
        logits = (q @ k.transpose(-1, -2)).masked_fill_(~allowed[:, None], masked_value(q.dtype))
        return self.drop(logits.softmax(dim=-1)) @ v

    def _blocked(self, q, k, v, mask, is_global, g):
        b, h, n, d = q.shape
        c = self.window
        nb = ceil_div(n, c)
        pad = nb * c - n

        def blocks_with_halo(x):  # (b, h, n, d) -> (b, h, nb, 3c, d): each block with its neighbours
            x = F.pad(x, (0, 0, c, pad + c)).reshape(b, h, nb + 2, c, d)
            return torch.cat([x[:, :, :-2], x[:, :, 1:-1], x[:, :, 2:]], dim=3)

        qb = F.pad(q, (0, 0, 0, pad)).reshape(b, h, nb, c, d)
        kw, vw = blocks_with_halo(k), blocks_with_halo(v)
        # Keys a window may use: real, inside the band, and not global (global keys come separately).
        usable = F.pad(mask & ~is_global, (c, pad + c)).reshape(b, nb + 2, c)
        usable = torch.cat([usable[:, :-2], usable[:, 1:-1], usable[:, 2:]], dim=2)  # (b, nb, 3c)
        offset = torch.arange(3 * c, device=q.device)[None, :] - c - torch.arange(c, device=q.device)[:, None]
        band = offset.abs() <= c  # (c, 3c)
        valid = band[None, None] & usable[:, :, None, :]  # (b, nb, c, 3c)
        logits = (qb @ kw.transpose(-1, -2)).masked_fill_(~valid[:, None], masked_value(q.dtype))
        if g == 0:
            out = self.drop(logits.softmax(dim=-1)) @ vw
            return out.reshape(b, h, nb * c, d)[:, :, :n]
        order, present = first_real_positions(mask, g)  # (b, g)
        index = order[:, None, :, None].expand(b, h, g, d)
        kg, vg = k.gather(2, index), v.gather(2, index)
        logits_g = qb @ kg[:, :, None].transpose(-1, -2)  # (b, h, nb, c, g)
        logits_g = logits_g.masked_fill(~present[:, None, None, None, :], masked_value(q.dtype))
        weights = self.drop(torch.cat([logits, logits_g], dim=-1).softmax(dim=-1))
        out = weights[..., : 3 * c] @ vw + weights[..., 3 * c :] @ vg[:, :, None]
        out = out.reshape(b, h, nb * c, d)[:, :, :n]
        # Global queries attend to every real key.
        qg = q.gather(2, index)
        logits_q = (qg @ k.transpose(-1, -2)).masked_fill_(~mask[:, None, None, :], masked_value(q.dtype))
        out_g = self.drop(logits_q.softmax(dim=-1)) @ v
        return out.scatter(2, index, out_g)
