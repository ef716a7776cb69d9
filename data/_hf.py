"""HF ``datasets`` sources for Text (IMDB) and Image (CIFAR-10): a local copy or the Hub, never a hang.

A local copy is either a ``save_to_disk`` folder (``dataset_dict.json`` inside) or parquet files (one
per split or sharded, named ``<split>[-...].parquet`` or under ``<split>/``), as the Hub itself stores
them. Without a local copy the Hub is used; when it cannot be reached the loader fails at once with one
line naming ``data.path``, rather than waiting on retries.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

from data._arrays import split_indices
from data.base import LRADataModule
from data.cache import file_signature
from data.errors import ConfigError

HUB_TIMEOUT_S = 5.0
KNOWN_SPLITS = ("train", "validation", "test", "unsupervised")


class DataUnavailableError(FileNotFoundError):
    """The data is neither on disk nor reachable; the message says where to put it."""


def _offline() -> bool:
    truthy = {"1", "on", "yes", "true"}
    return any(os.environ.get(k, "").lower() in truthy for k in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"))


def _how_to_get(name: str, path: Path) -> str:
    return (
        f"either allow access to the HF Hub (dataset '{name}'), or save a local copy once on a machine "
        f"with network (python -c \"import datasets; datasets.load_dataset('{name}').save_to_disk('{path}')\") "
        f"and point data.path at it (currently data.path={path}); parquet files from the Hub work too"
    )


def hub_reachable(timeout: float = HUB_TIMEOUT_S) -> bool:
    """One short request to the Hub endpoint; any HTTP answer (even an error status) means reachable."""
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    try:
        urllib.request.urlopen(endpoint, timeout=timeout).close()
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError, ValueError):
        return False
    return True


def _parquet_splits(path: Path) -> dict[str, list[str]]:
    """Group parquet files under ``path`` by split: the parent folder name or the file name's prefix."""
    groups: dict[str, list[str]] = {}
    for f in sorted(path.rglob("*.parquet")):
        split = f.parent.name if f.parent.name in KNOWN_SPLITS else f.name.split("-")[0].split(".")[0]
        groups.setdefault(split, []).append(str(f))
    return groups


def local_signature(path: Path) -> list[dict]:
    """Names, sizes and mtimes of every file of a local copy: changes when the copy changes."""
    return [
        {**file_signature(f), "name": str(f.relative_to(path))}
        for f in sorted(path.rglob("*"))
        if f.is_file()
    ]


def load_local(path: Path):
    """A ``DatasetDict`` from a ``save_to_disk`` folder or parquet files."""
    import datasets

    if (path / "dataset_dict.json").is_file():
        return datasets.load_from_disk(str(path))
    if (path / "state.json").is_file():
        raise DataUnavailableError(
            f"{path} holds a single split saved with save_to_disk; save the whole DatasetDict "
            f"(all splits) instead"
        )
    groups = _parquet_splits(path)
    if not groups:
        raise DataUnavailableError(
            f"{path} exists but holds neither a save_to_disk DatasetDict (dataset_dict.json) nor parquet files"
        )
    return datasets.load_dataset("parquet", data_files=groups)


def load_hub(name: str, path: Path):
    """``datasets.load_dataset(name)``: from the HF cache when offline, else from the Hub, failing fast."""
    if not _offline() and not hub_reachable():
        raise DataUnavailableError(
            f"the HF Hub cannot be reached to download '{name}' and no local copy exists at {path}; "
            f"{_how_to_get(name, path)}. A copy already in the HF cache works with HF_DATASETS_OFFLINE=1."
        )
    import datasets

    try:
        return datasets.load_dataset(name)
    except (ConnectionError, OSError, ValueError) as exc:  # offline cache miss, DNS failure, HTTP errors
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataUnavailableError(
            f"could not load '{name}' from the HF Hub or the HF cache ({first}); {_how_to_get(name, path)}"
        ) from None


def resolve(name: str, path: Path, source: str = "auto") -> tuple[str, dict]:
    """Which source a run uses (``local`` or ``hub``) and its identity for cache fingerprints, without
    loading anything: a cache built earlier is found again with no network and no HF import."""
    if source not in ("auto", "local", "hub"):
        raise ConfigError(f"data.source={source!r} must be one of auto|local|hub")
    if source == "local" or (source == "auto" and path.exists()):
        if not path.exists():
            raise DataUnavailableError(f"no local copy of '{name}' at {path}; {_how_to_get(name, path)}")
        return "local", {"local": str(path.resolve()), "files": local_signature(path)}
    return "hub", {"hub": name}


def load_splits(name: str, path: Path, kind: str, splits: tuple[str, ...]):
    """The ``DatasetDict`` for a source chosen by :func:`resolve`, checked to hold ``splits``, and a
    description of where it came from for error messages."""
    ds = load_local(path) if kind == "local" else load_hub(name, path)
    where = str(path) if kind == "local" else f"HF dataset '{name}'"
    missing = [s for s in splits if s not in ds]
    if missing:
        raise DataUnavailableError(f"{where}: '{name}' has no split {missing[0]!r} (found {sorted(ds)})")
    return ds, where


def source_info(kind: str | None, name: str, path: Path) -> dict:
    """The ``data`` record's source fields for a source chosen by :func:`resolve`."""
    if kind is None:
        return {"source": None, "path": None, "generator": None}
    return {"source": kind, "path": str(path) if kind == "local" else f"hf:{name}", "generator": None}


class HFDataModule(LRADataModule):
    """A task read through HF ``datasets``: a local copy at ``path`` (save_to_disk folder or parquet)
    or the Hub (``source``: auto | local | hub). The resolved source is ``(kind, identity)``."""

    val_splits: tuple[str, ...] = ()

    def __init__(
        self,
        *,
        dataset_name: str,
        val_split: str,
        source: str = "auto",
        val_fraction: float = 0.1,
        split_seed: int = 0,
        **base,
    ):
        super().__init__(**base)
        if val_split not in self.val_splits:
            raise ValueError(f"data.val_split={val_split!r} must be one of {'|'.join(self.val_splits)}")
        self.source = source
        self.dataset_name = dataset_name
        self.val_split = val_split
        self.val_fraction = val_fraction
        self.split_seed = split_seed

    def resolve_source(self) -> tuple[str, dict]:
        return resolve(self.dataset_name, self.path, self.source)

    def load_dataset(self, source: tuple[str, dict], splits: tuple[str, ...] = ("train", "test")):
        """The ``DatasetDict`` of the resolved source and where it came from (for messages)."""
        return load_splits(self.dataset_name, self.path, source[0], splits)

    def held_out(self, n: int):
        """Seeded (fit, validation) indices of ``n`` training examples (``val_fraction`` held out)."""
        return split_indices(n, (1 - self.val_fraction, self.val_fraction), self.split_seed)

    def source_info(self) -> dict:
        kind = self.resolved_source[0] if self.resolved_source is not None else None
        return source_info(kind, self.dataset_name, self.path)
