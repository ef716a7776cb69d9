"""Attention-level benchmarks: ``python -m lra.bench fidelity | efficiency``.

- ``fidelity``: relative output error of each approximate variant against exact softmax, on synthetic
  attention regimes and on q/k/v captured from a trained checkpoint.
- ``efficiency``: forward+backward time and peak memory of one attention layer vs sequence length.

Both write JSON and a PNG under ``outputs/bench/`` by default.
"""
