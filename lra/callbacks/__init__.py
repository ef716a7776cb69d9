"""Lightning callbacks of a run, composed from the ``callbacks`` config group (``conf/callbacks/``).

A callback that measures something declares its rows of the metrics table (``metrics = (Metric(...),)``,
:mod:`lra.metrics`), logs each under its name (``lra.metrics.logged_name``) and returns
``{field: value}`` from ``summary()`` at the end of the run: the run puts that into results.json and
logs it once more as the run's summary.
"""

from lra.callbacks.attention_diagnostics import AttentionDiagnostics
from lra.callbacks.memory import PeakMemory
from lra.callbacks.progress import StepProgressBar
from lra.callbacks.random_state import RandomState
from lra.callbacks.throughput import Throughput

__all__ = [
    "AttentionDiagnostics",
    "PeakMemory",
    "RandomState",
    "StepProgressBar",
    "Throughput",
]
