"""Checkpoints a run can always resume from, naming a best checkpoint that exists.

- :class:`AtomicCheckpointIO` writes every checkpoint to a temporary file in the same folder and
  renames it into place: a failed save (disk full, a kill) leaves the earlier files untouched and no
  partial one beside them, and surfaces as a :class:`CheckpointError` naming the file. It reads
  checkpoints with PyTorch's safe unpickler only (``weights_only=True``): a crafted file cannot run
  code.
- :class:`RollingCheckpoint` keeps ``last.ckpt`` at points where a resumed run continues exactly:
  after a training step that no validation follows, after a validation (so it names the best that
  validation may have set), where Ctrl-C or SIGTERM stops the run (:mod:`lra.interrupts`), and at the
  end of training. Never between a step and its validation: Lightning resumes such a checkpoint past
  the validation without running it.
- :class:`BestCheckpoint` keeps the best-validation checkpoint across a resume. A resumed run writes
  into a new run directory, and Lightning's ``ModelCheckpoint`` forgets its best score whenever the
  directory changes, so the resumed run would report and test its own best instead of the run's. Here
  the best score, step and file are adopted from the checkpoint (the file found beside it, so a run
  directory may be moved), and the file is copied into the new run directory so that the run stays
  complete on its own. A superseded best file is deleted only once ``last.ckpt`` names its successor,
  so a kill in between never leaves a ``last.ckpt`` naming a deleted file.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Checkpoint, ModelCheckpoint
from pytorch_lightning.plugins.io import TorchCheckpointIO
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities.exceptions import SIGTERMException

from data.cache import atomic_output
from lra import interrupts
from lra.errors import CheckpointError

log = logging.getLogger(__name__)


def _write(f, checkpoint: dict) -> None:
    """Serialise ``checkpoint`` into the open file ``f`` (a seam for tests that simulate a full disk)."""
    torch.save(checkpoint, f)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    # torch's writer reports a failed write (a full disk among others) as a RuntimeError
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_output(path) as f:
                _write(f, checkpoint)
        except (OSError, RuntimeError) as exc:
            raise CheckpointError(
                f"could not write checkpoint {path}: {_reason(exc)}; nothing partial was left, the "
                f"checkpoints written before are intact (free some space and resume from the last one)"
            ) from exc

    def load_checkpoint(self, path, map_location: Any | None = None, weights_only: bool | None = None):
        # Whatever the caller asks for: checkpoints are user input, and the harness's own hold only
        # tensors and plain Python values.
        if map_location is None:
            return super().load_checkpoint(path, weights_only=True)
        return super().load_checkpoint(path, map_location=map_location, weights_only=True)


def copy_atomically(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(src, "rb") as fin, atomic_output(dst) as fout:
        shutil.copyfileobj(fin, fout, length=1 << 20)


def _fitting(trainer: pl.Trainer) -> bool:
    return trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking


def validates_after_this_batch(trainer: pl.Trainer) -> bool:
    """Whether Lightning runs a validation once the current training batch ends (mirrors its
    schedule: every ``val_check_interval`` batches across epochs, or at epoch ends). With a
    wall-clock interval it cannot be known in advance: then every batch counts as one."""
    if not trainer.enable_validation:
        return False
    loop = trainer.fit_loop.epoch_loop
    every_n_epochs = trainer.check_val_every_n_epoch
    if every_n_epochs is not None and (trainer.current_epoch + 1) % every_n_epochs:
        return False
    if getattr(trainer, "_val_check_time_interval", None) is not None:
        return True
    if trainer.val_check_batch == float("inf"):
        return bool(loop.batch_progress.is_last_batch)
    index = loop.total_batch_idx if every_n_epochs is None else loop.batch_idx
    return (index + 1) % int(trainer.val_check_batch) == 0 or (
        every_n_epochs is not None and bool(loop.batch_progress.is_last_batch)
    )


class BestCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` on ``val/acc`` that also records the best step and carries the best over
    into the new directory of a resumed run."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.best_step: int | None = None
        self._inherited: dict | None = None
        self._superseded: list[str] = []  # best files replaced, deleted once last.ckpt moved on
        self._confirmed: tuple = (None, None, None)  # (path, score, step) of the last best written

    @property
    def state_key(self) -> str:
        # Named as the plain ModelCheckpoint's, so checkpoints written before this class existed still
        # hand their best over.
        return "ModelCheckpoint" + repr(
            {
                "monitor": self.monitor,
                "mode": self.mode,
                "every_n_train_steps": self._every_n_train_steps,
                "every_n_epochs": self._every_n_epochs,
                "train_time_interval": self._train_time_interval,
            }
        )

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "best_step": self.best_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Adopted in on_fit_start, where the trainer (rank, barrier, the checkpoint's path) is known.
        # Also when the recorded folder is this one: a run directory moved away and a new run started
        # under its old name holds none of its files.
        self._inherited = state_dict

    # -- a best that exists ---------------------------------------------------------------------------
    def _save_checkpoint(self, trainer, filepath: str) -> None:
        new_best = filepath == self.best_model_path
        if new_best:  # its step goes into this very checkpoint
            self.best_step = trainer.global_step
        try:
            super()._save_checkpoint(trainer, filepath)
        except BaseException:
            if new_best:  # the file was never written: the best is still the previous one
                self._set_best(*self._confirmed)
            raise
        if new_best:
            self._confirmed = (self.best_model_path, self.best_model_score, self.best_step)

    def _remove_checkpoint(self, trainer, filepath: str) -> None:
        # last.ckpt may still name it: RollingCheckpoint calls purge_superseded once it names the new one
        self._superseded.append(filepath)

    def purge_superseded(self, trainer) -> None:
        stale, self._superseded = self._superseded, []
        for path in stale:
            if path != self.best_model_path:
                super()._remove_checkpoint(trainer, path)

    def _set_best(self, path, score, step) -> None:
        self.best_model_path, self.best_model_score, self.best_step = path or "", score, step
        self.best_k_models = {path: score} if path else {}
        self.kth_best_model_path, self.kth_value = (path or "", score) if path else ("", self.kth_value)

    # -- adopting the best of the run this one continues ----------------------------------------------
    def on_fit_start(self, trainer, pl_module) -> None:
        super().on_fit_start(trainer, pl_module)
        if self._inherited is not None:
            self._adopt(trainer, self._inherited)
            self._inherited = None

    def _adopt(self, trainer, state: dict[str, Any]) -> None:
        found = inherited_best(state, trainer.ckpt_path)
        if found is None:
            return
        old, score, step = found
        path = os.path.join(str(self.dirpath), os.path.basename(old))
        if trainer.is_global_zero and os.path.realpath(old) != os.path.realpath(path):
            copy_atomically(Path(old), Path(path))
        trainer.strategy.barrier("adopt best checkpoint")
        self._set_best(path, score, step)
        self._confirmed = (path, score, step)
        log.info("resumed with the best checkpoint so far: %s (%s=%.4f)", path, self.monitor, float(score))


def best_state(ckpt: dict) -> dict | None:
    """The best-checkpoint callback's state saved in a checkpoint (None if it has none)."""
    for key, state in (ckpt.get("callbacks") or {}).items():
        if str(key).startswith("ModelCheckpoint") and isinstance(state, dict) and state.get("monitor"):
            return state
    return None


def _score(value) -> float | None:
    """A saved best score as a float, or None when it is no finite number."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def inherited_best(state: dict, resumed_from: str | os.PathLike | None) -> tuple[str, Any, int | None] | None:
    """(file, score, step) of the best checkpoint a saved state names. The file is looked for beside
    the checkpoint being resumed (as given, then where a link to it leads: the run directory may have
    moved), then where it was written if that is a run's ``checkpoints`` folder; it must be a ``.ckpt``
    file. None if the state names no best; a ``CheckpointError`` if it names one that is not there, or
    a score that is no number."""
    old, score = state.get("best_model_path"), state.get("best_model_score")
    if not old or score is None:
        return None
    name = Path(str(old)).name
    if _score(score) is None or not name.endswith(".ckpt"):
        raise CheckpointError(
            f"the checkpoint {resumed_from} names a best checkpoint {str(old)[:200]!r} with score "
            f"{str(score)[:40]!r}, which no run of this harness writes; it cannot be resumed"
        )
    candidates = []
    if resumed_from is not None:
        candidates += [Path(resumed_from).parent / name, Path(resumed_from).resolve().parent / name]
    if Path(str(old)).parent.name == "checkpoints":
        candidates.append(Path(str(old)))
    path = next((p for p in candidates if p.is_file()), None)
    if path is None:
        raise CheckpointError(
            f"the checkpoint {resumed_from} names its best checkpoint {name} (val/acc "
            f"{_score(score):.4f}), which is neither beside it nor at {old}; put that file back beside "
            f"the checkpoint, or the resumed run could not test the best checkpoint"
        )
    step = state.get("best_step")
    if step is None:  # written before best_step was recorded: the file name has it
        found = re.search(r"step(\d+)", path.name)
        step = int(found.group(1)) if found else None
    elif isinstance(step, bool) or not isinstance(step, int):
        raise CheckpointError(
            f"the checkpoint {resumed_from} records a best step {str(step)[:40]!r}; it cannot be resumed"
        )
    return str(path), _score(score), step


class RollingCheckpoint(Checkpoint):
    """``<dirpath>/<filename>.ckpt``, rewritten every ``every_n_train_steps`` steps (unless a
    validation follows the step: then once it ended), after every validation, at the end of training,
    and where a stop signal ends the run (:mod:`lra.interrupts`): on one device it stops the run itself
    at the next point it can save, after the current step and the validation due after it.

    After a validation it must run after the best checkpoint's callback, so that it names the best
    that validation set. Lightning runs checkpoint callbacks (this is one) last, in the order given;
    :meth:`setup` refuses the other order."""

    def __init__(self, dirpath: str, filename: str = "last", every_n_train_steps: int = 0):
        if every_n_train_steps is None or every_n_train_steps < 0:
            raise CheckpointError(
                f"checkpoint_every_n_steps={every_n_train_steps} must be 0 (off) or positive"
            )
        self.path = Path(dirpath) / f"{filename}.ckpt"
        self.every = int(every_n_train_steps)
        self._saved_to_stop = False  # a stop was asked for and last.ckpt written for it
        self._saved_step: int | None = None  # the global step last.ckpt was last written at
        self._stepped = False  # whether this process trained a step

    def save(self, trainer: pl.Trainer) -> None:
        trainer.save_checkpoint(self.path)
        self._saved_step = trainer.global_step
        for callback in trainer.checkpoint_callbacks:
            if isinstance(callback, BestCheckpoint):
                callback.purge_superseded(trainer)

    def finish(self, trainer: pl.Trainer, resumed_from: str | None) -> None:
        """The final state once training has ended. Not written again where last.ckpt already holds
        this step: a state saved once fit has returned from a validation step resumes with the step
        counter of the loggers one ahead. A resumed run that trained no step keeps the checkpoint it
        resumed (copied), which is that very state."""
        if self._saved_step == trainer.global_step:
            return
        if not self._stepped and resumed_from is not None:
            if trainer.is_global_zero and os.path.realpath(resumed_from) != os.path.realpath(self.path):
                copy_atomically(Path(resumed_from), self.path)
            trainer.strategy.barrier("copy the resumed checkpoint")
            return
        self.save(trainer)

    def setup(self, trainer, pl_module, stage: str) -> None:
        order = trainer.callbacks
        if any(isinstance(c, BestCheckpoint) and order.index(c) > order.index(self) for c in order):
            raise CheckpointError(
                "the rolling checkpoint (callbacks.last_checkpoint) must come after the best checkpoint "
                "(callbacks.best_checkpoint) in the callbacks config, so that last.ckpt names the best"
            )

    def on_train_start(self, trainer, pl_module) -> None:
        stop = interrupts.active()
        if stop is not None and trainer.world_size == 1:
            stop.take_over_sigterm()

    def on_train_end(self, trainer, pl_module) -> None:
        self._stop_deferring()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        # The previous step was saved and its metrics logged: stop before this one starts.
        stop = interrupts.active()
        if self._saved_to_stop and stop is not None:
            raise interrupts.Stopped(stop.name)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._stepped = True
        if validates_after_this_batch(trainer):
            return  # saved (and stopped, if asked to) once the validation has ended
        stopping = self._stopping()
        if stopping or (self.every and trainer.global_step % self.every == 0):
            self.save(trainer)
        self._saved_to_stop = stopping

    def on_validation_end(self, trainer, pl_module) -> None:
        if _fitting(trainer):
            self.save(trainer)
            self._saved_to_stop = self._stopping()

    def _stopping(self) -> bool:
        stop = interrupts.active()
        return stop is not None and stop.deferring and stop.requested

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self._stop_deferring()
        # Under DDP, Lightning stops on SIGTERM after a step (and its validation) or between batches of
        # a validation. The first is a point to resume from; the second is not (a resumed run would skip
        # that validation), so the last checkpoint stays the one to resume from. Any other exception (a
        # second Ctrl-C, an error) may stop a step half-way: nothing is saved either.
        if (
            isinstance(exception, SIGTERMException)
            and trainer.state.fn == TrainerFn.FITTING
            and not trainer.validating
        ):
            self.save(trainer)

    @staticmethod
    def _stop_deferring() -> None:
        stop = interrupts.active()
        if stop is not None:
            stop.deferring = False
