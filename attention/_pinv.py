"""Pseudo-inverses of the small m x m landmark matrices.

Newton-Schulz is the default, and not only for speed: stopped after a few iterations it inverts the
large singular values and damps the small ones, which regularises the near-singular landmark
matrices that softmax produces (an exact pinv of them makes the Nyström output blow up).
"""

from __future__ import annotations

import torch

PINV_METHODS = ("newton", "exact")


def newton_schulz_pinv(a: torch.Tensor, iterations: int) -> torch.Tensor:
    """Iterate ``Z <- 1/4 Z (13I - AZ (15I - AZ (7I - AZ)))`` on every matrix of a batch ``(..., m, m)``.

    ``Z0 = A^T / (max column sum * max row sum)`` is taken per matrix: since
    ``||A||_2^2 <= ||A||_1 ||A||_inf`` this puts every singular value of ``A Z0`` in (0, 1], where the
    iteration converges. (A scale taken over the whole batch, as the original code did, is too small
    for most matrices and needs about twice the iterations.)
    """
    magnitude = a.abs()
    max_col_sum = magnitude.sum(dim=-2).amax(dim=-1)
    max_row_sum = magnitude.sum(dim=-1).amax(dim=-1)
    scale = (max_col_sum * max_row_sum).clamp_min(torch.finfo(a.dtype).tiny)
    z = a.transpose(-1, -2) / scale[..., None, None]
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    for _ in range(iterations):
        az = a @ z
        t = 7 * eye - az
        t = 15 * eye - az @ t
        t = 13 * eye - az @ t
        z = 0.25 * (z @ t)
    return z


def pseudo_inverse(a: torch.Tensor, method: str, iterations: int) -> torch.Tensor:
    if method == "newton":
        return newton_schulz_pinv(a, iterations)
    if method == "exact":
        return torch.linalg.pinv(a)
    raise ValueError(f"attention.pinv must be one of {'|'.join(PINV_METHODS)}; got {method!r}")
