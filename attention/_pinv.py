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
    # On 3-d stacks, so that every product is one bmm (a 4-d matmul is several ops: views, expands).
    shape, m = a.shape, a.shape[-1]
    a3 = a.reshape(-1, m, m)
    z = a3.transpose(-1, -2) / scale.reshape(-1, 1, 1)
    return NewtonSchulz.apply(a3, z, iterations).reshape(shape)


def newton_schulz_steps(a: torch.Tensor, z: torch.Tensor, iterations: int) -> list[torch.Tensor]:
    """The iterations from ``z`` on (b, m, m) stacks; returns, per iteration, ``[z, x, s1, s2]`` and
    last the result. Horner's form of the update, ``Z (13I - 15X + 7X^2 - X^3) / 4`` with ``X = A Z``:
    the nested form's four products, each one fused bmm-and-add, and no identity matrices."""
    kept = []
    for _ in range(iterations):
        x = torch.bmm(a, z)
        s1 = torch.baddbmm(x, x, x, beta=7, alpha=-1)  # 7X - X^2
        s2 = torch.baddbmm(x, x, s1, beta=-15)  # -15X + 7X^2 - X^3
        kept += [z, x, s1, s2]
        z = torch.baddbmm(z, z, s2, beta=13 / 4, alpha=1 / 4)
    return [*kept, z]


class NewtonSchulz(torch.autograd.Function):
    """The iterations with their gradient written out: autograd's own backward of the same products
    takes about three times the kernel launches (a scaling per alpha and beta, an addition per reuse
    of X); here every gradient product accumulates in its bmm. The gradient is the same, the
    iterations' exact derivative (not the inverse's ``-Z dA Z``)."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, z: torch.Tensor, iterations: int) -> torch.Tensor:
        *kept, out = newton_schulz_steps(a, z, iterations)
        ctx.save_for_backward(a, *kept)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        a, *kept = ctx.saved_tensors
        grad_a = None
        for i in range(len(kept) // 4 - 1, -1, -1):
            z, x, s1, s2 = kept[4 * i : 4 * i + 4]
            # z' = 13/4 z + 1/4 z s2;  s2 = -15 x + x s1;  s1 = 7 x - x x;  x = a z
            grad_s2 = torch.baddbmm(grad, z.mT, grad, beta=0, alpha=1 / 4)
            grad_z = torch.baddbmm(grad, grad, s2.mT, beta=13 / 4, alpha=1 / 4)
            grad_x = torch.baddbmm(grad_s2, grad_s2, s1.mT, beta=-15)
            grad_s1 = torch.bmm(x.mT, grad_s2)
            grad_x = torch.baddbmm(grad_x, grad_s1, x.mT, alpha=-1)
            grad_x = torch.baddbmm(grad_x, x.mT, grad_s1, alpha=-1).add_(grad_s1, alpha=7)
            grad_a = torch.bmm(grad_x, z.mT) if grad_a is None else torch.baddbmm(grad_a, grad_x, z.mT)
            grad = torch.baddbmm(grad_z, a.mT, grad_x)
        return grad_a, grad, None


def pseudo_inverse(a: torch.Tensor, method: str, iterations: int) -> torch.Tensor:
    if method == "newton":
        return newton_schulz_pinv(a, iterations)
    if method == "exact":
        return torch.linalg.pinv(a)
    raise ValueError(f"attention.pinv must be one of {'|'.join(PINV_METHODS)}; got {method!r}")
