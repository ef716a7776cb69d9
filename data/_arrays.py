"""Fixed-length example arrays (pixels) on disk, loaded memory-mapped, and seeded split indices.

Image and Pathfinder examples all have the same length, so they live in one ``(N, length)`` uint8 array
(``images.npy``) rather than the ragged flat+offsets format. Path-X is 200k x 16384 bytes (3.3 GB):
the array is written row block by row block and read with ``mmap_mode="r"``, never held in memory.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from data.errors import DataFormatError

ARRAY_FORMAT_VERSION = 1


def split_indices(n: int, fractions: tuple[float, ...], seed: int) -> list[np.ndarray]:
    """Partition ``range(n)`` into consecutive chunks of a seeded permutation; the last chunk takes the
    rounding remainder. The split depends on ``seed`` only, never on the run's seed."""
    perm = np.random.default_rng(seed).permutation(n)
    bounds = np.cumsum([0] + [int(round(f * n)) for f in fractions[:-1]] + [0])
    bounds[-1] = n
    return [np.sort(perm[a:b]) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


class ArrayWriter:
    """Write ``(n, length)`` uint8 rows into ``<dir>/images.npy`` without holding them all in memory."""

    def __init__(self, directory: Path, n: int, length: int):
        self.directory = Path(directory)
        self.images = np.lib.format.open_memmap(
            self.directory / "images.npy", mode="w+", dtype=np.uint8, shape=(n, length)
        )
        self.labels = np.zeros(n, dtype=np.int64)
        self.n = 0
        self._content = hashlib.sha256()  # of the rows in order, for the data's fingerprint

    def append(self, rows: np.ndarray, labels: np.ndarray) -> None:
        k = len(rows)
        self.images[self.n : self.n + k] = rows
        self.labels[self.n : self.n + k] = labels
        self._content.update(np.ascontiguousarray(rows, dtype=np.uint8).data)
        self.n += k

    def close(self, **meta) -> None:
        """Flush and record metadata. Rows past ``num_examples`` (inputs skipped as unreadable) stay
        in the file unused: the reader slices them off, which is free on a memory map."""
        self.images.flush()
        n, length = self.n, self.images.shape[1]
        del self.images
        np.save(self.directory / "labels.npy", self.labels[:n])
        meta = {
            "version": ARRAY_FORMAT_VERSION,
            "num_examples": n,
            "length": length,
            "content": self._content.hexdigest(),
            **meta,
        }
        (self.directory / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")


def array_digest(images: np.ndarray, rows_per_chunk: int = 4096) -> str:
    """sha256 of the rows, read in chunks (a memory-mapped Path-X array is never loaded whole)."""
    h = hashlib.sha256()
    for a in range(0, len(images), rows_per_chunk):
        h.update(np.ascontiguousarray(images[a : a + rows_per_chunk]).data)
    return h.hexdigest()


def load_arrays(directory: Path) -> tuple[np.ndarray, np.ndarray, dict]:
    directory = Path(directory)
    meta = json.loads((directory / "meta.json").read_text())
    if meta.get("version") != ARRAY_FORMAT_VERSION:
        raise DataFormatError(
            f"{directory}: cache format {meta.get('version')} is stale; delete it to rebuild"
        )
    images = np.load(directory / "images.npy", mmap_mode="r")[: meta["num_examples"]]
    labels = np.load(directory / "labels.npy")
    if "content" not in meta:  # a cache built before content hashes were recorded
        meta["content"] = array_digest(images)
    return images, labels, meta


class ArrayDataset(Dataset):
    """Rows ``indices`` of a fixed-length array. Every example has the full length, so the collate's
    length-based mask is all True: a black (0) pixel is data, not padding."""

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        *,
        indices: np.ndarray | None = None,
        content: str | None = None,
    ):
        self.images, self.labels = images, labels
        self.indices = np.arange(len(labels)) if indices is None else np.asarray(indices)
        self.content = content  # sha256 of ``images`` (from the cache's meta.json)

    def digest(self, h) -> None:
        """Feed what this split holds to hash ``h``: the array's content hash, labels and rows."""
        h.update((self.content or array_digest(self.images)).encode())
        h.update(np.ascontiguousarray(self.labels).data)
        h.update(np.asarray(self.indices, dtype=np.int64).tobytes())

    def __len__(self) -> int:
        return len(self.indices)

    def lengths(self) -> np.ndarray:
        return np.full(len(self.indices), self.images.shape[1], dtype=np.int64)

    def __getstate__(self) -> dict:
        # Loader workers started by spawn/forkserver reopen the memory map instead of receiving a
        # pickled copy of the whole array (3.3 GB for Path-X).
        state = self.__dict__.copy()
        images = self.images
        if isinstance(images, np.memmap) and images.filename is not None:
            state["images"] = (str(images.filename), len(images))
        return state

    def __setstate__(self, state: dict) -> None:
        if isinstance(state["images"], tuple):
            filename, n = state["images"]
            state["images"] = np.load(filename, mmap_mode="r")[:n]
        self.__dict__.update(state)

    def __getitem__(self, i: int) -> dict:
        j = int(self.indices[i])
        return {
            "input_ids": torch.from_numpy(np.asarray(self.images[j], dtype=np.int64)),
            "label": int(self.labels[j]),
        }
