"""The data-module template every LRA task fills in.

:class:`LRADataModule` owns the plumbing: the preparation lock (runs of a parallel sweep, and the ranks
of a DDP run, build the data once), the atomic cache directory (built under a temporary name and
renamed into place, so an interrupted build is never reused), the marker of a complete cache, ``setup``
and the loaders. A task implements only what is its own:

- :meth:`~LRADataModule.resolve_source`: where the data comes from (may generate it; runs under the
  lock);
- :meth:`~LRADataModule.cache_key`: what the cache depends on (source signature and settings);
- :meth:`~LRADataModule.build`: write the cache into a temporary folder; returns what was read;
- :meth:`~LRADataModule.load`: the splits from a built cache;
- :meth:`~LRADataModule.source_info`: where the data came from, for results.json.

docs/tasks.md ("Adding a task") walks through one; ``tests/data/test_task_template.py`` defines a task in
its own test file and trains on it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from contextlib import AbstractContextManager, nullcontext
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pytorch_lightning import LightningDataModule
from torch.utils.data import DataLoader, Dataset, Subset

from data.cache import (
    UNREADABLE,
    AtomicDirectory,
    atomic_write_text,
    check_folder,
    clean_leftovers,
    fingerprint,
    preparation_lock,
)
from data.collate import pad_collate
from data.errors import ConfigError, DataFormatError
from data.resumable import EpochSampler, ResumableLoader
from data.sampling import BATCHINGS, BucketBatchSampler, DevStream, length_sorted_batches

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
# Written last into every cache, from what build() returned: its presence marks a complete cache.
# (Ragged caches built before the template existed wrote it last as well, so they are still used.)
COMPLETE_MARKER = "source.json"


class LRADataModule(LightningDataModule):
    """Shared preparation and loader plumbing; subclasses fill in the task's hooks (module docstring).

    Evaluation loaders never drop or shuffle examples, so accuracy is over the whole split. The
    training loader is resumable (see ``data/resumable.py``) on one device.
    """

    # Tasks whose label depends on the whole input (ListOps) set this: cutting an example at
    # ``max_len`` would keep a label that no longer matches it, so truncation is refused unless
    # ``allow_truncation``.
    truncation_changes_answer = False
    # The cache's folder under ``cache_dir`` (a property where it depends on settings).
    cache_folder = "task"

    def __init__(
        self,
        *,
        path: str | Path,
        cache_dir: str | Path,
        strict: bool = True,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int | None = 0,
        pin_memory: bool = False,
        seed: int = 0,
        batching: str = "random",
        pad_to_multiple: int = 128,
        val_examples: int | None = None,
    ):
        super().__init__()
        if val_examples is not None and (not isinstance(val_examples, int) or val_examples < 1):
            raise ConfigError(
                f"data.val_examples={val_examples!r} must be null (the whole dev split) or an integer >= 1"
            )
        if not isinstance(pad_to_multiple, int) or pad_to_multiple < 1:
            raise ConfigError(
                f"data.pad_to_multiple={pad_to_multiple!r} must be an integer >= 1 (1: no rounding)"
            )
        if batching not in BATCHINGS:
            raise ConfigError(f"data.batching={batching!r} must be one of {'|'.join(BATCHINGS)}")
        self.path = Path(path)  # where the task's data is read from (data.path)
        self.cache_dir = Path(cache_dir)  # where its caches are built (cache_dir)
        check_folder(self.path, "data.path")
        check_folder(self.cache_dir, "cache_dir")
        self.strict = strict  # false: malformed rows are skipped and counted, not an error
        self.batching = batching
        self.pad_to_multiple = pad_to_multiple
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers or 0  # None (chosen by the run, lra/resources.py) -> 0 here
        self.pin_memory = pin_memory
        self.seed = seed
        # null: every validation sees the whole dev split; N: the next N examples of an endless
        # reshuffled stream of it (data/sampling.py's DevStream), the published code's validation.
        self.val_examples = val_examples
        self._dev_stream: DevStream | None = None
        self._dev_position = 0  # examples of the dev stream drawn so far (checkpointed)
        self.allow_truncation = True
        self.splits: dict[str, Dataset] = {}
        self.resolved_source: Any = None  # what resolve_source() returned, once prepared

    # -- what a task implements ----------------------------------------------------------------------
    def resolve_source(self) -> Any:
        """Where the data comes from (a folder, a dataset identity), generating it first if needed.
        Runs under the preparation lock and :meth:`source_lock`; raise FileNotFoundError naming what
        is missing and how to get it."""
        return None

    def source_lock(self) -> AbstractContextManager:
        """A lock on the source itself, held while it is resolved and read (generated folders are
        shared by runs with different cache_dirs)."""
        return nullcontext()

    def cache_key(self, source: Any) -> list:
        """JSON-able parts the cache depends on: the source's signature and every setting that changes
        the arrays. Their hash names the cache folder."""
        raise NotImplementedError

    def build(self, source: Any, out: Path) -> dict:
        """Write the cache into ``out`` (a temporary folder, renamed into place when this returns);
        returns what was read (source, counts, skipped rows) for the cache's ``source.json``."""
        raise NotImplementedError

    def load(self, cache: Path) -> dict[str, Dataset]:
        """``{"train", "val", "test"} -> Dataset`` from a complete cache."""
        raise NotImplementedError

    def source_info(self) -> dict:
        """``{"source": kind, "path": ..., "generator": settings or None}`` of the data read."""
        return {"source": None, "path": None, "generator": None}

    # -- the template ---------------------------------------------------------------------------------
    def cache_path(self, source: Any) -> Path:
        return self.cache_dir / self.cache_folder / fingerprint(*self.cache_key(source))

    def prepare_data(self) -> None:
        """Build the cache once: under the lock, later callers (other runs, other ranks) find it built."""
        self._prepared()

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        cache = self._prepared()
        built = _identity(cache)
        try:
            splits = self.load(cache)
        except UNREADABLE as exc:
            if isinstance(exc, (ConfigError, PermissionError)):
                raise
            # A cache is derived data: a damaged one (a truncated or overwritten file) is rebuilt.
            log.warning("the cache %s is damaged (%s); rebuilding it", cache, _first_line(exc))
            cache = self._prepared(damaged=built)
            try:
                splits = self.load(cache)
            except UNREADABLE as again:
                if isinstance(again, (ConfigError, PermissionError)):
                    raise
                raise DataFormatError(
                    f"the cache {cache} is damaged and rebuilding it did not help ({_first_line(again)}); "
                    f"delete the folder {cache} and run again"
                ) from again
        self.splits = dict(splits)

    def _prepared(self, damaged: tuple | None = None) -> Path:
        """The complete cache, built first where there is none. ``damaged``: the identity of a cache
        found unreadable, rebuilt unless another run rebuilt it meanwhile (a new folder)."""
        try:
            with preparation_lock(self.cache_dir), self.source_lock():
                source = self.resolve_source()
                cache = self.cache_path(source)
                # Killed builds leave their temporaries beside the cache, where AtomicDirectory builds.
                clean_leftovers(cache.resolve().parent)
                stale = damaged is not None and _identity(cache) == damaged
                if stale or not (cache / COMPLETE_MARKER).is_file():
                    with AtomicDirectory(cache) as tmp:
                        report = self.build(source, tmp)
                        atomic_write_text(tmp / COMPLETE_MARKER, json.dumps(report, indent=1) + "\n")
        except (NotADirectoryError, FileExistsError) as exc:
            # A folder to create or open is a file (one made after the settings were checked).
            raise ConfigError(
                f"cannot create or open the folder {exc.filename}: {exc.strerror}. Data preparation writes "
                f"caches to cache_dir={self.cache_dir}; point cache_dir, data.path and "
                f"data.generated_path at folders"
            ) from exc
        except PermissionError as exc:
            generated = getattr(self, "generated_path", None)
            also = f" (and generated data to data.generated_path={generated})" if generated else ""
            raise ConfigError(
                f"cannot write {exc.filename}: {exc.strerror}. Data preparation writes caches to "
                f"cache_dir={self.cache_dir}{also}; point them at a writable folder"
            ) from exc
        self.resolved_source = source
        return cache

    # -- loaders --------------------------------------------------------------------------------
    def _collate(self):
        """Padding rounded to ``pad_to_multiple`` where the task knows the model's length (its
        ``max_len``), which the rounding must not pass; a task without one pads to the longest."""
        limit = getattr(self, "max_len", None)
        return partial(pad_collate, multiple=self.pad_to_multiple if limit else 1, limit=limit)

    def _loader(self, split: str, train: bool) -> DataLoader:
        if split not in self.splits:
            self.setup("fit" if train else "test")
        dataset = self.splits[split]
        common = dict(
            # The loader's own generator seeds its workers, so creating an iterator never draws
            # from the global RNG (dropout's): a resumed run then continues its random stream.
            generator=torch.Generator().manual_seed(self.seed),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.pin_memory,
            collate_fn=self._collate(),
        )
        sized = dict(batch_size=self.batch_size if train else self.eval_batch_size, drop_last=False)
        if not train:
            if split == "val" and self.val_examples is not None:
                return DataLoader(dataset, batch_sampler=self._dev_batches(len(dataset)), **common)
            if self._distributed():  # Lightning shards evaluation with its own sampler
                return DataLoader(dataset, shuffle=False, **sized, **common)
            batches = length_sorted_batches(dataset_lengths(dataset), self.eval_batch_size)
            return DataLoader(dataset, batch_sampler=batches, **common)
        if self._distributed():
            if self.batching == "bucketed":
                raise ConfigError(
                    "data.batching=bucketed is for one device; use data.batching=random with DDP"
                )
            # Lightning swaps in a DistributedSampler here; its order is per epoch, not per batch.
            return DataLoader(dataset, shuffle=True, **sized, **common)
        if self.batching == "bucketed":
            batches = BucketBatchSampler(dataset_lengths(dataset), self.batch_size, seed=self.seed)
            return ResumableLoader(dataset, batch_sampler=batches, progress=self._batches_done, **common)
        sampler = EpochSampler(len(dataset), seed=self.seed)
        return ResumableLoader(dataset, sampler=sampler, progress=self._batches_done, **sized, **common)

    def _dev_batches(self, size: int) -> DevStream:
        if self._distributed():
            raise ConfigError("data.val_examples is for one device; use data.val_examples=null with DDP")
        self._dev_stream = DevStream(
            size, self.val_examples, self.eval_batch_size, seed=self.seed, position=self._dev_position
        )
        return self._dev_stream

    def state_dict(self) -> dict[str, Any]:
        """Saved in every checkpoint by Lightning: where the dev stream stands."""
        if self.val_examples is None:
            return {}
        return {"dev_stream_position": self._dev_stream.position if self._dev_stream else self._dev_position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._dev_position = int(state.get("dev_stream_position", 0))
        if self._dev_stream is not None:
            self._dev_stream.position = self._dev_position

    def _distributed(self) -> bool:
        trainer = getattr(self, "trainer", None)
        return trainer is not None and trainer.world_size > 1

    def _batches_done(self) -> int:
        """Batches of the current epoch trained on so far (what a checkpoint must resume after)."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0
        return int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    # -- what the run trained on -------------------------------------------------------------------
    def split_report(self) -> dict[str, dict[str, int]]:
        """Per split: examples, and how many are longer than the model sees (truncated)."""
        return {
            name: {"examples": len(ds), "truncated": int(truncated_mask(ds).sum())}
            for name, ds in self.splits.items()
        }

    def check_splits(self, max_len_key: str = "model.max_len") -> dict[str, dict[str, int]]:
        """Refuse empty splits and, where truncation changes the answer, truncated examples."""
        report = self.split_report()
        where = self.source_info().get("path") or type(self).__name__
        for name in SPLITS:
            if name in report and report[name]["examples"] == 0:
                raise DataFormatError(
                    f"the {name} split of {where} has no examples (empty, or every row was skipped as "
                    f"malformed); a run needs all of train, val and test"
                )
        if self.truncation_changes_answer and not self.allow_truncation:
            for name in SPLITS:
                cut = report.get(name, {}).get("truncated", 0)
                if cut:
                    longest = max_length(self.splits[name])
                    raise DataFormatError(
                        f"{cut} of {report[name]['examples']} examples of the {name} split ({where}) are "
                        f"longer than {max_len_key} and truncating one changes its answer; set "
                        f"{max_len_key}={longest} (the longest), or data.allow_truncation=true to train "
                        f"on truncated examples anyway"
                    )
        return report

    def data_record(self) -> dict:
        """The ``data`` field of results.json: source, path, generator settings, content fingerprint
        and per-split counts."""
        return {
            **self.source_info(),
            "fingerprint": content_fingerprint(self.splits),
            "splits": self.split_report(),
        }


def _identity(folder: Path) -> tuple | None:
    """Which folder is at ``folder`` (a rebuilt cache is a new folder, renamed into place)."""
    try:
        st = os.stat(folder)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    if isinstance(exc, DataFormatError) and text:  # its message names the file and the problem
        return text.splitlines()[0]
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def dataset_lengths(ds: Dataset) -> np.ndarray:
    """Every example's length as batched (for length-bucketed batches)."""
    if isinstance(ds, Subset):
        return dataset_lengths(ds.dataset)[np.asarray(ds.indices, dtype=np.int64)]
    return np.asarray(ds.lengths())


def truncated_mask(ds: Dataset) -> np.ndarray:
    if isinstance(ds, Subset):
        return truncated_mask(ds.dataset)[np.asarray(ds.indices, dtype=np.int64)]
    mask = getattr(ds, "truncated_mask", None)
    return mask() if mask is not None else np.zeros(len(ds), dtype=bool)


def max_length(ds: Dataset) -> int:
    return max_length(ds.dataset) if isinstance(ds, Subset) else int(getattr(ds, "max_length", lambda: 0)())


def content_fingerprint(splits: dict[str, Dataset]) -> str:
    """A hash of what every split holds (tokens, labels, which rows): equal across machines and paths
    for the same data, different for any other data."""
    h = hashlib.sha256()
    seen: dict[int, str] = {}
    for name in sorted(splits):
        h.update(name.encode())
        _digest(splits[name], h, seen)
    return h.hexdigest()[:16]


def _digest(ds: Dataset, h, seen: dict[int, str]) -> None:
    if isinstance(ds, Subset):
        _digest(ds.dataset, h, seen)
        h.update(np.asarray(ds.indices, dtype=np.int64).tobytes())
        return
    if id(ds) not in seen:  # a dataset shared by two splits is hashed once
        inner = hashlib.sha256()
        ds.digest(inner)
        seen[id(ds)] = inner.hexdigest()
    h.update(seen[id(ds)].encode())
