from __future__ import annotations

import time

from pytorch_lightning import Callback


def real_tokens(batch) -> int:
    """Unpadded tokens in a batch (both documents for two-tower tasks)."""
    n = int(batch["mask"].sum())
    if "mask2" in batch:
        n += int(batch["mask2"].sum())
    return n


class Throughput(Callback):
    """Training steps/s and real tokens/s, and evaluation tokens/s.

    Training speed skips the first ``warmup_steps`` steps (allocator and kernel warm-up) and any
    interval that contains an evaluation, so it measures training alone (data loading included).
    """

    def __init__(self, warmup_steps: int = 5):
        self.warmup_steps = warmup_steps
        self.train_time = 0.0
        self.train_steps = 0
        self.train_tokens = 0
        self.eval_time = 0.0
        self.eval_tokens = 0
        self._last: float | None = None
        self._eval_start: float | None = None
        self._seen = 0

    # -- training -------------------------------------------------------------------------------
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        now = time.perf_counter()
        self._seen += 1
        if self._last is not None and self._seen > self.warmup_steps:
            self.train_time += now - self._last
            self.train_steps += 1
            self.train_tokens += real_tokens(batch) * trainer.world_size
        self._last = now
        if self.train_time > 0:
            pl_module.log(
                "speed/train_steps_per_s",
                self.train_steps / self.train_time,
                prog_bar=True,
                on_step=True,
                on_epoch=False,
            )
            pl_module.log(
                "speed/train_tokens_per_s", self.train_tokens / self.train_time, on_step=True, on_epoch=False
            )

    # -- evaluation -------------------------------------------------------------------------------
    def _eval_start_hook(self, trainer, pl_module):
        self._eval_start = time.perf_counter()

    def _eval_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if not trainer.sanity_checking:
            self.eval_tokens += real_tokens(batch) * trainer.world_size

    def _eval_end_hook(self, trainer, pl_module):
        if self._eval_start is not None and not trainer.sanity_checking:
            self.eval_time += time.perf_counter() - self._eval_start
        self._eval_start = None
        self._last = None  # the next training interval would include evaluation time

    on_validation_epoch_start = _eval_start_hook
    on_test_epoch_start = _eval_start_hook
    on_validation_batch_end = _eval_batch_end
    on_test_batch_end = _eval_batch_end
    on_validation_epoch_end = _eval_end_hook
    on_test_epoch_end = _eval_end_hook

    # -- summary ----------------------------------------------------------------------------------
    def summary(self) -> dict[str, float | None]:
        return {
            "train_steps_per_s": self.train_steps / self.train_time if self.train_time > 0 else None,
            "train_tokens_per_s": self.train_tokens / self.train_time if self.train_time > 0 else None,
            "eval_tokens_per_s": self.eval_tokens / self.eval_time if self.eval_time > 0 else None,
        }
