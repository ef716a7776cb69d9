"""The spectral-shift layer: Nyström plus a shift that carries what the rank-m factorisation misses.

From SS-Nyström (``K ~ C U C^T + delta I``; Wang, Zhang, Qian and Zhang, KDD 2014) applied to softmax
attention (arXiv 2103.05638); the algorithm as implemented and measured is in docs/attention.md. Two
forms:

- ``diagonal`` (the default): one shift ``d_i`` per row; with ``delta=trace``
  ``d_i = clip(s^_ii - (F pinv(A) B)_ii, 0, delta_max)`` restores the row's own softmax weight that
  the approximant ``F pinv(A) B`` misses, and the row's other weights shrink so that it keeps its
  sum (see :meth:`SpectralShiftAttention.combine_diagonal`); with ``delta=fixed`` ``d_i = fixed_delta``.
- ``core`` (the paper's): ``F pinv(A - delta I) (B V) + delta V`` with one ``delta >= 0`` per batch
  item and head, the estimated tail mean of the spectrum (``trace``, band-checked, see
  :mod:`attention.spectral_shift.band_check`) or ``fixed_delta``.

Both reduce to Nyström at ``delta = 0`` and stay O(n m d) (``diagonal``: O(n m^2) for ``F pinv(A)``).
Everything but the combination step is inherited from Nyström.
"""

from __future__ import annotations

import math

import torch

from attention._landmarks import NystromFactors, landmark_system
from attention.base import Knob, choice, integer
from attention.nystrom import NystromAttention
from attention.spectral_shift.band_check import CHECKS, checked_delta
from attention.spectral_shift.delta import (
    NORMALISERS,
    approximant_diagonal,
    diagonal_shift,
    softmax_rows,
    trace_delta,
)

FORMS = ("core", "diagonal")
ESTIMATORS = ("trace", "fixed")
# The knob of a removed variant that every run recorded before the pruning names (the sampled
# normaliser's key count): inert in every kept variant, so it is dropped, and such a run still
# rebuilds from its record (lra.bench fidelity --checkpoint). The yaml no longer has it, so no
# new run can set it.
RETIRED_KNOBS = ("num_samples",)


def finite(positive: bool):
    """A check: a finite number, > 0 (``positive``) or >= 0."""

    def check(value, key: str) -> None:
        ok = isinstance(value, (int, float)) and math.isfinite(value)
        if not (ok and (value > 0 if positive else value >= 0)):
            bound = ">" if positive else ">="
            raise ValueError(f"attention.{key} must be a finite number {bound} 0; got {value!r}")

    return check


class SpectralShiftAttention(NystromAttention):
    """Nyström's knobs, and: ``form`` (diagonal|core), ``delta`` (trace|fixed), ``rank`` (k leading
    singular values kept out of the shift: ``core`` with ``trace``), ``delta_max`` (clip of the
    estimated shift), ``detach_delta`` (no gradient through the estimated shift), ``normaliser``
    (moments|free, for ``trace``), ``window`` (keys within this many positions of a row enter its
    normaliser exactly; 0 = none), ``delta_check`` (band|none: whether ``core`` backtracks an estimated
    delta to the candidate that fits the estimated band of S best), ``fixed_delta`` (the shift for
    ``delta=fixed``; 0 reproduces Nyström exactly). Their defaults are here only (conf/attention/
    spectral_shift.yaml repeats them, tested equal).

    After every forward ``self.diagnostics["delta"]`` holds delta per head, averaged over the batch.
    """

    knobs = {
        **NystromAttention.knobs,  # landmarks, pseudo-inverse and the conv skip, as Nyström's
        # diagonal: one shift per row, restoring each row's own weight | core: F pinv(A - dI) BV + dV (the paper's)
        "form": choice("diagonal", FORMS),
        "delta": choice("trace", ESTIMATORS),  # trace (from each row's own weight) | fixed (fixed_delta)
        # k: leading singular values of the approximant kept out of core's trace delta; checked in
        # __init__: its bound depends on num_landmarks, form and delta
        "rank": Knob(8),
        "delta_max": Knob(
            1.0, finite(positive=True), float
        ),  # the estimated shift is clipped to [0, delta_max]
        # no gradient through the estimated shift (singular-value gradients are ill-conditioned)
        "detach_delta": Knob(True, cast=bool),
        # each row's softmax normaliser from the landmarks: moments (logits raised by their segment's
        # variance) | free (segment means alone)
        "normaliser": choice("moments", NORMALISERS),
        "window": integer(16, minimum=0),  # keys this close to a row enter its normaliser exactly (0: none)
        # core, trace: keep delta, delta/2, .., or 0, whichever fits the window's band of S best | none
        "delta_check": choice("band", CHECKS),
        "fixed_delta": Knob(0.0, finite(positive=False), float),  # delta=fixed's shift (0 is Nyström exactly)
    }

    def __init__(self, num_heads: int, head_dim: int, max_len: int | None = None, **settings):
        for key in RETIRED_KNOBS:
            settings.pop(key, None)
        super().__init__(num_heads, head_dim, max_len, **settings)
        # rank only matters where leading singular values are subtracted: core with the trace estimator.
        uses_rank = self.delta == "trace" and self.form == "core"
        max_rank = self.num_landmarks - 1 if uses_rank else math.inf
        rank = self.rank
        if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank <= max_rank:
            raise ValueError(
                f"attention.rank must be an integer in [0, num_landmarks) = [0, {self.num_landmarks}) for "
                f"delta={self.delta}; got {rank!r}"
            )
        # Both normalisers read the logits of F; only the trace estimator uses a normaliser.
        self.keep_logits = self.delta == "trace"

    def _estimating(self):
        """The context of an estimated shift: no gradient by default (``detach_delta``), since gradients
        through singular values are ill-conditioned exactly when the tail is flat."""
        return torch.set_grad_enabled(torch.is_grad_enabled() and not self.detach_delta)

    # -- delta ---------------------------------------------------------------------------------------

    def estimate_delta(self, f: NystromFactors) -> torch.Tensor:
        """The scalar shift per batch item and head, (b, h): ``fixed_delta``, or the ``trace`` estimate
        (fp32, inside the autocast-free region), band-checked with ``delta_check: band`` for ``core``."""
        bsz, h = f.q.shape[:2]
        if self.delta == "fixed":
            return f.q.new_full((bsz, h), self.fixed_delta)
        with self._estimating():
            pinv_a = self.pseudo_inverse(landmark_system(f.a, f.valid))
            rows = softmax_rows(f, self.normaliser, self.window)
            delta = trace_delta(f, pinv_a, self.rank, self.delta_max, rows)
            if self.form == "core" and self.delta_check == "band":
                delta = checked_delta(f, delta, rows, self.pseudo_inverse, self.window)
            return delta

    # -- combination ---------------------------------------------------------------------------------

    def row_shift(self, f: NystromFactors, own: torch.Tensor) -> torch.Tensor:
        """The ``diagonal`` form's per-row shift ``d`` (b, h, n): estimated from each row's diagonal
        with ``delta=trace`` (``own``: the approximant's diagonal), else ``fixed_delta`` on every real
        row."""
        if self.delta != "trace":
            delta = self.estimate_delta(f)
            return delta[..., None] * f.mask[:, None, :].to(delta.dtype)
        with self._estimating():
            return diagonal_shift(f, own, self.delta_max, self.normaliser, self.window)

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
        with self._estimating():
            own = approximant_diagonal(f.f, p, f.b)
        shift = self.row_shift(f, own)
        alpha = (1 - shift / (1 - own).clamp_min(torch.finfo(own.dtype).eps)).clamp(0.0, 1.0)
        out = torch.addcmul(((1 - alpha) * own + shift)[..., None] * f.v, alpha[..., None], y)
        delta = shift.sum(dim=-1) / f.mask.sum(dim=-1).clamp_min(1)[:, None].to(shift.dtype)
        return out, delta

    def combine(self, f: NystromFactors) -> torch.Tensor:
        if self.form == "diagonal":
            out, delta = self.combine_diagonal(f)
        else:  # core
            delta = self.estimate_delta(f)
            p = self.pseudo_inverse(landmark_system(f.a, f.valid, delta))
            out = f.f @ (p @ (f.b @ f.v)) + delta[..., None, None] * f.v
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
