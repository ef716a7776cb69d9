"""The Nyström pieces shared by Nyström and spectral-shift attention.

Per batch item and head, with ``Q, K`` scaled by ``d^-1/4`` and ``m`` landmarks (masked segment means):
``F = softmax(Q K~^T)`` (n x m), ``A = softmax(Q~ K~^T)`` (m x m), ``B = softmax(Q~ K^T + mask)`` (m x n).

The sequence is padded at the end to a multiple of ``m`` with masked positions. A segment without a
real token gets an *empty* landmark: its column of ``F`` and ``A`` and its row of ``A`` and ``B`` are
zero, and :func:`landmark_system` puts a 1 on its diagonal, so the landmark matrix is block diagonal
``diag(A_valid, I)``. The result is then exactly Nyström on the non-empty landmarks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def masked_value(dtype: torch.dtype) -> float:
    # Finite rather than -inf: a row whose entries are all masked (a fully padded sequence) becomes
    # uniform instead of NaN, and NaN never reaches real positions through 0 * NaN.
    return torch.finfo(dtype).min


@dataclass
class NystromFactors:
    q: torch.Tensor  # (b, h, N, d) scaled, padded, zero at padded positions (N = n padded to m * l)
    k: torch.Tensor  # (b, h, N, d) idem
    v: torch.Tensor  # (b, h, N, d) padded, zero at padded positions
    mask: torch.Tensor  # (b, N) bool, True = real token
    counts: torch.Tensor  # (b, m) real tokens per segment
    valid: torch.Tensor  # (b, m) bool, landmark has at least one real token
    f_row_max: torch.Tensor | None  # (b, h, N) max_j of Q K~^T (no grad), when asked for
    f: torch.Tensor  # (b, h, N, m), zero rows at padded queries
    a: torch.Tensor  # (b, h, m, m), zero rows and columns at empty landmarks
    b: torch.Tensor  # (b, h, m, N), zero rows at empty landmarks and zero columns at padded keys
    n: int  # original length
    segment: int  # l, tokens per segment
    padded: bool  # whether any position is masked (known without a device sync)


def segment_means(x: torch.Tensor, counts: torch.Tensor, num_segments: int) -> torch.Tensor:
    """Means over real tokens of ``m`` contiguous segments; ``x`` must be zero at padded positions."""
    b, h, n, d = x.shape
    sums = x.view(b, h, num_segments, n // num_segments, d).sum(dim=-2)
    return sums / counts.clamp_min(1).to(x.dtype)[:, None, :, None]


def expand_segments(y: torch.Tensor, segment: int) -> torch.Tensor:
    """``E y``: repeat each segment's row over its ``l`` tokens, (b, h, m, d) -> (b, h, m * l, d)."""
    b, h, m, d = y.shape
    return y[:, :, :, None, :].expand(b, h, m, segment, d).reshape(b, h, m * segment, d)


def pad_and_mask(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_padding_mask: torch.Tensor | None, m: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, bool]:
    """Pad to a multiple of ``m`` at the end and zero every padded position.

    Zeroing (``where``, not multiplication, so inf/NaN in padding cannot leak) keeps padded tokens out
    of the landmark means, the values and the convolution skip. Returns ``padded``: whether any
    position may be masked; without padding every masking step below is skipped (it costs several
    passes over n x m tensors).
    """
    b, _, n, _ = q.shape
    pad = (-n) % m
    padded = key_padding_mask is not None or pad > 0
    mask = key_padding_mask
    if mask is None:
        mask = torch.ones(b, n, dtype=torch.bool, device=q.device)
    if pad:
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
        mask = F.pad(mask, (0, pad), value=False)
    if padded:
        keep = mask[:, None, :, None]
        zero = q.new_zeros(())
        q, k, v = (torch.where(keep, t, zero) for t in (q, k, v))
    return q, k, v, mask, padded


def nystrom_factors(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_padding_mask: torch.Tensor | None,
    m: int,
    keep_row_max: bool = False,
) -> NystromFactors:
    """The landmark pieces. ``keep_row_max``: also return each row's max logit of ``F`` (with
    ``max_j F_ij`` it gives the row's log-normaliser for free, see :mod:`attention._delta`)."""
    n, d = q.shape[-2], q.shape[-1]
    q, k, v, mask, padded = pad_and_mask(q, k, v, key_padding_mask, m)
    scale = d**-0.25
    q, k = q * scale, k * scale
    segment = q.shape[-2] // m
    counts = mask.view(mask.shape[0], m, segment).sum(dim=-1)
    valid = counts > 0
    q_land = segment_means(q, counts, m)
    k_land = segment_means(k, counts, m)

    f_logits = q @ k_land.transpose(-1, -2)
    a_logits = q_land @ k_land.transpose(-1, -2)
    b_logits = q_land @ k.transpose(-1, -2)
    if padded:
        neg = masked_value(q.dtype)
        empty_col = ~valid[:, None, None, :]
        f_logits = f_logits.masked_fill(empty_col, neg)
        a_logits = a_logits.masked_fill(empty_col, neg)
        b_logits = b_logits.masked_fill(~mask[:, None, None, :], neg)
    f_row_max = f_logits.detach().amax(dim=-1) if keep_row_max else None
    f = f_logits.softmax(dim=-1)
    a = a_logits.softmax(dim=-1)
    b = b_logits.softmax(dim=-1)
    if padded:
        # Padded query rows of F are not part of S (zeroing them keeps them out of the spectral
        # estimates); empty landmarks get zero rows in A and B (see the module doc).
        f = f * mask[:, None, :, None].to(f.dtype)
        a = a * (valid[:, None, :, None] & valid[:, None, None, :]).to(a.dtype)
        b = b * valid[:, None, :, None].to(b.dtype)
    return NystromFactors(q, k, v, mask, counts, valid, f_row_max, f, a, b, n, segment, padded)


def landmark_system(a: torch.Tensor, valid: torch.Tensor, delta: torch.Tensor | None = None) -> torch.Tensor:
    """``A - delta I`` on the non-empty landmarks, identity on the empty ones (see module doc)."""
    valid_f = valid.to(a.dtype)[:, None, :]  # (b, 1, m), broadcast over heads
    diag = 1.0 - valid_f
    if delta is not None:
        diag = diag - delta[..., None] * valid_f
    return a + torch.diag_embed(diag)


def masked_softmax_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_padding_mask: torch.Tensor | None
) -> torch.Tensor:
    """Exact attention, used when ``m >= n`` (there is nothing to approximate) and as a reference."""
    logits = (q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5
    if key_padding_mask is not None:
        logits = logits.masked_fill(~key_padding_mask[:, None, None, :], masked_value(logits.dtype))
        v = torch.where(key_padding_mask[:, None, :, None], v, v.new_zeros(()))
    return logits.softmax(dim=-1) @ v
