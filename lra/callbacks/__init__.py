from lra.callbacks.attention_diagnostics import AttentionDiagnostics
from lra.callbacks.memory import PeakMemory
from lra.callbacks.random_state import RandomState
from lra.callbacks.throughput import Throughput

__all__ = ["AttentionDiagnostics", "PeakMemory", "RandomState", "Throughput"]
