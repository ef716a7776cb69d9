"""Peak memory of a run: the ``memory/peak_bytes`` metric and its results.json summary."""

from __future__ import annotations

import resource
import sys

import torch
from pytorch_lightning import Callback

from lra.metrics import DOWN, RUNS, SPEED, Metric, logged_name


def peak_memory(device: torch.device) -> tuple[int, str]:
    """Peak bytes so far: CUDA ``max_memory_allocated`` on a GPU, else this process's peak RSS.

    Peak RSS includes the interpreter and PyTorch themselves (a few hundred MB), so on CPU it shows
    differences between attentions less sharply than the CUDA number does. Data-loader worker
    processes are not included.
    """
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)), "cuda_max_allocated"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports kilobytes, macOS bytes.
    return int(rss if sys.platform == "darwin" else rss * 1024), "rss"


class PeakMemory(Callback):
    """Tracks peak memory over training and evaluation; logs ``memory/peak_bytes``.

    The peak is reset when fitting starts, so it covers training, validation and test. Under DDP
    the summary is the largest peak of any rank.
    """

    # kind: "cuda_max_allocated" | "rss"
    metrics = (
        Metric("peak_memory_bytes", "memory/peak_bytes", "peak memory (MiB)", "mib", DOWN, plotted=True,
               shown=(SPEED, RUNS), qualifier="peak_memory_kind", qualifier_label="memory kind"),
    )  # fmt: skip

    def __init__(self):
        self.peak_bytes: int | None = None
        self.kind: str | None = None

    def on_fit_start(self, trainer, pl_module):
        if pl_module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(pl_module.device)

    def _update(self, pl_module) -> None:
        self.peak_bytes, self.kind = peak_memory(pl_module.device)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        # Only on the steps Lightning sends to the loggers: reading the peak is cheap but not free.
        if trainer.global_step % max(trainer.log_every_n_steps, 1) == 0:
            self._update(pl_module)
            pl_module.log(
                logged_name("peak_memory_bytes"), float(self.peak_bytes), on_step=True, on_epoch=False
            )

    def on_validation_end(self, trainer, pl_module):
        self._update(pl_module)

    def on_train_end(self, trainer, pl_module):
        self._update(pl_module)
        self._sync(trainer, pl_module)

    def on_test_end(self, trainer, pl_module):
        self._update(pl_module)
        self._sync(trainer, pl_module)

    def summary(self) -> dict:
        """results.json's peak memory and how it was measured."""
        return {"peak_memory_bytes": self.peak_bytes, "peak_memory_kind": self.kind}

    def _sync(self, trainer, pl_module) -> None:
        # Every rank calls this; a no-op on one device.
        peak = torch.tensor([float(self.peak_bytes or 0)], dtype=torch.float64, device=pl_module.device)
        self.peak_bytes = int(trainer.strategy.reduce(peak, reduce_op="max")[0])
