from __future__ import annotations

import resource
import sys

import torch
from pytorch_lightning import Callback


def peak_memory(device: torch.device) -> tuple[int, str]:
    """Peak bytes so far: CUDA ``max_memory_allocated`` on a GPU, else the process's peak RSS."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device)), "cuda_max_allocated"
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024), "rss"


class PeakMemory(Callback):
    """Tracks peak memory over training and evaluation; logs ``memory/peak_bytes``."""

    def __init__(self):
        self.peak_bytes: int | None = None
        self.kind: str | None = None

    def on_fit_start(self, trainer, pl_module):
        if pl_module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(pl_module.device)

    def _update(self, pl_module):
        self.peak_bytes, self.kind = peak_memory(pl_module.device)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step % max(trainer.log_every_n_steps, 1) == 0:
            self._update(pl_module)
            pl_module.log("memory/peak_bytes", float(self.peak_bytes), on_step=True, on_epoch=False)

    def on_validation_end(self, trainer, pl_module):
        self._update(pl_module)

    def on_test_end(self, trainer, pl_module):
        self._update(pl_module)
