"""Spectral-shift attention (arXiv 2103.05638): Nyström plus a shift that carries what the rank-m
factorisation misses. docs/attention.md describes the algorithm and the evidence for its defaults.

- :mod:`.attention`: the layer, :class:`SpectralShiftAttention` (forms ``diagonal`` and ``core``);
- :mod:`.delta`: the estimators: each row's softmax weight on itself (``moments`` and ``free``
  normalisers), the ``diagonal`` form's per-row shift and the ``core`` form's ``trace`` delta;
- :mod:`.band_check`: the check that backtracks ``core``'s estimated delta (``delta_check: band``);
- :mod:`.window`: the band of exact products around the diagonal that both of those read.
"""

from attention.spectral_shift.attention import ESTIMATORS, FORMS, SpectralShiftAttention

__all__ = ["ESTIMATORS", "FORMS", "SpectralShiftAttention"]
