"""Tokenised-array caches: ragged sequences stored as one flat array plus offsets, written atomically.

A cache is only ever visible under its final name once completely written, so an interrupted build
is never reused. Temporary files and folders carry the writer's process id, so the next preparation
(holding the lock) can remove those a killed process left behind.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock
from torch.utils.data import Dataset

from lra.errors import ConfigError, DataFormatError

CACHE_FORMAT_VERSION = 1


def fingerprint(*parts) -> str:
    """Short stable hash of JSON-able parts (settings, source file sizes and mtimes)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def file_signature(path: Path) -> dict:
    st = path.stat()
    return {"name": path.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def tree_signature(directory: Path) -> str:
    """Hash of the relative name, size and mtime of every file below ``directory``: changes when any
    file is added, removed, replaced or rewritten, at the cost of one ``stat`` per file (no reading)."""
    digest = hashlib.sha256()
    stack = [Path(directory)]
    while stack:
        folder = stack.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except FileNotFoundError:
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=True):
                stack.append(Path(entry.path))
            else:
                st = entry.stat()
                rel = os.path.relpath(entry.path, directory)
                digest.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``path`` through a temporary sibling renamed into place: readers see the old file or the
    complete new one, never a partial one, and a failed write (disk full) leaves nothing behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as f:
        f.write(data)


@contextmanager
def atomic_output(path: Path) -> Iterator:
    """A binary file object whose content replaces ``path`` only when the block completes."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    try:
        # mkstemp creates 0600 files; give the result the mode a plain open() would (umask applies),
        # so caches and results.json stay readable by the rest of a team.
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


class AtomicDirectory:
    """Build a directory under a temporary sibling name; put it in place only on success.

    ``ours``: the pattern of what the writer puts in the folder (see :func:`check_replaceable`). With
    it, an existing folder at the final name is replaced only when it holds nothing else, so a
    generator pointed at a user's folder refuses instead of deleting what is there."""

    def __init__(self, final: Path, ours: str | None = None):
        final = Path(final)
        # A linked folder (data kept on another disk) is replaced where the link points, not by a
        # folder beside the link.
        self.final = final.resolve() if final.is_symlink() else final
        self.ours = ours
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
        try:
            if self.ours is not None:
                # Again at the end: a user may have put a file there while the data was written.
                check_replaceable(self.final, self.ours)
            swap_into_place(self.tmp, self.final)
        except BaseException:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise


def swap_into_place(new: Path, final: Path) -> None:
    """Put the complete folder ``new`` at ``final``, replacing the folder there.

    A folder cannot be renamed over a non-empty one, so the old folder is first renamed aside
    (``.<name>.replaced-<pid>``), ``new`` renamed into place, and only then the old one deleted. A
    process killed between the two renames leaves the old data complete under the aside name, and
    :func:`clean_leftovers` (run under the lock by the next preparation) renames it back; killed after
    them, the new data is in place and the aside folder is removed."""
    if not final.exists() and not final.is_symlink():
        os.replace(new, final)
        return
    aside = final.parent / f".{final.name}.replaced-{os.getpid()}"
    shutil.rmtree(aside, ignore_errors=True)
    os.replace(final, aside)
    try:
        os.replace(new, final)
    except BaseException:
        os.replace(aside, final)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def foreign_entries(folder: Path, ours: str) -> list[str]:
    """What in ``folder`` a generator did not write, as paths relative to it: all of its entries when
    it holds no settings file of an earlier generation (``generation.json``, a JSON object), else those
    the pattern ``ours`` does not match. Links and special files are never a generator's."""
    folder = Path(folder)
    if not _holds_spec(folder):
        return sorted(os.listdir(folder))
    pattern = re.compile(ours)
    found = []
    for root, dirs, files in os.walk(folder):
        for name in sorted(dirs) + sorted(files):
            path = Path(root) / name
            rel = path.relative_to(folder).as_posix()
            plain = path.is_dir() if name in dirs else path.is_file()
            if path.is_symlink() or not plain or (rel != SPEC_FILE and not pattern.fullmatch(rel)):
                found.append(rel)
        dirs[:] = [d for d in dirs if not (Path(root) / d).is_symlink()]
    return found


def _holds_spec(folder: Path) -> bool:
    try:
        return isinstance(json.loads((folder / SPEC_FILE).read_text()), dict)
    except (OSError, ValueError):
        return False


def check_replaceable(folder: Path, ours: str, key: str | None = None) -> None:
    """Refuse, in one line naming the folder (as ``key=folder`` where a config key sets it), to
    generate into a folder whose replacement would delete what the generator did not write there. A
    missing or empty folder, or one an earlier generation wrote (its settings file and its own files
    only), passes."""
    folder = Path(folder)
    check_folder(folder, key)
    folder = folder.resolve() if folder.is_symlink() else folder
    if not folder.exists():
        return
    foreign = foreign_entries(folder, ours)
    if foreign:
        where = f"{key}={folder}" if key else str(folder)
        fix = f"set {key} to an empty or new folder" if key else "choose an empty or new folder"
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise ConfigError(
            f"{where} is not empty and holds what generation did not write ({shown}); generating "
            f"replaces the whole folder and would delete it: {fix}, or move those out"
        )


def check_folder(path: Path, key: str | None = None) -> None:
    """Refuse, in one line naming ``key`` and the path, a folder setting that is a file or lies below
    one (creating or opening it would fail deep inside data preparation, with a traceback)."""
    path = Path(path)
    for part in (path, *path.parents):
        if part.exists():
            if not part.is_dir():
                where = f"{key}={path}" if key else str(path)
                what = "is a file" if part == path else f"lies inside {part}, which is a file"
                fix = f"point {key} at a folder" if key else "choose a folder"
                raise ConfigError(f"{where} {what}, not a folder; {fix}")
            return


# Temporary names written by this module: ".<name>.partial-<pid>" folders, ".<name>.<pid>.<random>.tmp"
# files, and ".<name>.replaced-<pid>" folders (the old folder set aside by swap_into_place).
_LEFTOVER = re.compile(
    r"^\.(?P<name>.+)\.(?P<kind>partial|replaced)-(?P<pid>\d+)$|^\..+\.(?P<file_pid>\d+)\.[^.]+\.tmp$"
)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # another user's process (or an impossible pid): leave its files alone
    return True


def clean_leftovers(directory: Path, depth: int = 0) -> list[Path]:
    """Remove temporary files and folders of killed writers (their pid is no longer alive) in
    ``directory`` and up to ``depth`` levels below it; returns what was removed."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for entry in entries:
        match = _LEFTOVER.match(entry.name)
        if match:
            if not _pid_alive(int(match["pid"] or match["file_pid"])):
                path = Path(entry.path)
                final = Path(directory) / (match["name"] or "")
                if match["kind"] == "replaced" and not final.exists() and not final.is_symlink():
                    os.replace(path, final)  # killed between swap_into_place's renames: the old data back
                elif entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
                removed.append(path)
        elif depth > 0 and entry.is_dir(follow_symlinks=False):
            removed += clean_leftovers(Path(entry.path), depth - 1)
    return removed


@contextmanager
def preparation_lock(cache_dir: str | Path) -> Iterator[None]:
    """An inter-process lock for building data: runs of a parallel sweep that start together must not
    generate or cache the same files at the same time (the later rename would pull the earlier one's
    files from under its reader). The first run builds; the others wait, then find everything built.
    Whoever takes the lock first removes what killed preparations left in the cache."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache_dir / ".prepare.lock")):
        clean_leftovers(cache_dir, depth=2)
        yield


SPEC_FILE = "generation.json"  # a generated folder's settings


def read_spec(out_dir: Path, spec_type: type):
    """The settings a generated folder was made with (``generation.json``), or None."""
    meta = Path(out_dir) / SPEC_FILE
    try:
        return spec_type(**json.loads(meta.read_text()))
    except (OSError, ValueError, TypeError):
        # None: no settings file, or another generator's (or a damaged) one; either way the folder
        # does not hold this generation, and regenerating it is refused if it holds anything else.
        return None


def write_spec(out_dir: Path, spec) -> None:
    (Path(out_dir) / SPEC_FILE).write_text(json.dumps(asdict(spec), indent=2) + "\n")


@contextmanager
def generation_lock(out_dir: Path) -> Iterator[None]:
    """Lock a generated-data folder (``<parent>/.<name>.lock``): runs that share ``data_dir`` but not
    ``cache_dir`` must not generate into the same folder at once. Cleans killed generators' leftovers."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out_dir.parent / f".{out_dir.name}.lock")):
        clean_leftovers(out_dir.parent)
        yield


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
            raise DataFormatError(f"{path}: cache format {int(z['version'])} is stale; delete it to rebuild")
        return {k: z[k] for k in z.files}


def load_ragged_dataset(path: Path, max_len: int | None = None) -> RaggedDataset:
    """A :class:`RaggedDataset` of one cached split (both documents where the cache holds two)."""
    z = load_ragged(path)
    return RaggedDataset(
        z["flat"],
        z["offsets"],
        z["labels"],
        max_len=max_len,
        flat2=z.get("flat2"),
        offsets2=z.get("offsets2"),
        truncated=z.get("truncated"),
    )


class RaggedDataset(Dataset):
    """Examples from flat token arrays; ``max_len`` truncates (the release caps lengths per task).

    ``truncated`` marks examples already cut when the cache was built (Retrieval caches only what the
    model can see); :meth:`truncated_mask` adds those cut here by ``max_len``.
    """

    def __init__(
        self,
        flat: np.ndarray,
        offsets: np.ndarray,
        labels: np.ndarray,
        *,
        max_len: int | None = None,
        flat2: np.ndarray | None = None,
        offsets2: np.ndarray | None = None,
        truncated: np.ndarray | None = None,
    ):
        self.flat, self.offsets, self.labels = flat, offsets, labels
        self.flat2, self.offsets2 = flat2, offsets2
        self.max_len = max_len
        self.truncated = truncated

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

    def truncated_mask(self) -> np.ndarray:
        """Per example: True when the model sees less than the whole input (either document)."""
        mask = np.zeros(len(self), dtype=bool) if self.truncated is None else self.truncated.astype(bool)
        if self.max_len is not None:
            mask = mask | (np.diff(self.offsets) > self.max_len)
            if self.offsets2 is not None:
                mask = mask | (np.diff(self.offsets2) > self.max_len)
        return mask

    def max_length(self) -> int:
        """The longest input as stored (before ``max_len``)."""
        lengths = np.diff(self.offsets)
        if self.offsets2 is not None:
            lengths = np.maximum(lengths, np.diff(self.offsets2))
        return int(lengths.max()) if len(lengths) else 0

    def digest(self, h) -> None:
        """Feed the stored arrays to hash ``h`` (the data's content fingerprint)."""
        for array in (self.flat, self.offsets, self.labels, self.flat2, self.offsets2):
            if array is not None:
                h.update(np.ascontiguousarray(array).data)
