"""Training and evaluation throughput: the ``speed/*`` metrics and their results.json summary."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from pytorch_lightning import Callback

from lra.metrics import RUNS, SPEED, UP, Metric, logged_name


def real_tokens(batch) -> torch.Tensor:
    """Unpadded tokens in a batch (both documents for two-tower tasks), as a tensor on the batch's
    device: turning it into a Python number every step would force a GPU sync every step."""
    if "mask" not in batch:  # an unpadded batch: every position is real
        return torch.tensor(batch["input_ids"].numel())
    n = batch["mask"].sum()
    if "mask2" in batch:
        n = n + batch["mask2"].sum()
    return n


def _sync_device(device: torch.device) -> None:
    # CUDA runs asynchronously: read the clock only after the queued work is done.
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Throughput(Callback):
    """Training steps/s and real tokens/s, and evaluation (validation + test) real tokens/s.

    Training time is the sum of the intervals between consecutive training-batch ends, so data
    loading and the optimiser step are included. Excluded: the first ``warmup_steps`` optimiser
    steps of each fit (allocator, kernel and data-worker warm-up), and everything from the start of
    an evaluation until the next training batch begins (evaluation and checkpoint saving).
    Under DDP, tokens are summed over all ranks and times are taken as the slowest rank's.

    ``clock`` is injectable so tests can drive the callback with a fake clock.
    """

    metrics = (
        Metric("train_steps_per_s", "speed/train_steps_per_s", "train steps/s", "number", UP, shown=(SPEED, RUNS)),
        Metric("train_tokens_per_s", "speed/train_tokens_per_s", "train tokens/s", "number", UP, plotted=True,
               shown=(SPEED,)),
        Metric("eval_tokens_per_s", "speed/eval_tokens_per_s", "eval tokens/s", "number", UP, plotted=True,
               shown=(SPEED,)),
    )  # fmt: skip

    def __init__(self, warmup_steps: int = 5, clock: Callable[[], float] = time.perf_counter):
        self.warmup_steps = int(warmup_steps)
        self.clock = clock
        self.train_time = 0.0
        self.train_steps = 0
        self.eval_time = 0.0
        self._train_tokens: torch.Tensor | int = 0
        self._eval_tokens: torch.Tensor | int = 0
        self._first_step = 0  # global step at fit start (non-zero when resuming)
        self._last: float | None = None  # clock at the last training-batch end; None while paused
        self._last_step = 0
        self._eval_start: float | None = None
        self._synced: dict[str, float] | None = None

    # -- training -------------------------------------------------------------------------------
    def on_train_start(self, trainer, pl_module):
        self._first_step = trainer.global_step
        self._last = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self._last is None:  # first batch, or first after an evaluation: start the clock here
            self._last, self._last_step = self.clock(), trainer.global_step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        now = self.clock()
        past_warmup = self._last_step - self._first_step >= self.warmup_steps
        if self._last is not None and past_warmup:
            self.train_time += now - self._last
            self.train_steps += trainer.global_step - self._last_step
            self._train_tokens = self._train_tokens + real_tokens(batch)
        self._last, self._last_step = now, trainer.global_step
        if self.train_time <= 0 or self.train_steps == 0:
            return
        # Only on the steps Lightning sends to the loggers: tokens/s needs the token count on the host
        # (a GPU sync), and a log call every step is measurable overhead when steps are short (the
        # progress bar shows its own rate in between).
        if trainer.global_step % max(trainer.log_every_n_steps, 1) == 0:
            pl_module.log(
                logged_name("train_steps_per_s"),
                self.train_steps / self.train_time,
                prog_bar=True,
                on_step=True,
                on_epoch=False,
            )
            pl_module.log(
                logged_name("train_tokens_per_s"),
                # this rank's tokens x ranks: an estimate; results.json gets the exact sum over ranks
                float(self._train_tokens) * trainer.world_size / self.train_time,
                prog_bar=True,
                on_step=True,
                on_epoch=False,
            )

    def on_train_end(self, trainer, pl_module):
        self._sync(trainer, pl_module)

    # -- evaluation -------------------------------------------------------------------------------
    def _eval_start_hook(self, trainer, pl_module):
        self._last = None  # pause training time until the next training batch starts
        _sync_device(pl_module.device)
        self._eval_start = self.clock()

    def _eval_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if not trainer.sanity_checking:
            self._eval_tokens = self._eval_tokens + real_tokens(batch)

    def _eval_end_hook(self, trainer, pl_module):
        if self._eval_start is not None and not trainer.sanity_checking:
            _sync_device(pl_module.device)
            self.eval_time += self.clock() - self._eval_start
        self._eval_start = None

    on_validation_epoch_start = _eval_start_hook
    on_test_epoch_start = _eval_start_hook
    on_validation_batch_end = _eval_batch_end
    on_test_batch_end = _eval_batch_end
    on_validation_epoch_end = _eval_end_hook
    on_test_epoch_end = _eval_end_hook

    def on_test_end(self, trainer, pl_module):
        self._sync(trainer, pl_module)

    # -- summary ----------------------------------------------------------------------------------
    def _sync(self, trainer, pl_module) -> None:
        """Combine the ranks' totals (every rank calls this; a no-op on one device)."""
        device = pl_module.device
        tokens = torch.tensor(
            [float(self._train_tokens), float(self._eval_tokens)], dtype=torch.float64, device=device
        )
        times = torch.tensor([self.train_time, self.eval_time], dtype=torch.float64, device=device)
        tokens = trainer.strategy.reduce(tokens, reduce_op="sum")
        times = trainer.strategy.reduce(times, reduce_op="max")
        self._synced = {
            "train_tokens": float(tokens[0]),
            "eval_tokens": float(tokens[1]),
            "train_time": float(times[0]),
            "eval_time": float(times[1]),
        }

    def totals(self) -> dict[str, float]:
        """Tokens and seconds over all ranks as of the last sync (this rank's before any sync)."""
        if self._synced is not None:
            return self._synced
        return {
            "train_tokens": float(self._train_tokens),
            "eval_tokens": float(self._eval_tokens),
            "train_time": self.train_time,
            "eval_time": self.eval_time,
        }

    def summary(self) -> dict[str, float | None]:
        t = self.totals()
        train_ok = t["train_time"] > 0 and self.train_steps > 0
        return {
            "train_steps_per_s": self.train_steps / t["train_time"] if train_ok else None,
            "train_tokens_per_s": t["train_tokens"] / t["train_time"] if train_ok else None,
            "eval_tokens_per_s": t["eval_tokens"] / t["eval_time"] if t["eval_time"] > 0 else None,
        }
