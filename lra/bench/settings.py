"""Named attention settings compared by the fidelity benchmark: registry variants (``lra/registry.py``).

Every attention config appears at its defaults, and spectral shift also across a grid of its knobs
(its two forms, the two normalisers and their window, the rank k, delta_max), so that
the benchmark, not intuition, picks the defaults. The conv skip is off everywhere (it is a learned
layer, not part of the approximation) and so is dropout; ``nystrom`` is the baseline every setting is
judged against.
"""

from __future__ import annotations

from lra.registry import attention_names, has_knob

SPECTRAL_SHIFT_GRID = {
    "ss-core-trace-free": "form=core,delta=trace,normaliser=free",
    "ss-core-trace-moments": "form=core,delta=trace,normaliser=moments",
    "ss-core-trace-free-w16": "form=core,delta=trace,normaliser=free,window=16",
    "ss-diagonal-trace-free": "form=diagonal,delta=trace,normaliser=free",
    "ss-diagonal-trace-free-w8": "form=diagonal,delta=trace,normaliser=free,window=8",
    "ss-diagonal-trace-free-w16": "form=diagonal,delta=trace,normaliser=free,window=16",
    "ss-diagonal-trace-moments": "form=diagonal,delta=trace,normaliser=moments",
    # The window's reach, from none to twice the default: the local regimes show which fail.
    "ss-diagonal-trace-moments-w0": "form=diagonal,delta=trace,normaliser=moments,window=0",
    "ss-diagonal-trace-moments-w2": "form=diagonal,delta=trace,normaliser=moments,window=2",
    "ss-diagonal-trace-moments-w4": "form=diagonal,delta=trace,normaliser=moments,window=4",
    "ss-diagonal-trace-moments-w8": "form=diagonal,delta=trace,normaliser=moments,window=8",
    "ss-diagonal-trace-moments-w32": "form=diagonal,delta=trace,normaliser=moments,window=32",
    "ss-core-trace-free-dmax0.5": "form=core,delta=trace,normaliser=free,delta_max=0.5",
}
RANKS = (0, 4, 16, 32)


def fidelity_settings(landmarks: int) -> dict[str, str]:
    """Setting name -> registry variant (``name:key=value,...``), for ``landmarks`` landmarks."""

    def variant(name: str, knobs: str = "") -> str:
        fixed = [f"num_landmarks={landmarks}"] if has_knob(name, "num_landmarks") else []
        fixed += ["conv_kernel=0"] if has_knob(name, "conv_kernel") else []
        fixed += ["dropout=0"] if has_knob(name, "dropout") else []
        if name == "spectral_shift":
            fixed.append(f"rank={min(8, landmarks - 1)}")  # the default k, kept valid for tiny smoke-test m
        return f"{name}:" + ",".join(filter(None, [*fixed, knobs]))  # later keys win: knobs last

    settings = {name: variant(name) for name in attention_names()}
    settings["nystrom-exact-pinv"] = variant("nystrom", "pinv=exact")
    if "skyformer" in settings:
        settings["skyformer-segments"] = variant("skyformer", "landmarks=segments")
    for label, knobs in SPECTRAL_SHIFT_GRID.items():
        settings[label] = variant("spectral_shift", knobs)
    for rank in RANKS:
        if rank < landmarks:
            settings[f"ss-core-trace-free-k{rank}"] = variant(
                "spectral_shift", f"form=core,delta=trace,normaliser=free,rank={rank}"
            )
    return settings
