"""The band of ``X Y^T`` around the diagonal, ``x_i . y_j`` for ``|i - j| <= w``, without forming it.

Used by the normalisers (each row's ``2 w + 1`` exact logits, :mod:`attention.spectral_shift.delta`)
and by the band check (the approximant's band, :mod:`attention.spectral_shift.band_check`).
"""

from __future__ import annotations

import torch

from attention._common import ceil_div


def band_rows(window: int) -> int:
    """Rows per block of :func:`block_band`: ``2 w``, but at least 32, below which the blocks' GEMMs
    are too small to run at the machine's rate (8 x 16 products ran at a third of 32 x 40's)."""
    return max(2 * window, 32)


def band_products(x: torch.Tensor, y: torch.Tensor, window: int) -> torch.Tensor:
    """``x_i . y_j`` for the ``2 w + 1`` positions ``j = i + o``, ``|o| <= w``: (b, h, n, 2w + 1), column
    ``w`` is ``j = i``; entries whose ``j`` falls outside the sequence are meaningless (see
    :func:`band_mask`). ``x`` and ``y`` are (b, h, n, c).

    Blocks of ``R`` rows of ``x`` (:func:`band_rows`) against the ``R + 2 w`` rows of ``y`` from ``w``
    before the block to ``w`` after it: batched GEMMs of (R x c) by (c x (R + 2w)), O(n (R + 2w) c),
    nothing n x n. Each row's band is then a diagonal strip of its block's products, read out in place
    by a view whose rows step one column on.
    """
    if window == 0:
        return torch.einsum("bhnc,bhnc->bhn", x, y)[..., None]
    b, h, n, c = x.shape
    rows = band_rows(window)
    blocks = ceil_div(n, rows)
    size = blocks * rows
    x_blocks = torch.nn.functional.pad(x, (0, 0, 0, size - n)).view(b, h, blocks, rows, c)
    # Block t's keys are rows [t R - w, t R + R + w) of y: overlapping windows of one padded copy.
    cols_y = torch.nn.functional.pad(y, (0, 0, window, size - n + window))
    y_blocks = cols_y.unfold(2, rows + 2 * window, rows).transpose(-1, -2)  # (b, h, blocks, R + 2w, c)
    return block_band(x_blocks, y_blocks, window).reshape(b, h, size, 2 * window + 1)[:, :, :n]


def block_band(x_blocks: torch.Tensor, y_blocks: torch.Tensor, window: int) -> torch.Tensor:
    """Blocks of ``R`` rows of x (..., R, c) against the ``R + 2 w`` rows of y (..., R + 2w, c) from ``w``
    before the block to ``w`` after it: (..., R, 2w + 1), row r's products with y rows r .. r + 2w."""
    rows, width = x_blocks.shape[-2], 2 * window + 1
    cols = rows + 2 * window
    products = (x_blocks @ y_blocks.transpose(-1, -2)).contiguous()  # (..., R, R + 2w)
    # Row r of a block needs columns r .. r + 2w, i.e. entries r (R + 2w + 1) + o of the block: a
    # strided view with a row stride of R + 2w + 1 reads the band in place (the last row ends at the
    # block's end). as_strided keeps the tensor's own storage offset when given none (asking for it
    # would return a Python int, which breaks a compiled graph).
    lead, lead_strides = products.shape[:-2], products.stride()[:-2]
    return products.as_strided((*lead, rows, width), (*lead_strides, cols + 1, 1))


def band_mask(mask: torch.Tensor, window: int) -> torch.Tensor:
    """(b, n, 2w + 1): whether position ``j = i + o`` of row i's band exists and is a real token."""
    n = mask.shape[-1]
    width = 2 * window + 1
    offsets = torch.arange(-window, window + 1, device=mask.device)
    pos = torch.arange(n, device=mask.device)[:, None] + offsets[None, :]  # (n, 2w + 1)
    inside = (pos >= 0) & (pos < n)
    real = mask.gather(1, pos.clamp(0, n - 1).flatten()[None].expand(mask.shape[0], -1)).view(-1, n, width)
    return real & inside
