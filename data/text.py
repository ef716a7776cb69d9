"""Text (LRA): IMDB sentiment from raw bytes, reviews truncated to ``max_len`` (4000 in the LRA paper).

Bytes are tokens: id = byte value, vocabulary 256, stored as uint8. Padding needs no reserved id:
masks come from lengths, never from values. The cache holds whole reviews; ``max_len`` truncates when examples are read, so the
1K and 4K settings share one cache. As in LRA, the test split also serves as validation unless
``val_split=train`` holds out ``val_fraction`` of the training reviews (seeded by ``split_seed``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from torch.utils.data import Subset

from data import _hf
from data._arrays import split_indices
from data.base import LRADataModule
from data.cache import RaggedDataset, atomic_write_text, fingerprint, load_ragged, save_ragged
from lra.errors import DataFormatError

log = logging.getLogger(__name__)

TOKENIZER = "utf8-bytes/v1"  # part of the cache key: change it when encode() changes
VAL_SPLITS = ("test", "train")


def encode_bytes(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """UTF-8 bytes of each text as (flat uint8 ids, offsets)."""
    encoded = [t.encode("utf-8") for t in texts]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    flat = np.frombuffer(b"".join(encoded), dtype=np.uint8).copy()
    return flat, offsets


def check_examples(
    texts: list, labels: list, where: str, num_classes: int, strict: bool
) -> tuple[list[str], list[int], int]:
    """Keep rows with a string text and an integer label in range; raise on the first bad row (naming
    it) when ``strict``, else drop and count them."""
    keep_t, keep_l, skipped = [], [], 0
    for i, (t, y) in enumerate(zip(texts, labels, strict=True)):
        problem = None
        if not isinstance(t, str):
            problem = f"text is {type(t).__name__}, not a string"
        elif isinstance(y, bool) or not isinstance(y, (int, np.integer)) or not 0 <= y < num_classes:
            problem = f"label {y!r} is not a class in 0..{num_classes - 1}"
        if problem:
            if strict:
                raise DataFormatError(f"{where} row {i}: {problem} (data.strict=false skips such rows)")
            skipped += 1
            continue
        keep_t.append(t)
        keep_l.append(int(y))
    return keep_t, keep_l, skipped


class TextDataModule(LRADataModule):
    """IMDB from a local copy at ``path`` (save_to_disk folder or parquet) or the HF Hub (``source``:
    auto | local | hub)."""

    num_classes = 2
    vocab_size = 256

    def __init__(
        self,
        path: str,
        cache_dir: str,
        source: str = "auto",
        dataset_name: str = "imdb",
        max_len: int = 4000,
        val_split: str = "test",
        val_fraction: float = 0.1,
        split_seed: int = 0,
        strict: bool = True,
        **loader,
    ):
        super().__init__(**loader)
        if val_split not in VAL_SPLITS:
            raise ValueError(f"data.val_split={val_split!r} must be one of {'|'.join(VAL_SPLITS)}")
        self.path = Path(path)
        self.cache_dir = Path(cache_dir)
        self.source = source
        self.dataset_name = dataset_name
        self.max_len = max_len
        self.val_split = val_split
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        self.strict = strict
        self._kind: str | None = None

    def _cache_path(self) -> tuple[Path, str]:
        kind, identity = _hf.resolve(self.dataset_name, self.path, self.source)
        key = fingerprint(identity, TOKENIZER, self.strict)
        return self.cache_dir / "text" / key, kind

    def prepare_data(self) -> None:
        cache, kind = self._cache_path()
        if (cache / "test.npz").exists():
            return
        ds, where = _hf.load_splits(self.dataset_name, self.path, kind, ("train", "test"))
        report = {}
        for split in ("train", "test"):
            for col in ("text", "label"):
                if col not in ds[split].column_names:
                    raise DataFormatError(f"{where} [{split}]: no column {col!r} ({ds[split].column_names})")
            texts, labels, skipped = check_examples(
                ds[split]["text"], ds[split]["label"], f"{where} [{split}]", self.num_classes, self.strict
            )
            if skipped:
                log.warning("text: skipped %d malformed rows of %s [%s]", skipped, where, split)
            flat, offsets = encode_bytes(texts)
            # test.npz is written last: its presence marks a complete cache.
            save_ragged(cache / f"{split}.npz", flat=flat, offsets=offsets, labels=labels)
            report[split] = {"examples": len(labels), "skipped": skipped}
        atomic_write_text(cache / "source.json", json.dumps({"source": where, "splits": report}, indent=1))

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        cache, self._kind = self._cache_path()
        if not (cache / "test.npz").exists():
            self.prepare_data()
        train, test = (load_ragged(cache / f"{s}.npz") for s in ("train", "test"))
        train_ds = RaggedDataset(train["flat"], train["offsets"], train["labels"], max_len=self.max_len)
        test_ds = RaggedDataset(test["flat"], test["offsets"], test["labels"], max_len=self.max_len)
        self.splits["test"] = test_ds
        if self.val_split == "test":
            self.splits["train"], self.splits["val"] = train_ds, test_ds
        else:
            fit, val = split_indices(
                len(train_ds), (1 - self.val_fraction, self.val_fraction), self.split_seed
            )
            self.splits["train"], self.splits["val"] = Subset(train_ds, fit), Subset(train_ds, val)

    def source_info(self) -> dict:
        return _hf.source_info(self._kind, self.dataset_name, self.path)
