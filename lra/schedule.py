"""Learning-rate schedules (``optim.schedule``).

- ``onecycle``: what the Nyströmformer LRA code runs, PyTorch's ``OneCycleLR`` with linear annealing:
  the lr climbs linearly from lr / 25 to lr over ``warmup_steps``, then falls linearly to
  lr / 250,000 at ``total_steps``; like that code it also cycles Adam's beta1 against the lr (0.95 at
  the start and the end, 0.85 at the peak).
- ``linear``: linear warmup from 0 to lr, then linear decay to 0, beta1 fixed (``optim.betas``).
"""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler

SCHEDULES = ("onecycle", "linear")


def warmup_linear_decay(optimizer: Optimizer, warmup_steps: int, total_steps: int) -> LambdaLR:
    """Linear warmup to the base lr over ``warmup_steps``, then linear decay to 0 at ``total_steps``."""

    def factor(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        remaining = max(total_steps - step, 0)
        return remaining / max(total_steps - warmup_steps, 1)

    return LambdaLR(optimizer, factor)


class OneCycle(LRScheduler):
    """The lr and beta1 of PyTorch's ``OneCycleLR(max_lr=lr, pct_start=warmup/total,
    anneal_strategy="linear")`` at every step, computed from the step alone.

    Only the step is saved in the state, so any checkpoint resumes with the schedule of the run that
    resumes it (a resume must have the same ``optim.total_steps``: lra/resume.py).
    """

    START_DIV, FINAL_DIV = 25.0, 1e4  # OneCycleLR's div_factor and final_div_factor
    BETA1_LOW, BETA1_HIGH = 0.85, 0.95  # its base_momentum and max_momentum

    def __init__(self, optimizer: Optimizer, warmup_steps: int, total_steps: int, last_epoch: int = -1):
        self.peak_step = max(float(warmup_steps) - 1.0, 0.0)  # OneCycleLR's end of the rising phase
        self.last_step = max(float(total_steps) - 1.0, self.peak_step + 1.0)
        super().__init__(optimizer, last_epoch)

    def _progress(self) -> tuple[bool, float]:
        """(rising?, fraction of the current phase done)."""
        step = float(self.last_epoch)
        if step <= self.peak_step and self.peak_step > 0:
            return True, step / self.peak_step
        return False, min((step - self.peak_step) / (self.last_step - self.peak_step), 1.0)

    def get_lr(self) -> list[float]:
        rising, done = self._progress()
        out = []
        for base in self.base_lrs:
            start = base / self.START_DIV
            end = start / self.FINAL_DIV
            out.append(start + (base - start) * done if rising else base + (end - base) * done)
        return out

    def step(self, epoch=None) -> None:
        super().step(epoch)
        self._set_beta1()

    def _set_beta1(self) -> None:
        rising, done = self._progress()
        low, high = self.BETA1_LOW, self.BETA1_HIGH
        beta1 = high + (low - high) * done if rising else low + (high - low) * done
        for group in self.optimizer.param_groups:
            group["betas"] = (beta1, *group["betas"][1:])

    def state_dict(self) -> dict:
        return {"last_epoch": self.last_epoch, "_step_count": self._step_count}

    def load_state_dict(self, state_dict: dict) -> None:
        self.last_epoch = state_dict["last_epoch"]
        self._step_count = state_dict.get("_step_count", self.last_epoch + 1)
        # The lr and beta1 of the restored step, set directly: step(epoch) would do the same with a
        # deprecation warning on every resume.
        self._last_lr = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, self._last_lr, strict=True):
            group["lr"] = lr
        self._set_beta1()


def one_cycle(optimizer: Optimizer, warmup_steps: int, total_steps: int) -> OneCycle:
    return OneCycle(optimizer, warmup_steps, total_steps)


def make_schedule(name: str, optimizer: Optimizer, warmup_steps: int, total_steps: int) -> LRScheduler:
    if name == "onecycle":
        return one_cycle(optimizer, warmup_steps, total_steps)
    if name == "linear":
        return warmup_linear_decay(optimizer, warmup_steps, total_steps)
    raise ValueError(f"optim.schedule={name!r} must be one of {'|'.join(SCHEDULES)}")
