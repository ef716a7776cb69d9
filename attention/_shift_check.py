"""The band check of an estimated scalar shift (``delta_check: band``; forms ``core``, ``sketch`` and
``projection``, estimators ``trace`` and ``landmark``).

``core`` and ``sketch`` replace ``pinv(A)`` by ``pinv(A - delta I)``, which changes the whole
approximant, not only its diagonal, and blows up where ``delta`` lands near an eigenvalue of ``A``
(peaked self-attention with short segments; the ``landmark`` estimator, the tail mean of A's own
eigenvalues, on local attention). ``projection`` adds ``delta (I - E E~)`` to every row, too much
where the approximant already holds the diagonal. The estimates cannot see any of this.

What the layer does know, exactly up to the estimated normaliser, is the band of ``S`` around the
diagonal: the ``2 w + 1`` logits of each row's window (:class:`attention._delta.SoftmaxRows`). So
``delta`` is backtracked: of the candidates ``delta, delta/2, delta/4, delta/8, 0`` each batch item
and head keeps the one whose approximant matches that band best in squared error over real rows,
plus the least error its rows must have off the band (S's off-band entries are non-negative and sum
to what the band leaves of 1, so their norm is bounded; a blow-up exceeds the bound far from the
band, where the band alone fit best: ``landmark`` with ``core`` on local-self attention at
n = 4,096). ``0`` is Nyström, kept unless a shift fits better. (Checking the diagonal alone let
``core`` be 1.07x Nyström's error on local attention; row sums cannot see a blow-up at all, since
every eigenvector of the row-stochastic ``A`` but the one for eigenvalue 1 is orthogonal to the
constant rows.)

O(n m^2 + n w m) per candidate (the off-band norms from the m x m Gram of the right factor), no
n x n tensor; computed without gradient.
"""

from __future__ import annotations

from typing import Callable

import torch

from attention._delta import SoftmaxRows, band_products
from attention._landmarks import NystromFactors, expand_segments, landmark_system

CHECKS = ("band", "none")
FRACTIONS = (1.0, 0.5, 0.25, 0.125, 0.0)


def _indicators(f: NystromFactors, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """E (b, 1, n, m), the segment indicator, and E~^T (b, 1, n, m), its columns divided by the counts:
    ``E E~ V`` gives every position its segment's mean of V."""
    m = f.seg.m
    eye = torch.eye(m, dtype=dtype, device=f.f.device).expand(f.f.shape[0], 1, m, m)
    indicator = expand_segments(eye, f.seg)
    return indicator, indicator / f.counts.clamp_min(1).to(dtype)[:, None, None, :]


def approximant_factors(
    f: NystromFactors, p: torch.Tensor, delta: torch.Tensor, form: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """``X, Y`` (b, h, n, c) with the scalar form's approximant ``= X Y^T + delta I``:
    ``F p B + delta I`` (core), ``(F - delta E) p (B - delta E~) + delta I`` (sketch), both with
    ``p = pinv(A - delta I)``, or ``F p B + delta (I - E E~)`` (projection, ``p = pinv(A)``); E is the
    segment indicator and E~ its row-normalised transpose (segment means). Rows of ``Y`` at padded
    keys are zero."""
    x = f.f @ p  # (b, h, n, m)
    y = f.b.transpose(-1, -2)  # (b, h, n, m): column j of B as a row
    d = delta[..., None, None]
    if form == "core":
        return x, y
    indicator, means_t = _indicators(f, p.dtype)
    if form == "sketch":
        return x - d * expand_segments(p, f.seg), y - d * means_t
    if form == "projection":
        h = x.shape[1]
        return (
            torch.cat([x, -d * indicator.expand(-1, h, -1, -1)], dim=-1),
            torch.cat([y, means_t.expand(-1, h, -1, -1)], dim=-1),
        )
    raise ValueError(f"the band check is for the core, sketch and projection forms; got {form!r}")


def band_residual(
    x: torch.Tensor, y: torch.Tensor, delta: torch.Tensor, rows: SoftmaxRows, window: int
) -> torch.Tensor:
    """How far ``X Y^T + delta I`` is from S as far as the layer can tell, (b, h): the squared error on
    the estimated band, plus, per row, the least squared error its off-band part must have. S's
    off-band entries are non-negative and sum to ``o_i = 1 - (band mass)``, so their norm is at most
    ``o_i``; an approximant whose off-band row norm ``r_i`` exceeds it is off by at least
    ``(r_i - o_i)^2`` (a blow-up that the band alone does not show)."""
    target, real = rows.band()
    low_rank = band_products(x, y, window)
    in_band = torch.where(real, low_rank, low_rank.new_zeros(()))
    band = in_band.clone()
    band[..., window] += delta[..., None]
    error = torch.where(real, band - target, band.new_zeros(()))
    row_norm_sq = ((x @ (y.transpose(-1, -2) @ y)) * x).sum(dim=-1)  # ||(X Y^T)_i||^2, O(n c^2)
    off_norm = (row_norm_sq - in_band.square().sum(dim=-1)).clamp_min(0).sqrt()
    off_mass = (1 - target.sum(dim=-1)).clamp_min(0)
    excess = torch.where(rows.mask[:, None, :], (off_norm - off_mass).clamp_min(0), off_norm.new_zeros(()))
    return error.square().sum(dim=(-1, -2)) + excess.square().sum(dim=-1)


def checked_delta(
    f: NystromFactors,
    delta: torch.Tensor,
    rows: SoftmaxRows,
    form: str,
    pseudo_inverse: Callable[[torch.Tensor], torch.Tensor],
    window: int,
) -> torch.Tensor:
    """``delta`` (b, h) times the fraction in :data:`FRACTIONS` whose approximant is closest to S by
    :func:`band_residual` (see the module doc). Gradients, if any, flow through ``delta`` only."""
    with torch.no_grad():
        residuals = []
        if form == "projection":
            p = pseudo_inverse(landmark_system(f.a, f.valid))
        for fraction in FRACTIONS:
            candidate = delta.detach() * fraction
            if form != "projection":  # core and sketch: pinv(A - delta I) for every candidate
                p = pseudo_inverse(landmark_system(f.a, f.valid, candidate))
            x, y = approximant_factors(f, p, candidate, form)
            residual = band_residual(x, y, candidate, rows, window)
            residuals.append(residual.nan_to_num(nan=float("inf")))
        pick = torch.stack(residuals, dim=-1).argmin(dim=-1)  # ties: the larger shift
        fractions = torch.tensor(FRACTIONS, dtype=delta.dtype, device=delta.device)
    return delta * fractions[pick]
