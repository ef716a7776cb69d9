"""Tokenised-array caches: ragged sequences stored as one flat array plus offsets, written atomically.

A cache is only ever visible under its final name once completely written, so an interrupted build
is never reused.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock
from torch.utils.data import Dataset

CACHE_FORMAT_VERSION = 1


def fingerprint(*parts) -> str:
    """Short stable hash of JSON-able parts (settings, source file sizes and mtimes)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def file_signature(path: Path) -> dict:
    st = path.stat()
    return {"name": path.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


class AtomicDirectory:
    """Build a directory under a temporary sibling name; rename into place only on success."""

    def __init__(self, final: Path):
        self.final = Path(final)
        self.tmp = self.final.parent / f".{self.final.name}.partial-{os.getpid()}"

    def __enter__(self) -> Path:
        self.final.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir()
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        if self.final.exists():
            shutil.rmtree(self.final)
        os.replace(self.tmp, self.final)


def preparation_lock(cache_dir: str | Path) -> FileLock:
    """An inter-process lock for building data: runs of a parallel sweep that start together must not
    generate or cache the same files at the same time (the later rename would pull the earlier one's
    files from under its reader). The first run builds; the others wait, then find everything built."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    return FileLock(str(cache_dir / ".prepare.lock"))


def save_ragged(
    path: Path,
    seqs: Iterable[Sequence[int]] | None = None,
    labels: Sequence[int] = (),
    flat: np.ndarray | None = None,
    offsets: np.ndarray | None = None,
    **extra,
) -> None:
    """Write sequences (or an already flat array + offsets) with labels to one .npz, atomically."""
    if flat is None:
        seqs = list(seqs or [])
        lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
        offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        flat = np.concatenate([np.asarray(s) for s in seqs]) if seqs else np.zeros(0, np.int64)
    buf = io.BytesIO()
    np.savez(
        buf,
        flat=flat,
        offsets=offsets,
        labels=np.asarray(labels, dtype=np.int64),
        version=np.int64(CACHE_FORMAT_VERSION),
        **extra,
    )
    atomic_write_bytes(Path(path), buf.getvalue())


def load_ragged(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        if int(z["version"]) != CACHE_FORMAT_VERSION:
            raise ValueError(f"{path}: cache format {int(z['version'])} is stale; delete it to rebuild")
        return {k: z[k] for k in z.files}


class RaggedDataset(Dataset):
    """Examples from flat token arrays; ``max_len`` truncates (the release caps lengths per task)."""

    def __init__(
        self,
        flat: np.ndarray,
        offsets: np.ndarray,
        labels: np.ndarray,
        max_len: int | None = None,
        flat2: np.ndarray | None = None,
        offsets2: np.ndarray | None = None,
    ):
        self.flat, self.offsets, self.labels = flat, offsets, labels
        self.flat2, self.offsets2 = flat2, offsets2
        self.max_len = max_len

    def __len__(self) -> int:
        return len(self.labels)

    def _slice(self, flat, offsets, i):
        a, b = int(offsets[i]), int(offsets[i + 1])
        if self.max_len is not None:
            b = min(b, a + self.max_len)
        return torch.from_numpy(flat[a:b].astype(np.int64))

    def __getitem__(self, i: int) -> dict:
        ex = {"input_ids": self._slice(self.flat, self.offsets, i), "label": int(self.labels[i])}
        if self.flat2 is not None:
            ex["input_ids2"] = self._slice(self.flat2, self.offsets2, i)
        return ex

    def num_tokens(self, i: int) -> int:
        n = int(self.offsets[i + 1] - self.offsets[i])
        return min(n, self.max_len) if self.max_len else n

    def lengths(self) -> np.ndarray:
        """Every example's length as batched (after truncation; the longer document for two towers)."""
        out = np.diff(self.offsets)
        if self.offsets2 is not None:
            out = np.maximum(out, np.diff(self.offsets2))
        return np.minimum(out, self.max_len) if self.max_len else out
