"""Tokenised-array caches: ragged sequences stored as one flat array plus offsets, written atomically.

A cache is only ever visible under its final name once completely written, so an interrupted build
is never reused. Temporary files and folders are named ``.lra-<host>-<pid>.<...>`` (see
:func:`temp_name`), so the next preparation (holding the lock) can remove those a killed process left
behind, and nothing else: not a user's file that merely looks temporary, not a temporary of a process
on another machine sharing the filesystem.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import re
import shutil
import socket
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from filelock import FileLock
from torch.utils.data import Dataset

from data.errors import ConfigError, DataFormatError, LRAError

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
    # The target's name (shortened: the whole must stay within a file name's 255 bytes) only says
    # what the temporary was for.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f"{_owner()}.", suffix=f".{path.name[:100]}.tmp")
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
    generator pointed at a user's folder refuses instead of deleting what is there.

    ``marker``: the file whose presence marks the folder complete. With it, the process's current
    folder is filled in place (the marker last) rather than replaced (see :func:`swap_into_place`)."""

    def __init__(self, final: Path, ours: str | None = None, marker: str | None = None):
        # Resolved first: the temporary sibling must lie beside the folder, which for "." or "sub/.."
        # is not inside the folder named. A linked folder (data kept on another disk) is replaced where
        # the link points, not by a folder beside the link.
        self.final = Path(final).resolve()
        self.ours = ours
        self.marker = marker
        self.tmp = self.final.parent / temp_name("partial", self.final.name)

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
            swap_into_place(self.tmp, self.final, self.marker)
        except BaseException:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise


def swap_into_place(new: Path, final: Path, marker: str | None = None) -> None:
    """Put the complete folder ``new`` at ``final``, replacing the folder there.

    A folder cannot be renamed over a non-empty one, so the old folder is first renamed aside
    (:func:`temp_name` ``replaced``), ``new`` renamed into place, and only then the old one deleted. A
    process killed between the two renames leaves the old data complete under the aside name, and
    :func:`clean_leftovers` (run under the lock by the next preparation) renames it back; killed after
    them, the new data is in place and the aside folder is removed.

    With ``marker``, the process's current folder (``generate .``) is filled in place instead:
    replaced, it would leave the shell that started the process in a deleted folder, seeing none of the
    files. The old marker goes first and the new one last, so a reader never takes the folder for
    complete while its files change; a process killed meanwhile leaves a folder without the marker,
    which a generator refuses to replace (naming the files) rather than deleting them."""
    if not final.exists() and not final.is_symlink():
        os.replace(new, final)
        return
    if marker is not None and _is_cwd(final):
        _fill(new, final, marker)
        return
    aside = final.parent / temp_name("replaced", final.name)
    shutil.rmtree(aside, ignore_errors=True)
    os.replace(final, aside)
    try:
        os.replace(new, final)
    except BaseException:
        os.replace(aside, final)
        raise
    shutil.rmtree(aside, ignore_errors=True)


def _is_cwd(path: Path) -> bool:
    try:
        return os.path.samefile(path, os.getcwd())
    except OSError:  # the current folder deleted, or path gone
        return False


def _fill(new: Path, final: Path, marker: str) -> None:
    """Move ``new``'s entries into ``final`` over those of the same name, its ``marker`` removed first
    and put back last."""
    (final / marker).unlink(missing_ok=True)
    for name in sorted(os.listdir(new), key=lambda name: (name == marker, name)):
        os.replace(new / name, final / name)
    new.rmdir()


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


def _host() -> str:
    """This machine's name as temporary names carry it: letters, digits and ``_`` only, so that it never
    holds the ``-`` separating it from the pid."""
    return re.sub(r"[^A-Za-z0-9]", "_", socket.gethostname())[:64] or "localhost"


def _owner() -> str:
    return f".lra-{_host()}-{os.getpid()}"


def temp_name(kind: str, name: str) -> str:
    """The name of a temporary folder for ``name`` (``partial``: being built; ``replaced``: the old
    folder set aside by :func:`swap_into_place`): ``.lra-<host>-<pid>.<kind>-<name>``. Temporary files
    (:func:`atomic_output`) are ``.lra-<host>-<pid>.<random>.<name>.tmp``. The host matters on a shared
    filesystem: a pid that is dead on this machine may be alive on another."""
    return f"{_owner()}.{kind}-{name}"


_TEMP = re.compile(
    r"\.lra-(?P<host>[A-Za-z0-9_]+)-(?P<pid>\d+)\."
    r"(?:(?P<kind>partial|replaced)-(?P<name>.+)|[a-z0-9_]{8}\..+\.tmp)"
)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # another user's process (or an impossible pid): leave its files alone
    return True


def clean_leftovers(directory: Path) -> list[Path]:
    """Remove the temporary files and folders (:func:`temp_name`) that killed writers of this machine
    (their pid is no longer alive) left directly in ``directory``, the folder where the caller builds;
    returns what was removed. Nothing below it is looked at, and no other name is touched: the folder
    may be a user's, holding files that only look temporary. (Temporaries named by earlier versions,
    ``.<name>.partial-<pid>``, are left alone for that reason.)"""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return removed
    host = _host()
    for entry in entries:
        match = _TEMP.fullmatch(entry.name)
        if not match or match["host"] != host or _pid_alive(int(match["pid"])):
            continue
        path = Path(entry.path)
        final = Path(directory) / (match["name"] or "")
        if match["kind"] == "replaced" and not final.exists() and not final.is_symlink():
            os.replace(path, final)  # killed between swap_into_place's renames: the old data back
        elif entry.is_dir(follow_symlinks=False):
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


@contextmanager
def preparation_lock(cache_dir: str | Path) -> Iterator[None]:
    """An inter-process lock for building data: runs of a parallel sweep that start together must not
    generate or cache the same files at the same time (the later rename would pull the earlier one's
    files from under its reader). The first run builds; the others wait, then find everything built.
    Holding it, a task removes what killed preparations left where it builds (:func:`clean_leftovers`
    on its cache's parent folder)."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache_dir / ".prepare.lock")):
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


def generator_command(generate: Callable[[], object], out_dir: Path) -> None:
    """The end of a generator's command line: ``generate()``, then ``wrote <out_dir>``; an LRAError is
    printed as ``error: ...`` and exits with status 1 (no traceback: it says what to change)."""
    try:
        generate()
    except LRAError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    print(f"wrote {out_dir}")


@contextmanager
def generation_lock(out_dir: Path) -> Iterator[None]:
    """Lock a generated-data folder (``<parent>/.<name>.lock``): runs that share ``data_dir`` but not
    ``cache_dir`` must not generate into the same folder at once. Cleans killed generators' leftovers
    where :class:`AtomicDirectory` builds (beside the resolved folder: for ``.`` not inside it)."""
    out_dir = Path(out_dir).resolve()
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


class DamagedCacheError(DataFormatError):
    """A cache file that cannot be read (truncated, overwritten, of a stale format). A cache is derived
    data: :meth:`data.base.LRADataModule.setup` rebuilds it."""


# What reading a damaged file raises: numpy's and zipfile's errors for a truncated or overwritten .npz
# or .npy, json's (a ValueError) for a damaged .json, OSError for a missing or unreadable one.
UNREADABLE = (zipfile.BadZipFile, EOFError, ValueError, KeyError, OSError, pickle.UnpicklingError)


def load_ragged(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path) as z:
            version = int(z["version"])
            if version != CACHE_FORMAT_VERSION:
                raise DamagedCacheError(f"{path}: cache format {version} is stale; delete it to rebuild")
            return {k: z[k] for k in z.files}
    except DamagedCacheError:
        raise
    except PermissionError:
        raise  # not damage: the cache is there, the user may not read it
    except UNREADABLE as exc:
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DamagedCacheError(
            f"{path}: damaged cache file ({type(exc).__name__}: {why}); delete it to rebuild"
        ) from exc


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
