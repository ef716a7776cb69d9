"""Estimators of the spectral shift ``delta`` (one scalar per batch item and head).

SS-Nyström's shift is the mean of the eigenvalues a rank-k factorisation leaves out:
``delta = (tr S - sum_{i<=k} sigma_i) / (n - k)``. Both terms are estimated without forming S.
"""

from __future__ import annotations

import math

import torch

from attention._landmarks import NystromFactors, masked_value

NORMALISERS = ("free", "sampled")


def free_log_normaliser(f: NystromFactors, s_diag: torch.Tensor) -> torch.Tensor:
    """``log Z_i ~ logaddexp(s_ii, logsumexp_j(q_i . k~_j + log count_j))``: each segment's keys are
    represented by their mean key, counted once per real token. Jensen's inequality makes it
    underestimate the off-diagonal mass, so the diagonal weight it gives is biased upward on peaked rows.

    Read off ``F`` without another pass of exponentials: the largest logit and the largest entry of a
    softmax row sit at the same j, so ``logsumexp_j(q_i . k~_j) = max_j(q_i . k~_j) - log max_j F_ij``
    (stable: ``max_j F_ij >= 1/m``), and ``sum_j count_j exp(q_i . k~_j) = exp(logsumexp) (F counts)_i``.
    Needs ``f.f_row_max`` (``nystrom_factors(..., keep_row_max=True)``).
    """
    tiny = torch.finfo(f.f.dtype).tiny
    log_sum = f.f_row_max - f.f.detach().amax(dim=-1).clamp_min(tiny).log()
    if not f.padded:  # every segment holds l real tokens
        off = log_sum + math.log(f.segment)
    else:
        weighted = f.f @ f.counts.to(f.f.dtype)[:, None, :, None]  # (b, h, n, 1)
        off = log_sum + weighted.squeeze(-1).clamp_min(1.0).log()
    return torch.logaddexp(s_diag, off)


def sampled_log_normaliser(f: NystromFactors, s_diag: torch.Tensor, num_samples: int) -> torch.Tensor:
    """``log Z_i ~ logaddexp(s_ii, log((n_valid - 1) / r_i) + logsumexp_{t in R, t != i} q_i . k_t)``.

    ``R``: ``r`` real keys drawn uniformly without replacement, shared by all queries and heads of a
    sequence (one (n x r) product, O(n r d)); ``r_i`` excludes ``i`` itself, so the off-diagonal mass is
    estimated without bias. With ``r >= n_valid`` it is exact.
    """
    mask = f.mask
    bsz, n = mask.shape
    r = min(num_samples, n)
    # Uniform scores, padded positions last: the r smallest are a uniform sample of the real tokens.
    scores = torch.rand(bsz, n, device=mask.device).masked_fill(~mask, 2.0)
    idx = scores.topk(r, dim=-1, largest=False).indices  # (b, r)
    sample_real = mask.gather(1, idx)  # False only when n_valid < r
    h, d = f.k.shape[1], f.k.shape[-1]
    keys = f.k.gather(2, idx[:, None, :, None].expand(bsz, h, r, d))
    logits = f.q @ keys.transpose(-1, -2)  # (b, h, n, r)
    neg = masked_value(logits.dtype)
    # Drop each query's own key (at most r entries per sequence) and padded samples.
    sample_col = torch.arange(r, device=mask.device).expand(bsz, r)
    own = torch.zeros(bsz, n, r, dtype=torch.bool, device=mask.device)
    own[torch.arange(bsz, device=mask.device)[:, None], idx, sample_col] = sample_real
    logits = logits.masked_fill(own[:, None] | ~sample_real[:, None, None, :], neg)
    used = (sample_real.sum(dim=-1, keepdim=True) - own.any(dim=-1).to(torch.long)).clamp_min(1)  # r_i
    n_other = (mask.sum(dim=-1, keepdim=True) - 1).clamp_min(1)  # n_valid - 1
    off = logits.logsumexp(dim=-1) + (n_other / used).to(logits.dtype).log()[:, None, :]
    return torch.logaddexp(s_diag, off)


def trace_estimate(f: NystromFactors, normaliser: str, num_samples: int) -> torch.Tensor:
    """``tr S ~ sum over real rows of exp(s_ii - log Z_i)``, shape (b, h)."""
    s_diag = torch.einsum("bhnd,bhnd->bhn", f.q, f.k)
    if normaliser == "free":
        log_z = free_log_normaliser(f, s_diag)
    elif normaliser == "sampled":
        log_z = sampled_log_normaliser(f, s_diag, num_samples)
    else:
        raise ValueError(f"attention.normaliser must be one of {'|'.join(NORMALISERS)}; got {normaliser!r}")
    # where, not a product: padded rows may hold inf (their F row is zero) and must not give NaN.
    diag = torch.where(f.mask[:, None, :], (s_diag - log_z).exp(), s_diag.new_zeros(()))
    return diag.sum(dim=-1)


def top_singular_values(f: NystromFactors, pinv_a: torch.Tensor, rank: int) -> torch.Tensor:
    """Sum of the top-``rank`` singular values of the Nyström approximant ``F pinv(A) B``, shape (b, h).

    With ``F = Q_F R_F`` and ``B^T = Q_B R_B``: ``F P B = Q_F (R_F P R_B^T) Q_B^T``, so the singular
    values are those of the m x m core ``R_F P R_B^T``, i.e. the square roots of the eigenvalues of
    ``R_F P (R_B^T R_B) P^T R_F^T = R_F P G_B P^T R_F^T`` with the Gram matrix ``G_B = B B^T``.
    ``R_F`` is the (transposed) Cholesky factor of ``G_F = F^T F``, the QR's R up to signs: two
    batched GEMMs and one m x m Cholesky instead of two Householder QRs of n x m matrices. A tiny
    relative jitter keeps Cholesky defined when F is rank deficient; it moves only singular values far
    below the top ones. (The Grams must stay in fp32: rounding them to bf16 puts noise in F's
    near-null directions that pinv(A) then amplifies into spurious top singular values.)
    """
    if rank == 0:
        return f.f.new_zeros(f.f.shape[:2])
    gram_f = f.f.transpose(-1, -2) @ f.f  # padded query rows of F are zero
    gram_b = f.b @ f.b.transpose(-1, -2)
    r_f = _jittered_cholesky(gram_f).transpose(-1, -2)
    left = r_f @ pinv_a
    sym = left @ gram_b @ left.transpose(-1, -2)
    eig = torch.linalg.eigvalsh(0.5 * (sym + sym.transpose(-1, -2))).flip(-1)[..., :rank]
    floor = torch.finfo(eig.dtype).eps * eig[..., :1].abs().clamp_min(1.0)  # keeps sqrt's gradient finite
    return eig.clamp_min(0).add(floor).sqrt().sum(dim=-1)


def _jittered_cholesky(gram: torch.Tensor) -> torch.Tensor:
    m = gram.shape[-1]
    eps = torch.finfo(gram.dtype).eps
    mean_diag = gram.diagonal(dim1=-2, dim2=-1).mean(dim=-1).clamp_min(torch.finfo(gram.dtype).tiny)
    eye = torch.eye(m, dtype=gram.dtype, device=gram.device)
    factor, info = torch.linalg.cholesky_ex(gram + ((m * eps) * mean_diag)[..., None, None] * eye)
    # Rarely the tiny jitter is not enough; a second factor with a much larger one stands in for the
    # failed matrices. Both are computed (m x m, cheap) so that no device sync decides between them.
    safe, _ = torch.linalg.cholesky_ex(gram + (math.sqrt(eps) * mean_diag)[..., None, None] * eye)
    return torch.where((info > 0)[..., None, None], safe, factor)


def tail_mean(
    trace: torch.Tensor, top: torch.Tensor, count: torch.Tensor, rank: int, delta_max: float
) -> torch.Tensor:
    """``clip((trace - top) / (count - rank), 0, delta_max)``; ``count`` is per batch item (b,)."""
    tail = (count.to(trace.dtype) - rank).clamp_min(1)[:, None]
    return ((trace - top) / tail).clamp(0.0, delta_max)


def trace_delta(
    f: NystromFactors, pinv_a: torch.Tensor, rank: int, delta_max: float, normaliser: str, num_samples: int
) -> torch.Tensor:
    trace = trace_estimate(f, normaliser, num_samples)
    top = top_singular_values(f, pinv_a, rank)
    return tail_mean(trace, top, f.mask.sum(dim=-1), rank, delta_max)


def landmark_delta(f: NystromFactors, rank: int, delta_max: float) -> torch.Tensor:
    """The same tail mean on the m x m landmark matrix ``A`` (eigenvalues of its symmetric part).

    Segment means blur exactly the diagonal mass the shift should capture, so this gives delta ~ 0:
    an ablation, not a default. Empty landmarks are zero rows/columns of ``A`` and add nothing.
    """
    sym = 0.5 * (f.a + f.a.transpose(-1, -2))
    eig = torch.linalg.eigvalsh(sym).flip(-1)  # descending
    trace = f.a.diagonal(dim1=-2, dim2=-1).sum(dim=-1)
    top = eig[..., :rank].sum(dim=-1)
    return tail_mean(trace, top, f.valid.sum(dim=-1), rank, delta_max)
