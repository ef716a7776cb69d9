"""A training loader whose position survives a checkpoint, so a resumed run sees the same batches.

Lightning saves the ``state_dict`` of a loader that has one in its checkpoints and hands it back
before the resumed run draws its first batch. The order of an epoch is a function of (seed, epoch)
only, so the state is two numbers: the epoch and how many of its batches were trained on. The count
comes from the trainer (``progress``), not from the loader: Lightning fetches one batch ahead, so the
loader has always handed out one batch more than was trained on.

The sampler counts its own epochs (one per pass started) instead of taking Lightning's epoch number:
a checkpoint written when ``fit`` stops at ``max_steps`` in mid-epoch counts that epoch as finished,
so after resuming Lightning's numbering is one ahead of the passes actually made over the data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch.utils.data import DataLoader, Sampler

# Mixes the run seed and the epoch into one generator seed (any fixed odd constant works).
_EPOCH_STRIDE = 1_000_003


class EpochSampler(Sampler[int]):
    """A fresh permutation of ``range(n)`` per pass, drawn from (seed, pass number); the next pass can
    be made to start part-way through (``resume_at``)."""

    def __init__(self, n: int, *, seed: int):
        self.n, self.seed = n, seed
        self.epoch = -1  # the pass in progress (none yet)
        self._next_epoch, self._start = 0, 0

    def resume_at(self, epoch: int, start: int) -> None:
        """Make the next pass be pass ``epoch``, from its ``start``-th example."""
        self._next_epoch, self._start = epoch, start

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        self.epoch, self._next_epoch = self._next_epoch, self._next_epoch + 1
        generator = torch.Generator().manual_seed(self.seed * _EPOCH_STRIDE + self.epoch)
        order = torch.randperm(self.n, generator=generator).tolist()
        start, self._start = self._start, 0
        return iter(order[start:])


class ResumableLoader(DataLoader):
    """A shuffling ``DataLoader`` over an :class:`EpochSampler` (or a length-bucketed
    ``data.sampling.BucketBatchSampler``) with Lightning's stateful-loader interface. ``progress()``
    returns the batches of the current epoch already trained on."""

    def __init__(self, *args, progress: Callable[[], int] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._progress = progress

    def _order(self):
        """What decides the order: a batch sampler that forms whole batches (length-bucketed), or
        the example sampler."""
        return self.batch_sampler if hasattr(self.batch_sampler, "resume_at") else self.sampler

    def state_dict(self) -> dict:
        done = int(self._progress()) if self._progress is not None else 0
        return {"epoch": max(self._order().epoch, 0), "batches_done": done}

    def load_state_dict(self, state: dict) -> None:
        epoch, done = int(state["epoch"]), int(state["batches_done"])
        if done >= len(self):  # saved after the epoch's last batch: the next epoch starts afresh
            epoch, done = epoch + 1, 0
        order = self._order()
        # A batch sampler resumes in batches, an example sampler in examples.
        order.resume_at(epoch, done if order is self.batch_sampler else done * self.batch_size)


def restart_after_finished_epoch(checkpoint: dict) -> None:
    """Make a checkpoint written right after an epoch's last batch resume with the next epoch whole.

    When ``fit`` stops at ``max_steps`` exactly at the end of an epoch, Lightning records that epoch
    as completed and counts the next one as current, but keeps the finished epoch's batch counter
    (n of n batches, ``is_last_batch``). Restored as is, the next epoch starts at batch index n and
    ends after one batch, so the resumed run skips the rest of it (seen as a resumed run that left the
    uninterrupted one's losses at its second step). A checkpoint written inside the epoch's last batch
    (a kill before the epoch ended) has an epoch started but not completed, and Lightning restores it
    correctly; it is left alone. Called from the module's ``on_load_checkpoint``, before Lightning
    restores its loops from the same dictionary."""
    fit = checkpoint.get("loops", {}).get("fit_loop")
    if not fit:
        return
    batches = fit.get("epoch_loop.batch_progress")
    epochs = fit.get("epoch_progress", {}).get("current", {})
    if not batches or not batches.get("is_last_batch"):
        return
    if epochs.get("ready") != epochs.get("completed"):  # the epoch is still in progress
        return
    batches["current"] = {key: 0 for key in batches["current"]}
    batches["is_last_batch"] = False
