"""A training progress bar that counts optimisation steps up to ``max_steps``.

Lightning's bar counts the batches of the current epoch, so a 5,000-step ListOps run (3,000 batches
per epoch) showed "3000" as its total and an ETA that was not the run's. This one spans the run:
its total is ``trainer.max_steps`` (unknown when training is epoch-bound), it starts at the resumed
step, and it does not restart at epoch boundaries.
"""

from __future__ import annotations

import time

from pytorch_lightning.callbacks import TQDMProgressBar

# What the bar shows, under short names: long metric names squeezed the bar to nothing on a terminal
# of ordinary width. Everything else is in the run's CSV log, W&B and results.json.
SHOWN = {"train/loss": "loss", "val/acc": "val acc"}


class StepProgressBar(TQDMProgressBar):
    """Redraws at most every ``min_interval_s`` seconds (and at the last step): a redraw per step,
    with its metrics dict, is measurable overhead when steps take a few tens of milliseconds. Shows
    the step's own loss from the first step on (the logged loss only comes every
    ``trainer.log_every_n_steps``) and one rate, tqdm's steps per second."""

    def __init__(self, min_interval_s: float = 0.5, **kwargs):
        super().__init__(**kwargs)
        self.min_interval_s = min_interval_s
        self._drawn = 0.0

    def on_train_start(self, trainer, pl_module):
        super().on_train_start(trainer, pl_module)
        bar = self.train_progress_bar
        bar.reset(total=trainer.max_steps if trainer.max_steps > 0 else None)
        bar.initial = trainer.global_step
        bar.n = trainer.global_step
        bar.set_description("Training steps")
        bar.unit = "step"

    def on_train_epoch_start(self, trainer, *_):
        # One bar for the whole run: nothing restarts with the epoch.
        pass

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        bar = self.train_progress_bar
        step = trainer.global_step
        now = time.monotonic()
        due = now - self._drawn >= self.min_interval_s or step == bar.total
        if bar is not None and due and self._should_update(step, bar.total):
            if not bar.disable:  # tqdm's own API: set the count, redraw
                bar.n = step
                bar.refresh()
            metrics = self.get_metrics(trainer, pl_module)
            loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
            if hasattr(loss, "item"):
                metrics["loss"] = f"{float(loss.item()):.3f}"
            bar.set_postfix(metrics)
            self._drawn = now

    def get_metrics(self, trainer, pl_module):
        metrics = super().get_metrics(trainer, pl_module)
        return {short: metrics[name] for name, short in SHOWN.items() if name in metrics}

    def on_train_epoch_end(self, trainer, pl_module):
        if not self.train_progress_bar.disable:
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))
