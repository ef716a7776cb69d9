from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from pytorch_lightning import LightningModule
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from data.resumable import restart_after_finished_epoch
from lra.errors import ConfigError
from lra.schedule import SCHEDULES, make_schedule


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/inf loss; raised so that no later checkpoint overwrites a good one."""


# Checkpoint key under which a run's task, attention and model config are stored, so that resuming
# can refuse a checkpoint of another configuration whose parameter names happen to coincide.
RUN_IDENTITY_KEY = "lra_run_identity"
# Checkpoint key of the threads the run computed with: a resumed run takes the same number when the
# config leaves it open, since another thread count sums floats in another order.
COMPUTE_KEY = "lra_compute"
# Checkpoint key of what a resumed run carries on: the checkpoint a fine-tune started from, and the
# wall time the run has taken so far.
ORIGIN_KEY = "lra_origin"


class LRAModule(LightningModule):
    """Classification on any LRA task: cross-entropy, AdamW with the schedule ``optim.schedule``
    (:mod:`lra.schedule`), epoch-level accuracy per split (torchmetrics accumulates over the whole
    split, then computes once).

    ``run_identity`` (task, attention and model config) is written into every checkpoint."""

    def __init__(
        self,
        model: nn.Module,
        num_classes: int,
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        warmup_steps: int = 0,
        total_steps: int | None = None,
        schedule: str = "onecycle",
        run_identity: dict | None = None,
    ):
        super().__init__()
        if schedule not in SCHEDULES:
            raise ConfigError(f"optim.schedule={schedule!r} must be one of {'|'.join(SCHEDULES)}")
        # In the checkpoint, not in the loggers: they get the whole resolved config (optim.lr, ...), and
        # Lightning's copy would put every optimiser setting there a second time under another key.
        self.save_hyperparameters(ignore=["model", "run_identity"], logger=False)
        self.model = model
        self.run_identity = run_identity
        self.compute: dict | None = None  # the run's threads and workers (lra.resources), set by lra.train
        self.initialized_from: str | None = None  # the checkpoint a fine-tune started from
        self.wall_time_before = 0.0  # seconds the run took before this process resumed it
        self._started = time.time()
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(**{k: v for k, v in batch.items() if k != "label"})

    def training_step(self, batch, batch_idx):
        logits = self(batch)
        loss = F.cross_entropy(logits.float(), batch["label"])
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"training loss became {loss.item()} at step {self.global_step}; the run was stopped and "
                "the checkpoints already written are kept. Try a lower optim.lr, more optim.warmup_steps, "
                "or trainer.precision=32-true."
            )
        # update, not forward: the per-batch value would be computed and thrown away every step.
        self.train_acc.update(logits, batch["label"])
        bs = batch["label"].shape[0]
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, batch_size=bs)
        # Only on the steps the loggers write: every logged value costs Lightning's result collection
        # time on every step (about 2 ms per step in a profile of 25 ms steps).
        if self._logging_step():
            self.log("train/loss", loss, prog_bar=True, batch_size=bs)
            sched = self.lr_schedulers()
            if sched is not None:
                self.log("trainer/lr", sched.get_last_lr()[0], batch_size=bs)
        return loss

    def _logging_step(self) -> bool:
        """Whether Lightning sends this step's metrics to the loggers (others would be dropped)."""
        trainer = self._trainer
        every = max(getattr(trainer, "log_every_n_steps", 1), 1) if trainer is not None else 1
        return (self.global_step + 1) % every == 0

    def _eval_step(self, batch, split: str, metric: MulticlassAccuracy):
        logits = self(batch)
        loss = F.cross_entropy(logits.float(), batch["label"])
        metric.update(logits, batch["label"])
        bs = batch["label"].shape[0]
        self.log(f"{split}/loss", loss, on_epoch=True, batch_size=bs, sync_dist=True)
        self.log(f"{split}/acc", metric, on_epoch=True, prog_bar=split == "val", batch_size=bs)

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, "val", self.val_acc)

    def test_step(self, batch, batch_idx):
        self._eval_step(batch, "test", self.test_acc)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        restart_after_finished_epoch(checkpoint)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.run_identity is not None:
            checkpoint[RUN_IDENTITY_KEY] = self.run_identity
        if self.compute is not None:
            checkpoint[COMPUTE_KEY] = self.compute
        checkpoint[ORIGIN_KEY] = {
            "initialized_from": self.initialized_from,
            "wall_time_s": self.wall_time_before + time.time() - self._started,
        }

    def configure_optimizers(self):
        hp = self.hparams
        opt = torch.optim.AdamW(
            self.parameters(), lr=hp.lr, betas=tuple(hp.betas), eps=hp.eps, weight_decay=hp.weight_decay
        )
        total = hp.total_steps or self.trainer.max_steps
        if total is None or total <= 0 or math.isinf(total):
            total = self.trainer.estimated_stepping_batches
        sched = make_schedule(hp.get("schedule", "linear"), opt, hp.warmup_steps, int(total))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
