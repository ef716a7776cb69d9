"""Text (LRA): IMDB sentiment from raw bytes, reviews truncated to ``max_len`` (4000 in the LRA paper).

Bytes are tokens: id = byte value, vocabulary 256, stored as uint8. Padding needs no reserved id:
masks come from lengths, never from values. The cache holds whole reviews; ``max_len`` truncates when examples are read, so the
1K and 4K settings share one cache. As in LRA, the test split also serves as validation unless
``val_split=train`` holds out ``val_fraction`` of the training reviews (seeded by ``split_seed``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from torch.utils.data import Subset

from data._hf import HFDataModule
from data.cache import load_ragged_dataset, save_ragged
from data.errors import DataFormatError, malformed_row

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
            malformed_row(f"{where} row {i}", problem, strict)
            skipped += 1
            continue
        keep_t.append(t)
        keep_l.append(int(y))
    return keep_t, keep_l, skipped


class TextDataModule(HFDataModule):
    """IMDB from a local copy at ``path`` (save_to_disk folder or parquet) or the HF Hub (``source``:
    auto | local | hub)."""

    num_classes = 2
    vocab_size = 256
    cache_folder = "text"
    val_splits = VAL_SPLITS

    def __init__(self, *, dataset_name: str = "imdb", max_len: int = 4000, val_split: str = "test", **base):
        super().__init__(dataset_name=dataset_name, val_split=val_split, **base)
        self.max_len = max_len

    def cache_key(self, source: tuple[str, dict]) -> list:
        return [source[1], TOKENIZER, self.strict]

    def build(self, source: tuple[str, dict], out: Path) -> dict:
        ds, where = self.load_dataset(source)
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
            save_ragged(out / f"{split}.npz", flat=flat, offsets=offsets, labels=labels)
            report[split] = {"examples": len(labels), "skipped": skipped}
        return {"source": where, "splits": report}

    def load(self, cache: Path) -> dict:
        train, test = (load_ragged_dataset(cache / f"{s}.npz", self.max_len) for s in ("train", "test"))
        if self.val_split == "test":
            return {"train": train, "val": test, "test": test}
        fit, val = self.held_out(len(train))
        return {"train": Subset(train, fit), "val": Subset(train, val), "test": test}
