"""Named attention settings compared by the fidelity benchmark.

Every setting is a variant class plus knobs; the conv skip is off everywhere (it is a learned layer,
not part of the approximation). ``nystrom`` is the baseline each spectral-shift setting is judged
against; the grid covers the three forms, the delta estimators, the normalisers, the rank k and
delta_max, so that the benchmark (not intuition) picks the defaults.
"""

from __future__ import annotations

from attention.nystrom import NystromAttention
from attention.spectral_shift import SpectralShiftAttention


def fidelity_settings(landmarks: int) -> dict[str, tuple[type, dict]]:
    base = {"num_landmarks": landmarks, "conv_kernel": 0}
    settings: dict[str, tuple[type, dict]] = {
        "nystrom": (NystromAttention, dict(base)),
        "nystrom-exact-pinv": (NystromAttention, {**base, "pinv": "exact"}),
    }
    ss = {**base, "rank": min(8, landmarks - 1)}  # the default k, kept valid for tiny smoke-test m
    estimators = {
        "trace-free": {"delta": "trace", "normaliser": "free"},
        "trace-sampled": {"delta": "trace", "normaliser": "sampled", "num_samples": 64},
        "landmark": {"delta": "landmark"},
    }
    for form in ("core", "sketch", "projection"):
        for est_name, est in estimators.items():
            settings[f"ss-{form}-{est_name}"] = (SpectralShiftAttention, {**ss, "form": form, **est})
    for rank in (0, 4, 16, 32):
        if rank < landmarks:
            knobs = {**base, "form": "core", "delta": "trace", "rank": rank}
            settings[f"ss-core-trace-free-k{rank}"] = (SpectralShiftAttention, knobs)
    for form in ("core", "sketch", "projection"):
        settings[f"ss-{form}-trace-free-dmax0.5"] = (
            SpectralShiftAttention,
            {**ss, "form": form, "delta": "trace", "delta_max": 0.5},
        )
    settings["ss-core-trace-sampled-r256"] = (
        SpectralShiftAttention,
        {**ss, "form": "core", "delta": "trace", "normaliser": "sampled", "num_samples": 256},
    )
    return settings
