"""The band check of an estimated scalar shift (``delta_check: band``; the ``core`` form, ``trace``
estimator).

``core`` replaces ``pinv(A)`` by ``pinv(A - delta I)``, which changes the whole approximant, not only
its diagonal, and blows up where ``delta`` lands near an eigenvalue of ``A`` (peaked self-attention
with short segments). The estimate cannot see this.

What the layer does know, exactly up to the estimated normaliser, is the band of ``S`` around the
diagonal: the ``2 w + 1`` logits of each row's window (:class:`attention.spectral_shift.delta.SoftmaxRows`).
So ``delta`` is backtracked: of the candidates ``delta, delta/2, delta/4, delta/8, 0`` each batch item
and head keeps the one whose approximant ``X Y^T + delta I`` (``X = F pinv(A - delta I)``, ``Y = B^T``)
matches that band best in squared error over real rows, plus the least error its rows must have off
the band (S's off-band entries are non-negative and sum to what the band leaves of 1, so their norm
is bounded; a blow-up exceeds the bound far from the band, where the band alone fit best: the
since-removed ``landmark`` estimator with ``core`` on local-self attention at n = 4,096). ``0`` is
Nyström, kept unless a shift fits better. (Checking the diagonal alone let ``core`` be 1.07x
Nyström's error on local attention; row sums cannot see a blow-up at all, since every eigenvector of
the row-stochastic ``A`` but the one for eigenvalue 1 is orthogonal to the constant rows.)

The comparison runs on 16 blocks of ``2 w`` rows (at least 32) spread over each sequence
(:func:`sampled_rows`; every row of a shorter sequence), with the off-band norms from the m x m Gram
``B B^T`` over all keys: O(n m^2) once, then per candidate one m x m pseudo-inverse and O(r m^2) on
the r sampled rows; no n x n tensor, computed without gradient.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from attention._common import ceil_div
from attention._landmarks import NystromFactors, landmark_system
from attention.spectral_shift.delta import SoftmaxRows
from attention.spectral_shift.window import band_rows, block_band

CHECKS = ("band", "none")
FRACTIONS = (1.0, 0.5, 0.25, 0.125, 0.0)
SAMPLED_BLOCKS = 16  # blocks of band_rows(w) rows per sequence on which the band is compared (all, if fewer)


def sampled_rows(
    mask: torch.Tensor, window: int, blocks: int = SAMPLED_BLOCKS
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows on which the check compares: ``blocks`` blocks of :func:`band_rows` consecutive positions
    (``2 w``, at least 32), evenly spread over each sequence's own extent (up to its last real token),
    so that the choice depends on the sequence, never on its batch's padding. Returns their positions
    (b, blocks * span) and whether each is a real row (b, blocks * span)."""
    b, n = mask.shape
    span = band_rows(window)
    # No more blocks than the padded length holds. This changes no choice: a sequence has at most that
    # many blocks, and while it has no more than ``blocks`` all of them are used.
    blocks = min(blocks, ceil_div(n, span))
    positions = torch.arange(1, n + 1, device=mask.device)
    extent = torch.where(mask, positions, 0).amax(dim=-1)  # (b,) one past the last real token
    count = ceil_div(extent, span)  # blocks in the sequence
    j = torch.arange(blocks, device=mask.device)
    start = torch.where(count[:, None] > blocks, (j * count[:, None]) // blocks, j) * span  # (b, blocks)
    used = j[None, :] < count[:, None]
    rows = (start[:, :, None] + torch.arange(span, device=mask.device)).flatten(1)  # (b, blocks * span)
    inside = (rows < n) & used.repeat_interleave(span, dim=1)
    real = inside & mask.gather(1, rows.clamp_max(n - 1))
    return rows.clamp_max(n - 1), real


def _gather_rows(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """x (b, h, n, c) at positions rows (b, r) -> (b, h, r, c)."""
    b, h, _, c = x.shape
    return x.gather(2, rows[:, None, :, None].expand(b, h, rows.shape[1], c))


def key_rows(x_rows: torch.Tensor, n: int, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The keys each block of sampled rows (:func:`sampled_rows`) reaches: the ``R + 2 w`` positions
    from ``w`` before the block to ``w`` after it (w = 0: the rows themselves), clamped into the
    sequence, and whether each lies inside it, both (b, blocks * (R + 2w))."""
    if window == 0:
        return x_rows, torch.ones_like(x_rows, dtype=torch.bool)
    span = band_rows(window)
    starts = x_rows[:, ::span]  # (b, blocks): first row of each block
    reach = torch.arange(span + 2 * window, device=x_rows.device)
    y_pos = (starts[:, :, None] - window + reach).flatten(1)
    return y_pos.clamp(0, n - 1), (y_pos >= 0) & (y_pos < n)


def row_pieces(
    f: NystromFactors, x_rows: torch.Tensor, y_rows: torch.Tensor, y_inside: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """What the check needs at its sampled rows and does not depend on delta: F at the rows ``x``
    (b, h, r, m) and B^T at the keys ``y`` around them (b, h, r', m), zero at keys outside the sequence
    (and, as B's columns are, at padded keys). A candidate's factors are ``X = F p``, ``Y = B^T``."""
    keep = y_inside[:, None, :, None]
    bt = _gather_rows(f.b.transpose(-1, -2), y_rows)  # column j of B as a row; zero at padded keys
    return _gather_rows(f.f, x_rows), torch.where(keep, bt, bt.new_zeros(()))


def low_rank_band(x: torch.Tensor, y: torch.Tensor, window: int) -> torch.Tensor:
    """The band of ``X Y^T`` at the sampled rows, (b, h, r, 2w + 1): ``x`` in blocks of ``R`` rows
    (:func:`band_rows`), ``y`` each block's ``R + 2w`` rows around it (w = 0: the same rows as ``x``,
    the diagonal only)."""
    if window == 0:
        return (x * y).sum(dim=-1, keepdim=True)
    b, h, r, c = x.shape
    span = band_rows(window)
    blocks = r // span
    y_blocks = y.reshape(b, h, blocks, span + 2 * window, c)
    band = block_band(x.reshape(b, h, blocks, span, c), y_blocks, window)
    return band.reshape(b, h, r, 2 * window + 1)


def band_residual(
    low_rank: torch.Tensor,
    row_norm_sq: torch.Tensor,
    delta: torch.Tensor,
    target: torch.Tensor,
    real: torch.Tensor,
    window: int,
) -> torch.Tensor:
    """How far ``X Y^T + delta I`` is from S on the sampled rows, as far as the layer can tell, (b, h):
    the squared error on the estimated band ``target`` (b, h, r, 2w + 1; ``real`` marks the entries
    between real tokens of real rows), plus, per row, the least squared error its off-band part must
    have. S's off-band entries are non-negative and sum to ``o_i = 1 - (band mass)``, so their norm is
    at most ``o_i``; an approximant whose off-band row norm ``r_i`` exceeds it is off by at least
    ``(r_i - o_i)^2`` (a blow-up that the band alone does not show). ``low_rank``: the band of
    ``X Y^T`` (:func:`low_rank_band`); ``row_norm_sq``: ``||(X Y^T)_i||^2`` over all keys (b, h, r)."""
    in_band = torch.where(real, low_rank, low_rank.new_zeros(()))
    band = in_band.clone()
    band[..., window] += delta[..., None]
    error = torch.where(real, band - target, band.new_zeros(()))
    off_norm = (row_norm_sq - in_band.square().sum(dim=-1)).clamp_min(0).sqrt()
    off_mass = (1 - torch.where(real, target, target.new_zeros(())).sum(dim=-1)).clamp_min(0)
    row_real = real[..., window]  # the diagonal entry is real exactly where the row is
    excess = torch.where(row_real, (off_norm - off_mass).clamp_min(0), off_norm.new_zeros(()))
    return error.square().sum(dim=(-1, -2)) + excess.square().sum(dim=-1)


def _quadratic_form(x: torch.Tensor, gram: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """``x_i G z_i^T`` for every row i, (b, h, r)."""
    return ((x @ gram) * z).sum(dim=-1)


def candidate_residuals(
    f: NystromFactors,
    delta: torch.Tensor,
    rows: SoftmaxRows,
    pseudo_inverse: Callable[[torch.Tensor], torch.Tensor],
    window: int,
    blocks: int = SAMPLED_BLOCKS,
) -> torch.Tensor:
    """:func:`band_residual` of each candidate ``delta * fraction`` (:data:`FRACTIONS`) on the rows of
    :func:`sampled_rows`, (b, h, len(FRACTIONS)); non-finite residuals count as infinite. Each
    candidate has its own ``p = pinv(A - delta I)``."""
    x_rows, row_real = sampled_rows(f.mask, window, blocks)
    y_rows, y_inside = key_rows(x_rows, f.mask.shape[-1], window)
    target, real = rows.band()
    target = _gather_rows(target, x_rows)
    real = _gather_rows(real, x_rows) & row_real[:, None, :, None]
    f_rows, y = row_pieces(f, x_rows, y_rows, y_inside)
    gram = f.b @ f.b.transpose(-1, -2)  # Y^T Y over all real keys
    residuals = []
    for fraction in FRACTIONS:
        c = delta * fraction
        x = f_rows @ pseudo_inverse(landmark_system(f.a, f.valid, c))
        norm_sq = _quadratic_form(x, gram, x)
        residual = band_residual(low_rank_band(x, y, window), norm_sq, c, target, real, window)
        residuals.append(residual.nan_to_num(nan=float("inf")))
    return torch.stack(residuals, dim=-1)


def checked_delta(
    f: NystromFactors,
    delta: torch.Tensor,
    rows: SoftmaxRows,
    pseudo_inverse: Callable[[torch.Tensor], torch.Tensor],
    window: int,
    blocks: int = SAMPLED_BLOCKS,
) -> torch.Tensor:
    """``delta`` (b, h) times the fraction in :data:`FRACTIONS` whose approximant is closest to S by
    :func:`candidate_residuals` (see the module doc). Gradients, if any, flow through ``delta`` only."""
    with torch.no_grad():
        residuals = candidate_residuals(f, delta, rows, pseudo_inverse, window, blocks)
        pick = residuals.argmin(dim=-1)  # ties: the larger shift
    # The candidates multiplied out on the device: a tensor of the fractions would be a blocking copy
    # from the host (a device sync) on every forward.
    candidates = torch.stack([delta * fraction for fraction in FRACTIONS], dim=-1)
    return candidates.gather(-1, pick[..., None]).squeeze(-1)
