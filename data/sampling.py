"""Length-bucketed training batches: sequences of similar length share a batch, so less is padded.

Opt-in (``data.batching=bucketed``); the default stays the published random batching. Every epoch
uses every example exactly once, in an order fixed by (seed, epoch):

1. shuffle all indices;
2. cut the shuffled list into pools of ``pool_batches`` batches and sort each pool by length;
3. cut every sorted pool into batches, and shuffle the order of all batches.

Pools keep the randomness of which examples meet (a global sort would give the same batches every
epoch); the final shuffle keeps long and short batches from arriving in runs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler

BATCHINGS = ("random", "bucketed")


class BucketBatchSampler(Sampler[list[int]]):
    def __init__(self, lengths: Sequence[int], batch_size: int, *, seed: int = 0, pool_batches: int = 64):
        if batch_size < 1 or pool_batches < 1:
            raise ValueError("data.batch_size and the bucketing pool must be >= 1")
        self.lengths = torch.as_tensor(lengths, dtype=torch.long)
        self.batch_size = batch_size
        self.seed = seed
        self.pool = batch_size * pool_batches
        # Passes are counted here, not taken from Lightning's epoch number (which runs one ahead
        # after resuming a run stopped mid-epoch; see data/resumable.py).
        self.epoch = -1  # the pass in progress (none yet)
        self._next_epoch, self._start = 0, 0

    def resume_at(self, epoch: int, start: int) -> None:
        """Make the next pass be pass ``epoch``, from its ``start``-th batch."""
        self._next_epoch, self._start = epoch, start

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size) if len(self.lengths) else 0

    def batches(self, epoch: int) -> list[list[int]]:
        """Pass ``epoch``'s batches."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(len(self.lengths), generator=g)
        batches: list[torch.Tensor] = []
        for pool in order.split(self.pool):
            by_length = pool[torch.argsort(self.lengths[pool], stable=True)]
            batches.extend(by_length.split(self.batch_size))
        shuffled = torch.randperm(len(batches), generator=g)
        return [batches[i].tolist() for i in shuffled]

    def __iter__(self) -> Iterator[list[int]]:
        self.epoch, self._next_epoch = self._next_epoch, self._next_epoch + 1
        start, self._start = self._start, 0
        return iter(self.batches(self.epoch)[start:])


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Evaluation batches of neighbouring lengths (every example once, in a fixed order).

    Every attention here gives each sequence the same output in any batch (a tested property), so
    sorting changes no prediction and no accuracy, only how much padding is computed."""
    order = torch.argsort(torch.as_tensor(lengths, dtype=torch.long), stable=True)
    return [b.tolist() for b in order.split(batch_size)]


class DevStream(Sampler[list[int]]):
    """Each validation's batches: the next ``examples`` of an endless stream of reshuffled passes over
    the split, as the Nyströmformer LRA code validates (62 batches of 32 from its dev stream).

    Pass ``p`` of the stream is a permutation fixed by (seed, p), so which examples a validation sees
    depends only on how many were drawn before it: ``position``, which the data module keeps in its
    checkpointed state so a resumed run continues the stream where it stopped.
    """

    def __init__(self, size: int, examples: int, batch_size: int, *, seed: int = 0, position: int = 0):
        if size < 1 or examples < 1 or batch_size < 1:
            raise ValueError("a dev stream needs a non-empty split and at least one example per batch")
        self.size, self.examples, self.batch_size, self.seed = size, examples, batch_size, seed
        self.position = position

    def stream(self, start: int, count: int) -> list[int]:
        """Examples ``start`` .. ``start + count - 1`` of the stream."""
        out: list[int] = []
        while count > 0:
            p, offset = divmod(start, self.size)
            order = torch.randperm(
                self.size, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + p)
            )
            piece = order[offset : offset + count].tolist()
            out.extend(piece)
            start, count = start + len(piece), count - len(piece)
        return out

    def __len__(self) -> int:
        return -(-self.examples // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        drawn = self.stream(self.position, self.examples)
        self.position += self.examples
        return iter([drawn[i : i + self.batch_size] for i in range(0, len(drawn), self.batch_size)])
