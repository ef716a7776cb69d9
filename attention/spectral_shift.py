"""Spectral-shift attention: Nyström plus a shift ``delta I`` that carries the flat tail of the spectrum.

From SS-Nyström (``K ~ C U C^T + delta I``) applied to softmax attention, as fixed in
/work/shared/SPECTRAL_SHIFT.md. One ``delta >= 0`` per batch item and head; three forms:

- ``core``:       ``F pinv(A - delta I) (B V) + delta V``
- ``sketch``:     ``(F - delta E) pinv(A - delta I) (B V - delta V~) + delta V`` (exact when m = n)
- ``projection``: ``F pinv(A) (B V) + delta (V - E V~)`` (rows still sum to 1; exact when m = n)

``E`` is the n x m segment indicator and ``V~`` the segment means of V. All reduce to Nyström at
``delta = 0`` and stay O(n m d). Everything but the combination step is inherited from Nyström.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from attention._delta import NORMALISERS, landmark_delta, trace_delta
from attention._landmarks import NystromFactors, expand_segments, landmark_system, segment_means
from attention.nystrom import NystromAttention, _check_positive_int

FORMS = ("core", "sketch", "projection")
ESTIMATORS = ("trace", "landmark", "learned", "fixed")


class SpectralShiftAttention(NystromAttention):
    """Knobs (beyond Nyström's): ``form`` (core|sketch|projection), ``delta`` (trace|landmark|learned|
    fixed), ``rank`` (k leading singular values kept out of the shift), ``delta_max`` (clip / scale of
    delta), ``detach_delta`` (no gradient through estimated delta), ``normaliser`` (free|sampled, for
    ``trace``), ``num_samples`` (keys sampled by the ``sampled`` normaliser), ``fixed_delta``.

    After every forward ``self.diagnostics["delta"]`` holds delta per head, averaged over the batch.
    """

    def __init__(
        self,
        num_heads: int,
        head_dim: int,
        max_len: int | None = None,
        num_landmarks: int = 64,
        pinv: str = "newton",
        pinv_iterations: int = 6,
        conv_kernel: int = 35,
        form: str = "core",
        delta: str = "trace",
        rank: int = 8,
        delta_max: float = 1.0,
        detach_delta: bool = True,
        normaliser: str = "free",
        num_samples: int = 64,
        fixed_delta: float = 0.0,
    ):
        super().__init__(num_heads, head_dim, max_len, num_landmarks, pinv, pinv_iterations, conv_kernel)
        if form not in FORMS:
            raise ValueError(f"attention.form must be one of {'|'.join(FORMS)}; got {form!r}")
        if delta not in ESTIMATORS:
            raise ValueError(f"attention.delta must be one of {'|'.join(ESTIMATORS)}; got {delta!r}")
        if normaliser not in NORMALISERS:
            raise ValueError(
                f"attention.normaliser must be one of {'|'.join(NORMALISERS)}; got {normaliser!r}"
            )
        # rank only matters to the estimators that subtract leading singular values / eigenvalues.
        max_rank = num_landmarks - 1 if delta in ("trace", "landmark") else math.inf
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
        self.form = form
        self.delta = delta
        self.rank = rank
        self.delta_max = float(delta_max)
        self.detach_delta = bool(detach_delta)
        self.normaliser = normaliser
        self.num_samples = num_samples
        self.fixed_delta = float(fixed_delta)
        self.keep_row_max = delta == "trace" and normaliser == "free"
        # learned: delta = delta_max * sigmoid(theta) per head; theta = 0 starts at delta_max / 2.
        self.delta_logit = nn.Parameter(torch.zeros(num_heads)) if delta == "learned" else None

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, form={self.form}, delta={self.delta}, rank={self.rank}, "
            f"delta_max={self.delta_max}, detach_delta={self.detach_delta}, normaliser={self.normaliser}"
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
            if self.delta == "landmark":
                return landmark_delta(f, self.rank, self.delta_max)
            if pinv_a is None:
                pinv_a = self.pseudo_inverse(landmark_system(f.a, f.valid))
            return trace_delta(f, pinv_a, self.rank, self.delta_max, self.normaliser, self.num_samples)

    # -- combination ---------------------------------------------------------------------------------

    def combine(self, f: NystromFactors) -> torch.Tensor:
        if self.form == "projection":
            # Projection keeps pinv(A) itself; the trace estimator reuses it.
            p = self.pseudo_inverse(landmark_system(f.a, f.valid))
            reuse = p.detach() if self.detach_delta else p
            delta = self.estimate_delta(f, reuse if self.delta == "trace" else None)
            d = delta[..., None, None]
            v_means = segment_means(f.v, f.counts, self.num_landmarks)
            out = f.f @ (p @ (f.b @ f.v)) + d * (f.v - expand_segments(v_means, f.segment))
        else:
            delta = self.estimate_delta(f, None)
            d = delta[..., None, None]
            p = self.pseudo_inverse(landmark_system(f.a, f.valid, delta))
            if self.form == "core":
                out = f.f @ (p @ (f.b @ f.v)) + d * f.v
            else:  # sketch
                v_means = segment_means(f.v, f.counts, self.num_landmarks)
                w = p @ (f.b @ f.v - d * v_means)
                out = f.f @ w - d * expand_segments(w, f.segment) + d * f.v
        self.diagnostics["delta"] = delta.detach().float().mean(dim=0)
        return out

    def on_exact_fallback(self, q: torch.Tensor) -> None:
        # m >= n: exact softmax, no shift applied.
        self.diagnostics["delta"] = torch.zeros(q.shape[1], device=q.device)
