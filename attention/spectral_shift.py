"""Spectral-shift attention: Nyström plus a shift ``delta I`` that carries the flat tail of the spectrum.

From SS-Nyström (``K ~ C U C^T + delta I``; Wang, Zhang, Qian and Zhang, KDD 2014) applied to softmax
attention (arXiv 2103.05638); the algorithm as implemented and measured is in docs/attention.md. One
``delta >= 0`` per batch item and head, or one per row (``diagonal``); four forms:

- ``core``:       ``F pinv(A - delta I) (B V) + delta V``
- ``sketch``:     ``(F - delta E) pinv(A - delta I) (B V - delta V~) + delta V`` (exact when m = n)
- ``projection``: ``F pinv(A) (B V) + delta (V - E V~)`` (rows still sum to 1; exact when m = n)
- ``diagonal``:   one shift ``d_i`` per row; with ``delta=trace``
  ``d_i = clip(s^_ii - (F pinv(A) B)_ii, 0, delta_max)`` restores the row's own softmax weight that
  the approximant ``F pinv(A) B`` misses, and the row's other weights shrink so that it keeps its
  sum (see :meth:`SpectralShiftAttention.combine_diagonal`); other estimators: ``d_i = delta``

``E`` is the n x m segment indicator and ``V~`` the segment means of V. All reduce to Nyström at
``delta = 0`` and stay O(n m d) (``diagonal``: O(n m^2) for ``F pinv(A)``). Everything but the
combination step is inherited from Nyström.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from attention._delta import (
    NORMALISERS,
    approximant_diagonal,
    diagonal_shift,
    landmark_delta,
    softmax_rows,
    trace_delta,
)
from attention._landmarks import NystromFactors, expand_segments, landmark_system, segment_means
from attention._shift_check import CHECKS, checked_delta
from attention.nystrom import NystromAttention, _check_positive_int

FORMS = ("core", "sketch", "projection", "diagonal")
ESTIMATORS = ("trace", "landmark", "learned", "fixed")


class SpectralShiftAttention(NystromAttention):
    """Knobs (beyond Nyström's): ``form`` (core|sketch|projection|diagonal), ``delta`` (trace|landmark|learned|
    fixed), ``rank`` (k leading singular values kept out of the shift), ``delta_max`` (clip / scale of
    delta), ``detach_delta`` (no gradient through estimated delta), ``normaliser`` (free|moments|sampled, for
    ``trace``), ``num_samples`` (keys sampled by the ``sampled`` normaliser), ``window`` (keys within
    this many positions of a row enter its normaliser exactly; 0 = none), ``delta_check`` (band|none:
    whether the scalar forms backtrack an estimated delta, ``trace`` or ``landmark``, to the candidate
    that fits the estimated band of S best, see :mod:`attention._shift_check`), ``fixed_delta``.

    After every forward ``self.diagnostics["delta"]`` holds delta per head, averaged over the batch.
    """

    def __init__(
        self,
        num_heads: int,
        head_dim: int,
        max_len: int | None = None,
        *,
        form: str = "diagonal",
        delta: str = "trace",
        rank: int = 8,
        delta_max: float = 1.0,
        detach_delta: bool = True,
        normaliser: str = "moments",
        num_samples: int = 64,
        window: int = 16,
        delta_check: str = "band",
        fixed_delta: float = 0.0,
        **nystrom_knobs,
    ):
        """``nystrom_knobs``: Nyström's own (num_landmarks, pinv, pinv_iterations, conv_kernel, conv_impl)."""
        super().__init__(num_heads, head_dim, max_len, **nystrom_knobs)
        num_landmarks = self.num_landmarks
        if form not in FORMS:
            raise ValueError(f"attention.form must be one of {'|'.join(FORMS)}; got {form!r}")
        if delta not in ESTIMATORS:
            raise ValueError(f"attention.delta must be one of {'|'.join(ESTIMATORS)}; got {delta!r}")
        if delta_check not in CHECKS:
            raise ValueError(f"attention.delta_check must be one of {'|'.join(CHECKS)}; got {delta_check!r}")
        if normaliser not in NORMALISERS:
            raise ValueError(
                f"attention.normaliser must be one of {'|'.join(NORMALISERS)}; got {normaliser!r}"
            )
        # rank only matters to the estimators that subtract leading singular values / eigenvalues.
        uses_rank = delta == "landmark" or (delta == "trace" and form != "diagonal")
        max_rank = num_landmarks - 1 if uses_rank else math.inf
        if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank <= max_rank:
            raise ValueError(
                f"attention.rank must be an integer in [0, num_landmarks) = [0, {num_landmarks}) for "
                f"delta={delta}; got {rank!r}"
            )
        if not (isinstance(delta_max, (int, float)) and math.isfinite(delta_max) and delta_max > 0):
            raise ValueError(f"attention.delta_max must be a finite number > 0; got {delta_max!r}")
        if not (isinstance(fixed_delta, (int, float)) and math.isfinite(fixed_delta) and fixed_delta >= 0):
            raise ValueError(f"attention.fixed_delta must be a finite number >= 0; got {fixed_delta!r}")
        _check_positive_int(num_samples, "num_samples")
        _check_positive_int(window, "window", minimum=0)
        self.form = form
        self.delta = delta
        self.rank = rank
        self.delta_max = float(delta_max)
        self.detach_delta = bool(detach_delta)
        self.normaliser = normaliser
        self.num_samples = num_samples
        self.window = window
        self.delta_check = delta_check
        self.fixed_delta = float(fixed_delta)
        # The free and moments normalisers read the logits of F: the trace estimator uses them, and so
        # does the band check of an estimated delta (landmark too) in the scalar forms.
        checked = delta == "landmark" and form != "diagonal" and delta_check == "band"
        self.keep_logits = normaliser != "sampled" and (delta == "trace" or checked)
        # learned: delta = delta_max * sigmoid(theta) per head; theta = 0 starts at delta_max / 2.
        self.delta_logit = nn.Parameter(torch.zeros(num_heads)) if delta == "learned" else None

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, form={self.form}, delta={self.delta}, rank={self.rank}, "
            f"delta_max={self.delta_max}, detach_delta={self.detach_delta}, normaliser={self.normaliser}, "
            f"window={self.window}, delta_check={self.delta_check}"
        )

    # -- delta ---------------------------------------------------------------------------------------

    def estimate_delta(self, f: NystromFactors, pinv_a: torch.Tensor | None) -> torch.Tensor:
        """delta of shape (b, h); ``pinv_a`` is pinv(A) when the caller already has it."""
        bsz, h = f.q.shape[:2]
        if self.delta == "fixed":
            return f.q.new_full((bsz, h), self.fixed_delta)
        if self.delta == "learned":
            theta = self.delta_logit.to(f.q.dtype)
            return (self.delta_max * torch.sigmoid(theta)).expand(bsz, h)
        # Estimated delta: fp32 (we are inside the autocast-free region) and, by default, no gradient:
        # gradients through singular values are ill-conditioned exactly when the tail is flat.
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.detach_delta):
            check = self.form != "diagonal" and self.delta_check == "band"
            rows = None
            if self.delta == "landmark":
                delta = landmark_delta(f, self.rank, self.delta_max)
            else:
                if pinv_a is None:
                    pinv_a = self.pseudo_inverse(landmark_system(f.a, f.valid))
                rows = softmax_rows(f, self.normaliser, self.num_samples, self.window)
                delta = trace_delta(f, pinv_a, self.rank, self.delta_max, rows)
            if check:
                rows = rows or softmax_rows(f, self.normaliser, self.num_samples, self.window)
                delta = checked_delta(
                    f, delta, rows, self.form, self.pseudo_inverse, self.window, pinv_a=pinv_a
                )
            return delta

    # -- combination ---------------------------------------------------------------------------------

    def row_shift(self, f: NystromFactors, p: torch.Tensor, own: torch.Tensor) -> torch.Tensor:
        """The ``diagonal`` form's per-row shift ``d`` (b, h, n): estimated from each row's diagonal
        with ``delta=trace`` (``own``: the approximant's diagonal), else the estimator's one delta per
        head on every real row."""
        if self.delta != "trace":
            delta = self.estimate_delta(f, p)
            return delta[..., None] * f.mask[:, None, :].to(delta.dtype)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.detach_delta):
            return diagonal_shift(f, own, self.delta_max, self.normaliser, self.num_samples, self.window)

    def combine_diagonal(self, f: NystromFactors) -> tuple[torch.Tensor, torch.Tensor]:
        """``diagonal``: row i keeps its own weight ``a_i + d_i`` (the approximant's diagonal ``a_i``
        plus the shift) and spreads the rest, ``1 - a_i - d_i``, as the approximant spreads its
        off-diagonal part: ``out_i = alpha_i (y_i - a_i v_i) + (a_i + d_i) v_i`` with
        ``y = F pinv(A) B V`` and ``alpha_i = 1 - d_i / (1 - a_i)``. Rows keep the approximant's sum
        (about 1), and ``d = 0`` is Nyström. Returns the output and the mean shift per item and head.

        ``y`` is evaluated right to left as in Nyström; ``a_i`` (O(n m^2): row i of ``F pinv(A)``
        dotted with column i of ``B``) is, with ``detach_delta``, a constant for autograd like the
        estimated shift, so the shift adds no backward pass through the landmark products."""
        p = self.pseudo_inverse(landmark_system(f.a, f.valid))
        y = f.f @ (p @ (f.b @ f.v))
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.detach_delta):
            own = approximant_diagonal(f.f, p, f.b)
        shift = self.row_shift(f, p, own)
        alpha = (1 - shift / (1 - own).clamp_min(torch.finfo(own.dtype).eps)).clamp(0.0, 1.0)
        out = torch.addcmul(((1 - alpha) * own + shift)[..., None] * f.v, alpha[..., None], y)
        delta = shift.sum(dim=-1) / f.mask.sum(dim=-1).clamp_min(1)[:, None].to(shift.dtype)
        return out, delta

    def combine(self, f: NystromFactors) -> torch.Tensor:
        if self.form == "diagonal":
            out, delta = self.combine_diagonal(f)
        elif self.form == "projection":
            # Projection keeps pinv(A) itself; the trace estimator reuses it.
            p = self.pseudo_inverse(landmark_system(f.a, f.valid))
            reuse = p.detach() if self.detach_delta else p
            delta = self.estimate_delta(f, reuse if self.delta == "trace" else None)
            d = delta[..., None, None]
            v_means = segment_means(f.v, f.seg)
            out = f.f @ (p @ (f.b @ f.v)) + d * (f.v - expand_segments(v_means, f.seg))
        else:
            delta = self.estimate_delta(f, None)
            d = delta[..., None, None]
            p = self.pseudo_inverse(landmark_system(f.a, f.valid, delta))
            if self.form == "core":
                out = f.f @ (p @ (f.b @ f.v)) + d * f.v
            else:  # sketch
                v_means = segment_means(f.v, f.seg)
                w = p @ (f.b @ f.v - d * v_means)
                out = f.f @ w - d * expand_segments(w, f.seg) + d * f.v
        self._delta_rows = delta.detach().float()
        self.diagnostics["delta"] = self._delta_rows.mean(dim=0)
        return out

    def on_short_rows(self, short: torch.Tensor) -> None:
        # Sequences of at most m real tokens were answered exactly: no shift was applied to them.
        rows = torch.where(short[:, None], 0.0, self._delta_rows)
        self.diagnostics["delta"] = rows.mean(dim=0)

    def on_exact_fallback(self, q: torch.Tensor) -> None:
        # m >= n: exact softmax, no shift applied.
        self.diagnostics["delta"] = torch.zeros(q.shape[1], device=q.device)
