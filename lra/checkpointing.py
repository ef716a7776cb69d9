"""Checkpoints that are never half-written and a best checkpoint that survives resuming.

- :class:`AtomicCheckpointIO` writes every checkpoint to a temporary file in the same folder and
  renames it into place: a failed save (disk full, a kill) leaves the earlier files untouched and no
  partial one beside them, and surfaces as a :class:`CheckpointError` naming the file.
- :class:`BestCheckpoint` keeps the best-validation checkpoint across a resume. A resumed run writes
  into a new run directory, and Lightning's ``ModelCheckpoint`` forgets its best score whenever the
  directory changes, so the resumed run would report and test its own best instead of the run's. Here
  the best score, step and file are adopted from the checkpoint, and the file is copied into the new
  run directory so that the run stays complete on its own.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.plugins.io import TorchCheckpointIO

from data.cache import atomic_output
from lra.errors import CheckpointError

log = logging.getLogger(__name__)


def _write(f, checkpoint: dict) -> None:
    """Serialise ``checkpoint`` into the open file ``f`` (a seam for tests that simulate a full disk)."""
    torch.save(checkpoint, f)


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_output(path) as f:
                _write(f, checkpoint)
        except OSError as exc:
            raise CheckpointError(
                f"could not write checkpoint {path}: {exc.strerror or exc}; nothing partial was left, the "
                f"checkpoints written before are intact"
            ) from exc


def copy_atomically(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(src, "rb") as fin, atomic_output(dst) as fout:
        shutil.copyfileobj(fin, fout, length=1 << 20)


class BestCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` on ``val/acc`` that also records the best step and carries the best over
    into the new directory of a resumed run."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.best_step: int | None = None
        self._inherited: dict | None = None

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
        if state_dict.get("dirpath", self.dirpath) == self.dirpath:
            super().load_state_dict(state_dict)
            self.best_step = state_dict.get("best_step")
        else:  # adopted in on_train_start, where the trainer is known (rank, barrier)
            self._inherited = state_dict

    def _save_checkpoint(self, trainer, filepath: str) -> None:
        if filepath == self.best_model_path:  # a new best: its step goes into this very checkpoint
            self.best_step = trainer.global_step
        super()._save_checkpoint(trainer, filepath)

    def on_train_start(self, trainer, pl_module) -> None:
        super().on_train_start(trainer, pl_module)
        if self._inherited is not None:
            self._adopt(trainer, self._inherited)
            self._inherited = None

    def _adopt(self, trainer, state: dict[str, Any]) -> None:
        old, score = state.get("best_model_path"), state.get("best_model_score")
        if not old or score is None:
            return
        path = old
        if os.path.isfile(old):
            path = os.path.join(str(self.dirpath), os.path.basename(old))
            if trainer.is_global_zero:
                copy_atomically(Path(old), Path(path))
        else:
            log.warning("the best checkpoint of the resumed run, %s, no longer exists", old)
        trainer.strategy.barrier("adopt best checkpoint")
        self.best_model_path, self.best_model_score = path, score
        self.best_k_models = {path: score}
        self.kth_best_model_path, self.kth_value = path, score
        self.best_step = state.get("best_step")
        if self.best_step is None:  # written before best_step was recorded: the file name has it
            found = re.search(r"step(\d+)", os.path.basename(old))
            self.best_step = int(found.group(1)) if found else None
        log.info("resumed with the best checkpoint so far: %s (%s=%.4f)", path, self.monitor, float(score))


class RollingCheckpoint(ModelCheckpoint):
    """The rolling ``last.ckpt``. Its state in a checkpoint of another run directory means nothing
    here (Lightning would warn about it on every resume): it starts afresh."""

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("dirpath", self.dirpath) == self.dirpath:
            super().load_state_dict(state_dict)
