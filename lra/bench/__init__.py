"""Attention-level benchmarks: ``python -m lra.bench fidelity | efficiency | step``.

- ``fidelity``: relative output error of each approximate variant against exact softmax, on synthetic
  attention regimes and on q/k/v captured from a trained checkpoint.
- ``efficiency``: forward+backward time and peak memory of one attention layer vs sequence length.
- ``step``: the time of one training step (forward, backward, AdamW) of each task x attention.

Each takes every attention config of ``conf/attention/`` by default (``lra/registry.py``); efficiency
and step time and measure with the same helpers (:mod:`lra.bench.timing`). All write JSON and a PNG
under ``outputs/bench/`` by default.
"""
