"""Published LRA test accuracies (%), shown beside our own rows and always marked as published.

Copied from the papers' own tables: the LRA paper's JAX Transformer, and the PyTorch re-runs of the
Nyströmformer, xformers and Skyformer authors.
"""

from __future__ import annotations

from dataclasses import dataclass

# The five LRA tasks the published averages cover, in the papers' order.
LRA_TASKS = ("listops", "text", "retrieval", "image", "pathfinder")
TASK_TITLES = {
    "listops": "ListOps",
    "text": "Text",
    "retrieval": "Retrieval",
    "image": "Image",
    "pathfinder": "Pathfinder",
    "pathx": "Path-X",
}


@dataclass(frozen=True)
class PublishedRow:
    source: str
    model: str
    accuracy: dict[str, float]  # task -> test accuracy, %
    average: float  # as printed in the source

    @property
    def label(self) -> str:
        return f"{self.model} ({self.source})"


def _row(source: str, model: str, *values: float) -> PublishedRow:
    *per_task, average = values
    return PublishedRow(source, model, dict(zip(LRA_TASKS, per_task, strict=True)), average)


PUBLISHED = (
    _row("LRA paper, JAX", "Transformer", 36.37, 64.27, 57.46, 42.44, 71.40, 54.39),
    _row("Nyströmformer paper", "Standard softmax", 37.10, 65.02, 79.35, 38.20, 74.16, 58.77),
    _row("Nyströmformer paper", "Nyströmformer", 37.15, 65.52, 79.56, 41.58, 70.94, 58.95),
    _row("xformers LRA", "Standard", 37.5, 62.66, 79.24, 38.69, 70.37, 57.69),
    _row("xformers LRA", "Nyström-128", 36.29, 63.24, 78.18, 42.86, 67.49, 57.61),
    _row("Skyformer paper", "Self-attention", 38.37, 61.95, 80.69, 40.57, 65.26, 57.37),
    _row("Skyformer paper", "Nyströmformer", 38.51, 64.83, 80.52, 41.30, 69.48, 58.93),
)


def task_title(task: str) -> str:
    return TASK_TITLES.get(task, task)
