"""Estimators of the spectral shift: what each row of ``S = softmax(Q K^T)`` puts on itself, without
forming S (:func:`softmax_rows`, with the ``free`` or ``moments`` normaliser), and from it

- the ``diagonal`` form's shift per row, :func:`diagonal_shift`: what the approximant ``F pinv(A) B``
  misses of the row's own weight;
- the scalar (``core``) form's ``delta`` per batch item and head, :func:`trace_delta`: SS-Nyström's
  mean of the eigenvalues a rank-k factorisation leaves out, ``(tr S - sum_{i<=k} sigma_i) / (n - k)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from attention._cached import cached
from attention._common import zero_padded
from attention._landmarks import NystromFactors, Segments, masked_value, segment_means
from attention.spectral_shift.window import band_mask, band_products

NORMALISERS = ("free", "moments")


def window_logits(f: NystromFactors, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits ``q_i . k_j`` for ``|i - j| <= w``, (b, h, n, 2w + 1) (column ``w`` is ``j = i``), and
    the (b, n, 2w + 1) mask of those ``j`` that exist and are real (:func:`band_products`)."""
    return band_products(f.q_scaled, f.k, window), band_mask(f.mask, window)


@dataclass
class LandmarkSums:
    """Each row's sum over landmarks, standing for its sum over keys: ``sum_j count_j exp(l_ij) =
    exp(log_offset_i) weighted_i``, with ``weighted = weights @ counts`` and ``weights_ij =
    exp(l_ij - log_offset_i)`` for the landmark logits ``l`` of a normaliser."""

    weights: torch.Tensor  # (b, h, n, m)
    log_offset: torch.Tensor  # (b, h, n)
    seg: Segments
    rows_sum_to_one: bool = False  # the weights are a softmax over landmarks (free normaliser)

    @cached
    def weighted(self) -> torch.Tensor:
        """``sum_j count_j weights_ij``, (b, h, n). Only needed without a window (a window's far sum
        weighs each landmark by its own count, :func:`far_counts`)."""
        w, seg = self.weights, self.seg
        if seg.index is None:  # equal segments of n / m keys
            per = float(seg.n // seg.m)
            return w.new_full(w.shape[:-1], per) if self.rows_sum_to_one else w.sum(dim=-1) * per
        return (w @ seg.counts.to(w.dtype)[:, None, :, None]).squeeze(-1)


def free_sums(f: NystromFactors) -> LandmarkSums:
    """The free normaliser's: each segment's keys are represented by their mean key, ``l = Q K~^T``.
    Jensen's inequality makes it underestimate the off-diagonal mass, so the diagonal weight it gives
    is biased upward on peaked rows.

    Read off ``F`` without another pass of exponentials: the largest logit and the largest entry of a
    softmax row sit at the same j, so ``logsumexp_j(l_ij) = max_j(l_ij) - log max_j F_ij`` (stable:
    ``max_j F_ij >= 1/m``), and the weights are F itself. Needs ``f.f_logits``. The offset keeps its
    gradient: F's rows are normalised, so unlike :func:`moment_sums`'s offset it does not cancel."""
    tiny = torch.finfo(f.f.dtype).tiny
    log_offset = f.f_logits.amax(dim=-1) - f.f.amax(dim=-1).clamp_min(tiny).log()
    return LandmarkSums(f.f, log_offset, f.seg, rows_sum_to_one=True)


def moment_sums(f: NystromFactors) -> LandmarkSums:
    """The ``moments`` normaliser's: landmark logits raised by half their segment's variance.

    A segment's keys enter the free normaliser through their mean: ``sum_j exp(q . k_j) ~ count
    exp(q . k~)``, which Jensen's inequality makes too small, so the diagonal weight comes out too large
    and the shift overshoots (most where rows are partly self-attending, and on random attention at low
    temperature). With the segment's first and second moments, ``sum_j exp(q . k_j) ~ count exp(q . k~
    + q^2 . var / 2)``, exact for Gaussian keys when the segment's feature variances ``var`` (a
    diagonal covariance) describe its spread. The variance term is added onto F's own logits in one
    fused GEMM (``baddbmm``), and the weights are their exponentials less each row's max (in place, no
    normalising pass): one more n x m x d product, no n x n. Needs ``f.f_logits``.
    """
    k_land = f.k_land if f.k_land is not None else segment_means(f.k, f.seg)
    var = (segment_means(f.k * f.k, f.seg) - k_land * k_land).clamp_min(0)
    logits, q = f.f_logits, f.q_scaled
    if f.padded and torch.is_grad_enabled():
        # Q is not zeroed at the padding (nystrom_factors), so a padded row's logits may be inf or NaN.
        # Forward keeps them in their own row (every step here and in landmark_log_normaliser is row by
        # row, and padded rows are masked out at the end). In backward 0 * inf would carry NaN through
        # this GEMM into every landmark key, so where gradients flow those rows are zeroed first: the
        # shift adds no non-finite gradient of its own (F itself reads padded queries, see
        # nystrom_factors). With the default detach_delta nothing flows, and the two passes are saved.
        q, logits = zero_padded(q, f.mask), zero_padded(logits, f.mask)
    b, h, n, m = logits.shape
    raised = torch.baddbmm(
        logits.reshape(b * h, n, m),
        (q * q).reshape(b * h, n, -1),
        var.reshape(b * h, m, -1).transpose(-1, -2),
        alpha=0.5,  # q is scaled; empty landmarks keep F's mask (their var is 0)
    ).view(b, h, n, m)
    # The offset only keeps the exponentials in range: it cancels from every normaliser, so it needs
    # no gradient (and a detached max leaves ``raised`` free to be overwritten).
    log_offset = raised.detach().amax(dim=-1)
    weights = raised.sub_(log_offset[..., None]).exp_()
    return LandmarkSums(weights, log_offset, f.seg)


def far_counts(f: NystromFactors, window: int) -> torch.Tensor:
    """(b, n, m): how many of segment j's real keys lie outside row i's window ``[i - w, i + w]``, the
    same for every head, as integers in f's dtype.

    In closed form, no scatter: segment j holds the real tokens of ranks ``[ceil(j L / m), ceil((j + 1)
    L / m))`` (:func:`attention._landmarks.segment_sequences`), and the window's real keys are the
    ranks ``[R(i - w), R(i + w + 1))`` with ``R(p)`` the number of real tokens before position p; the
    window's part of segment j is the overlap of the two ranges."""
    mask = f.mask
    b, n = mask.shape
    m, dtype, device = f.seg.m, f.f.dtype, mask.device
    # The counts are integers below n: exact in fp32 and fp64 (what _compute_dtype gives the factors);
    # a half-precision dtype would round them, so it counts in fp32.
    work = dtype if torch.finfo(dtype).bits >= 32 else torch.float32
    before = torch.nn.functional.pad(mask.cumsum(dim=-1), (1, 0))  # (b, n + 1), int64
    pos = torch.arange(n, device=device)
    lo = before[:, (pos - window).clamp(0, n)][..., None].to(work)  # (b, n, 1)
    hi = before[:, (pos + window + 1).clamp(0, n)][..., None].to(work)
    # ceil(j L / m) in integers: in floating point it could round across an integer for long sequences.
    bounds = (torch.arange(m + 1, device=device) * before[:, -1:] + m - 1).div(m, rounding_mode="floor")
    bounds = bounds.to(work)  # (b, m + 1)
    start, end = bounds[:, None, :-1], bounds[:, None, 1:]  # (b, 1, m)
    overlap = (torch.minimum(hi, end) - torch.maximum(lo, start)).clamp_min_(0)
    return overlap.neg_().add_(end - start).to(dtype)


def landmark_log_normaliser(
    f: NystromFactors, sums: LandmarkSums, s_diag: torch.Tensor, window: int = 0, near: tuple | None = None
) -> torch.Tensor:
    """``log Z_i ~ logaddexp(s_ii, log sum_j count_j exp(l_ij))`` with the landmark sums of a normaliser
    (:func:`free_sums`, :func:`moment_sums`).

    With ``window > 0`` (``near`` from :func:`window_logits`) the ``2 w + 1`` keys around ``i`` enter
    exactly and the landmark sum stands only for the others: each landmark is weighed by the count of
    its segment's keys outside the window (:func:`far_counts`). Neighbours that a segment mean blurs (a
    local band of attention) then no longer make the diagonal look larger than it is. Summing the far
    part directly (not the whole less the window's part) leaves no rounding residue: it is exactly 0
    when the window covers every key.
    """
    if near is None:
        return torch.logaddexp(s_diag, sums.log_offset + sums.weighted.clamp_min(1.0).log())
    logits, real = near
    far = (sums.weights * far_counts(f, window)[:, None]).sum(dim=-1)
    # Rows whose window covers every key have no far part: drop the term (its log would be -inf, and
    # its gradient NaN).
    some = far > 0
    far_term = torch.where(some, sums.log_offset + torch.where(some, far, 1.0).log(), float("-inf"))
    # Masked with a finite value: a padded row may have no real key in its window, and an all -inf
    # logsumexp would put NaN in the gradients.
    near_term = torch.where(real[:, None], logits, masked_value(logits.dtype)).logsumexp(dim=-1)
    return torch.logaddexp(near_term, far_term)


@dataclass
class SoftmaxRows:
    """What the estimators know of each row of ``S = softmax(Q K^T)`` without forming it: the row's own
    logit ``s_ii``, its estimated log-normaliser ``log Z_i`` and, with a window, the exact logits of the
    ``2 w + 1`` keys around it."""

    mask: torch.Tensor  # (b, n) real rows
    s_diag: torch.Tensor  # (b, h, n)
    log_z: torch.Tensor  # (b, h, n)
    near: tuple[torch.Tensor, torch.Tensor] | None  # window_logits(f, w), or None when w = 0

    @property
    def diagonal(self) -> torch.Tensor:
        """``exp(s_ii - log Z_i)`` (b, h, n), zero at padded rows."""
        # Masked before the exponential: a padded row's own logit need not be in its normaliser (with a
        # window it is not), so its exp may overflow, and inf * 0 would put NaN in the gradients.
        log_w = torch.where(self.mask[:, None, :], self.s_diag - self.log_z, float("-inf"))
        return log_w.exp()

    def band(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The estimated ``S_ij`` for ``|i - j| <= w`` (b, h, n, 2w + 1; column w is the diagonal) and
        the (b, 1, n, 2w + 1) mask of the entries between two real tokens (estimates are 0 elsewhere)."""
        if self.near is None:
            return self.diagonal[..., None], self.mask[:, None, :, None]
        logits, real = self.near
        real = (real & self.mask[:, :, None])[:, None]
        log_w = torch.where(real, logits - self.log_z[..., None], float("-inf"))
        return log_w.exp(), real


def softmax_rows(f: NystromFactors, normaliser: str, window: int = 0) -> SoftmaxRows:
    """The rows' own logits and estimated normalisers. ``window``: keys within this many positions
    enter the normaliser exactly."""
    if normaliser not in NORMALISERS:
        raise ValueError(f"attention.normaliser must be one of {'|'.join(NORMALISERS)}; got {normaliser!r}")
    near = window_logits(f, window) if window > 0 else None
    # The row's own logit is the middle column of its window (one pass fewer than a product of its own).
    s_diag = near[0][..., window] if near else torch.einsum("bhnd,bhnd->bhn", f.q_scaled, f.k)
    sums = free_sums(f) if normaliser == "free" else moment_sums(f)
    log_z = landmark_log_normaliser(f, sums, s_diag, window, near)
    return SoftmaxRows(f.mask, s_diag, log_z, near)


def diagonal_weights(f: NystromFactors, normaliser: str, window: int = 0) -> torch.Tensor:
    """Each real row's estimated softmax weight on itself, ``exp(s_ii - log Z_i)``, shape (b, h, n);
    zero at padded rows (summed over rows: the estimated ``tr S``). ``window``: keys within this many
    positions enter the normaliser exactly."""
    return softmax_rows(f, normaliser, window).diagonal


def approximant_diagonal(
    f: torch.Tensor, pinv_a: torch.Tensor, b: torch.Tensor, chunk: int = 256
) -> torch.Tensor:
    """``(F pinv(A) B)_ii`` for every row, (b, h, n): row i of ``F pinv(A)`` dotted with column i of
    ``B``, O(n m^2), nothing n x n. Computed as ``(pinv(A)^T F^T) * B`` summed over the landmarks, so
    that both operands of the product have B's (m, n) layout (no transposed copy of an n x m tensor),
    ``chunk`` columns at a time: each chunk's product is still in cache when it is multiplied and
    summed (over all n at once, those two passes went to memory and cost half as much as the GEMM)."""
    p_t, f_t = pinv_a.transpose(-1, -2), f.transpose(-1, -2)
    n = b.shape[-1]
    return torch.cat(
        [((p_t @ f_t[..., s : s + chunk]) * b[..., s : s + chunk]).sum(dim=-2) for s in range(0, n, chunk)],
        dim=-1,
    )


def diagonal_shift(
    f: NystromFactors,
    own: torch.Tensor,
    delta_max: float,
    normaliser: str,
    window: int = 0,
) -> torch.Tensor:
    """Per-row shift ``d_i = clip(s^_ii - a_i, 0, delta_max)``, (b, h, n), with ``own = a`` the
    approximant's diagonal ``(F pinv(A) B)_ii``: what the approximant misses of each row's own softmax
    weight (the exact-diagonal correction of FITC in Gaussian-process approximations). Zero at padded
    rows."""
    missing = diagonal_weights(f, normaliser, window) - own
    return torch.where(f.mask[:, None, :], missing.clamp(0.0, delta_max), missing.new_zeros(()))


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
    # S is the approximant on the real tokens: padded query rows of F and empty landmarks' rows of B
    # are not part of it (nystrom_factors leaves both unzeroed: no real output reads them).
    real_f = zero_padded(f.f, f.mask if f.padded else None)
    gram_f = real_f.transpose(-1, -2) @ real_f
    gram_b = f.b @ f.b.transpose(-1, -2)
    if f.padded:
        gram_b = gram_b * (f.valid[:, None, :, None] & f.valid[:, None, None, :]).to(gram_b.dtype)
    r_f = _jittered_cholesky(gram_f).transpose(-1, -2)
    left = r_f @ pinv_a
    sym = left @ gram_b @ left.transpose(-1, -2)
    eig = symmetric_eigenvalues(sym).flip(-1)[..., :rank]
    floor = torch.finfo(eig.dtype).eps * eig[..., :1].abs().clamp_min(1.0)  # keeps sqrt's gradient finite
    return eig.clamp_min(0).add(floor).sqrt().sum(dim=-1)


def symmetric_eigenvalues(sym: torch.Tensor) -> torch.Tensor:
    """Ascending eigenvalues of the symmetric part of a batch of m x m matrices, in float64.

    LAPACK's float32 solver occasionally fails to converge on these (nearly rank-deficient, with many
    equal eigenvalues) and a failure of one matrix would stop the whole batch; float64 costs little
    at m x m. Non-finite entries (from a degenerate sequence) become 0 rather than an error: that
    sequence's shift is then meaningless but bounded by the clip, and every other one is exact."""
    sym64 = torch.nan_to_num(sym.double(), nan=0.0, posinf=0.0, neginf=0.0)
    eig = torch.linalg.eigvalsh(0.5 * (sym64 + sym64.transpose(-1, -2)))
    return eig.to(sym.dtype)


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


def trace_delta(
    f: NystromFactors,
    pinv_a: torch.Tensor,
    rank: int,
    delta_max: float,
    rows: SoftmaxRows,
) -> torch.Tensor:
    """The tail mean ``clip((tr S^ - sum_{i<=k} sigma_i) / (n - k), 0, delta_max)`` per batch item and
    head (``rows``: :func:`softmax_rows`; ``n``: the sequence's real tokens), capped so that the shift
    never takes the approximation's trace past the estimated trace of S: ``delta <= (tr S^ - tr(F
    pinv(A) B)) / n``. A scalar shift adds delta to every row's own weight; where the approximant
    already gives rows their own weight (local attention: neighbours that a segment mean blurs into
    the diagonal), the uncapped tail mean overshoots every one of them (``core`` was 18.96x Nyström's
    error at n = 256 without the cap, 4.33x with it, before the band check; docs/results.md)."""
    trace = rows.diagonal.sum(dim=-1)
    top = top_singular_values(f, pinv_a, rank)
    count = f.mask.sum(dim=-1)
    tail = (count.to(trace.dtype) - rank).clamp_min(1)[:, None]
    delta = ((trace - top) / tail).clamp(0.0, delta_max)
    own = approximant_diagonal(f.f, pinv_a, f.b)
    own = torch.where(f.mask[:, None, :], own, own.new_zeros(())) if f.padded else own
    room = (trace - own.sum(dim=-1)) / count.clamp_min(1).to(trace.dtype)[:, None]
    return torch.minimum(delta, room.clamp_min(0.0))
