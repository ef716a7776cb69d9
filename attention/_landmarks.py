"""The Nyström pieces shared by Nyström and spectral-shift attention.

Per batch item and head, with ``m`` landmarks (segment means ``Q~, K~``) and logits scaled by
``d^-1/2``: ``F = softmax(Q K~^T)`` (n x m), ``A = softmax(Q~ K~^T)`` (m x m),
``B = softmax(Q~ K^T + mask)`` (m x n).

Every sequence is segmented by its **own** real length ``L``: its real token of rank ``r`` (0-based,
counting real tokens only) belongs to segment ``floor(r m / L)``, so each of the m segments holds
``L / m`` of its tokens (rounded down or up) whatever the batch's padded length. A sequence's output
is therefore the same alone or beside longer ones. Padded positions belong to no segment.

A sequence shorter than m gets *empty* landmarks: their column of ``F`` and ``A`` and their row of
``A`` are zero (``F``: at its real rows), and :func:`landmark_system` puts a 1 on their diagonal, so
the landmark matrix is block diagonal ``diag(A_valid, I)``. Their row of ``B`` is left as it comes
(finite, never read through ``F``'s zero columns). The attention modules answer such sequences with
exact softmax anyway (:func:`exact_for_short_rows`), as they do when the whole batch is short, so
nothing of theirs computed here reaches an output.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from attention._cached import cached


def masked_value(dtype: torch.dtype) -> float:
    # Finite rather than -inf: a row whose entries are all masked (a fully padded sequence) becomes
    # uniform instead of NaN, and NaN never reaches real positions through 0 * NaN.
    return torch.finfo(dtype).min


@dataclass
class Segments:
    """Which of the ``m`` segments each of the ``n`` positions belongs to.

    ``index`` is None when no sequence is padded and n is a multiple of m: the segments are then the
    contiguous blocks of n / m positions, and reshapes replace the scatter and gather below.
    Otherwise ``index`` is (b, n) with values in [0, m], where m marks padded positions (a bin that
    is discarded).
    """

    m: int
    n: int
    counts: torch.Tensor  # (b, m) real tokens per segment
    index: torch.Tensor | None


def segment_sequences(mask: torch.Tensor | None, batch: int, n: int, m: int, device) -> Segments:
    """Segments of each sequence's real tokens (see the module doc). Costs O(b n), no device sync."""
    if mask is None and n % m == 0:
        counts = torch.full((batch, m), n // m, dtype=torch.long, device=device)
        return Segments(m, n, counts, None)
    if mask is None:
        mask = torch.ones(batch, n, dtype=torch.bool, device=device)
    rank = mask.cumsum(dim=-1) - 1
    length = mask.sum(dim=-1, keepdim=True).clamp_min(1)
    index = torch.where(mask, torch.div(rank * m, length, rounding_mode="floor"), m)
    counts = torch.zeros(batch, m + 1, dtype=torch.long, device=device)
    counts.scatter_add_(1, index, torch.ones_like(index))
    return Segments(m, n, counts[:, :m], index)


def segment_means(x: torch.Tensor, seg: Segments) -> torch.Tensor:
    """Means over each segment's real tokens, (b, h, n, d) -> (b, h, m, d). Values at padded positions
    never enter (they are summed into a discarded bin). Empty segments give zero rows."""
    b, h, n, d = x.shape
    if seg.index is None:
        return x.view(b, h, seg.m, n // seg.m, d).mean(dim=-2)
    index = seg.index[:, None, :, None].expand(b, h, n, d)
    sums = x.new_zeros(b, h, seg.m + 1, d).scatter_add(2, index, x)[:, :, : seg.m]
    return sums / seg.counts.clamp_min(1).to(x.dtype)[:, None, :, None]


def expand_segments(y: torch.Tensor, seg: Segments) -> torch.Tensor:
    """``E y``: every position gets its segment's row, (b, h, m, d) -> (b, h, n, d); zero at padding."""
    b, h, m, d = y.shape
    if seg.index is None:
        return y[:, :, :, None, :].expand(b, h, m, seg.n // m, d).reshape(b, h, seg.n, d)
    rows = torch.cat([y, y.new_zeros(b, h, 1, d)], dim=2)  # row m: what padded positions get
    return rows.gather(2, seg.index[:, None, :, None].expand(b, h, seg.n, d))


@dataclass
class NystromFactors:
    q: torch.Tensor  # (b, h, n, d) as given: not scaled, and not zeroed at padded positions
    k: torch.Tensor  # (b, h, n, d) not scaled, zero at padded positions
    v: torch.Tensor  # (b, h, n, d) zero at padded positions
    mask: torch.Tensor  # (b, n) bool, True = real token
    seg: Segments
    valid: torch.Tensor  # (b, m) bool, landmark has at least one real token
    f_logits: torch.Tensor | None  # (b, h, n, m) the logits F is the softmax of, when asked for
    f: torch.Tensor  # (b, h, n, m); rows at padded queries are finite but meaningless
    a: torch.Tensor  # (b, h, m, m), zero rows and columns at empty landmarks
    b: torch.Tensor  # (b, h, m, n), zero columns at padded keys (rows at empty landmarks: module doc)
    padded: bool  # whether any position may be masked (known without a device sync)
    scale: float = 1.0  # the logits are scale * q . k (d^-1/2)
    k_land: torch.Tensor | None = None  # (b, h, m, d) segment means of k, not scaled (K~ of the logits)

    @property
    def counts(self) -> torch.Tensor:
        return self.seg.counts

    @cached
    def q_scaled(self) -> torch.Tensor:
        """``scale * q``: ``q_scaled @ k^T`` are the attention logits (for the spectral estimates)."""
        return self.q * self.scale


def zero_padding(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_padding_mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Zero every padded position (``where``, not multiplication, so inf/NaN in padding cannot leak)
    and return a mask (all True without padding)."""
    if key_padding_mask is None:
        b, _, n, _ = q.shape
        return q, k, v, torch.ones(b, n, dtype=torch.bool, device=q.device)
    keep = key_padding_mask[:, None, :, None]
    zero = q.new_zeros(())
    q, k, v = (torch.where(keep, t, zero) for t in (q, k, v))
    return q, k, v, key_padding_mask


def _logits(x: torch.Tensor, y_t: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``x @ y_t (+ bias)`` over (b, h, ., .) with the additive mask fused into the GEMM (baddbmm):
    unlike ``masked_fill`` it costs no pass of its own, and no copy of the gradient in backward."""
    if bias is None:
        return x @ y_t
    b, h = x.shape[:2]
    rows, cols = x.shape[-2], y_t.shape[-1]
    out = torch.baddbmm(
        bias.expand(b, h, 1, cols).reshape(b * h, 1, cols),
        x.reshape(b * h, rows, x.shape[-1]),
        y_t.reshape(b * h, y_t.shape[-2], cols),
    )
    return out.view(b, h, rows, cols)


def nystrom_factors(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_padding_mask: torch.Tensor | None,
    m: int,
    keep_logits: bool = False,
) -> NystromFactors:
    """The landmark pieces. ``keep_logits``: also return the logits of ``F`` (the spectral estimates
    read each row's log-normaliser off them and build on them, see :mod:`attention.spectral_shift.delta`).

    Every pass over an n x d or n x m tensor that no real output needs is left out, because these
    passes, not the GEMMs, were most of a padded training step's attention time:

    - K and V are zeroed at the padding (``where``: inf or NaN there cannot reach a real output through
      ``B`` or ``B V``; the conv skip reads V too). Q is not: a padded query's row of ``F`` only
      reaches that padded position's output, which the model discards. (Its non-finite values could
      still poison gradients, as anywhere in a network; the spectral estimates mask such rows before
      any exponential.)
    - ``d^-1/2`` scales the m x d landmark means, not Q and K.
    - Masks enter the logits as an additive bias fused into the GEMM (``baddbmm``), not as
      ``masked_fill``: no pass of its own, and no copy of the gradient in backward.
    - ``B``'s rows at empty landmarks are not zeroed (see the module doc).
    """
    b, _, n, d = q.shape
    padded = key_padding_mask is not None
    zero = q.new_zeros(())
    if padded:
        mask = key_padding_mask
        keep = key_padding_mask[:, None, :, None]
        k, v = torch.where(keep, k, zero), torch.where(keep, v, zero)
    else:
        mask = torch.ones(b, n, dtype=torch.bool, device=q.device)
    scale = d**-0.5
    seg = segment_sequences(key_padding_mask, b, n, m, q.device)
    valid = seg.counts > 0
    # segment_means bins padded positions apart: Q's padded values never enter Q~.
    q_land = segment_means(q, seg) * scale
    k_land = segment_means(k, seg)

    landmark_bias = key_bias = None
    if padded:
        neg = masked_value(q.dtype)
        landmark_bias = torch.where(valid, zero, neg)[:, None, None, :]  # (b, 1, 1, m)
        key_bias = torch.where(mask, zero, neg)[:, None, None, :]  # (b, 1, 1, n)
    f_logits = _logits(q, (k_land * scale).transpose(-1, -2), landmark_bias)
    a_logits = _logits(q_land, k_land.transpose(-1, -2), landmark_bias)
    b_logits = _logits(q_land, k.transpose(-1, -2), key_bias)
    f = f_logits.softmax(dim=-1)
    a = a_logits.softmax(dim=-1)
    b_ = b_logits.softmax(dim=-1)
    if padded:
        # Empty landmarks get zero rows in A (m x m, cheap), so that A is block diagonal (module doc).
        a = a * (valid[:, None, :, None] & valid[:, None, None, :]).to(a.dtype)
    kept = f_logits if keep_logits else None
    return NystromFactors(q, k, v, mask, seg, valid, kept, f, a, b_, padded, scale, k_land)


def landmark_system(a: torch.Tensor, valid: torch.Tensor, delta: torch.Tensor | None = None) -> torch.Tensor:
    """``A - delta I`` on the non-empty landmarks, identity on the empty ones (see module doc)."""
    valid_f = valid.to(a.dtype)[:, None, :]  # (b, 1, m), broadcast over heads
    diag = 1.0 - valid_f
    if delta is not None:
        diag = diag - delta[..., None] * valid_f
    return a + torch.diag_embed(diag)


def masked_softmax_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_padding_mask: torch.Tensor | None,
    zeroed: bool = False,
) -> torch.Tensor:
    """Exact attention, used when ``m >= n`` (there is nothing to approximate) and as a reference.
    ``zeroed``: the caller has zeroed ``k`` and ``v`` at the padding, so the mask can enter as an
    additive bias fused into the logits' GEMM and ``v`` needs no zeroing (two passes fewer each way);
    otherwise padded logits are replaced, so that inf or NaN in padded keys cannot leak."""
    scale = q.shape[-1] ** -0.5
    if key_padding_mask is not None and zeroed:
        bias = torch.where(key_padding_mask, q.new_zeros(()), masked_value(q.dtype))[:, None, None, :]
        return _logits(q * scale, k.transpose(-1, -2), bias).softmax(dim=-1) @ v
    logits = (q @ k.transpose(-1, -2)) * scale
    if key_padding_mask is not None:
        logits = logits.masked_fill(~key_padding_mask[:, None, None, :], masked_value(logits.dtype))
        v = torch.where(key_padding_mask[:, None, :, None], v, v.new_zeros(()))
    return logits.softmax(dim=-1) @ v


def exact_for_short_rows(
    out: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_padding_mask: torch.Tensor,
    m: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace the outputs of sequences with at most ``m`` real tokens by exact softmax attention.

    Alone, such a sequence (n <= m) gets exact attention; in a batch padded beyond m it must get the
    same. Without a device sync: the first m real tokens of *every* sequence are gathered (a stable
    sort puts real positions first), exact attention runs on those (b, h, m, m), and is scattered back
    only where the sequence is short. Returns the outputs and the (b,) bool tensor of short rows.
    """
    b, h, n, d = q.shape
    short = key_padding_mask.sum(dim=-1) <= m
    order = torch.sort((~key_padding_mask).to(torch.uint8), dim=-1, stable=True).indices[:, :m]
    sub_mask = key_padding_mask.gather(1, order)
    idx = order[:, None, :, None].expand(b, h, m, d)
    # Gather, then zero the padding of the (b, h, m, d) pieces: zeroing all n positions first cost
    # three full passes (and three more in backward) for the m positions used.
    q_m, k_m, v_m, _ = zero_padding(q.gather(2, idx), k.gather(2, idx), v.gather(2, idx), sub_mask)
    exact = masked_softmax_attention(q_m, k_m, v_m, sub_mask, zeroed=True)
    kept = torch.where(short[:, None, None, None], exact, out.gather(2, idx))
    return out.scatter(2, idx, kept), short
