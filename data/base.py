from __future__ import annotations

import torch
from pytorch_lightning import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from data.collate import pad_collate
from data.sampling import BATCHINGS, BucketBatchSampler


class LRADataModule(LightningDataModule):
    """Shared loader plumbing. Subclasses build caches in ``prepare_data`` and fill
    ``self.splits`` ({"train", "val", "test"} -> Dataset) in ``setup``.

    Evaluation loaders never drop or shuffle examples, so accuracy is over the whole split.
    """

    def __init__(
        self,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int | None = 0,
        pin_memory: bool = False,
        seed: int = 0,
        batching: str = "random",
    ):
        super().__init__()
        if batching not in BATCHINGS:
            raise ValueError(f"data.batching={batching!r} must be one of {'|'.join(BATCHINGS)}")
        self.batching = batching
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers or 0  # None (chosen by the run, lra/resources.py) -> 0 here
        self.pin_memory = pin_memory
        self.seed = seed
        self.splits: dict[str, Dataset] = {}

    def _loader(self, split: str, train: bool) -> DataLoader:
        if split not in self.splits:
            self.setup("fit" if train else "test")
        common = {
            "num_workers": self.num_workers,
            "persistent_workers": self.num_workers > 0,
            "pin_memory": self.pin_memory,
            "collate_fn": pad_collate,
        }
        if train and self.batching == "bucketed":
            lengths = self.splits[split].lengths()
            sampler = BucketBatchSampler(lengths, self.batch_size, seed=self.seed)
            return DataLoader(self.splits[split], batch_sampler=sampler, **common)
        generator = torch.Generator().manual_seed(self.seed) if train else None
        return DataLoader(
            self.splits[split],
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            drop_last=False,
            generator=generator,
            **common,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)
