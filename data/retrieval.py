"""Retrieval (LRA): do two ACL Anthology (AAN) papers cite each other? Two byte-level documents.

Reads the release's ``tsv_data/new_aan_pairs.{train,eval,test}.tsv``: no header, tab-separated
``label id1 id2 text1 text2``, the label a float (0.0 / 1.0). Texts contain unbalanced quotes, so rows
are split on tabs only, never with a CSV reader's quote handling (which would merge rows). Lines are
read as bytes and the bytes are the tokens (id = byte value, uint8). Each document is truncated to
``max_len`` when cached: the files are large and only what the model can see is kept. The model encodes both documents with one
shared encoder and classifies ``[u, v, u*v, u-v]``: ``model.two_towers=true`` in the task config.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from data.base import LRADataModule
from data.cache import file_signature, load_ragged_dataset, save_ragged
from data.errors import malformed_row

log = logging.getLogger(__name__)

SPLIT_FILES = {
    "train": "new_aan_pairs.train.tsv",
    "val": "new_aan_pairs.eval.tsv",
    "test": "new_aan_pairs.test.tsv",
}
# Part of the cache key; v2 caches also record which pairs were truncated.
TOKENIZER = "utf8-bytes/v2"
RELEASE_URL = "https://storage.googleapis.com/long-range-arena/lra_release.gz"


def parse_label(field: bytes) -> int:
    value = float(field)  # ValueError for anything that is not a number
    if value not in (0.0, 1.0):
        raise ValueError(f"label {value} is not 0 or 1")
    return int(value)


def read_aan_tsv(path: Path, max_len: int | None, strict: bool = True) -> tuple[dict[str, np.ndarray], int]:
    """Stream one AAN TSV into flat byte-token arrays for both documents; returns (arrays, skipped)."""
    docs: tuple[bytearray, bytearray] = (bytearray(), bytearray())
    offsets: tuple[list[int], list[int]] = ([0], [0])
    labels: list[int] = []
    truncated: list[bool] = []
    skipped = 0
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, start=1):
            line = line.rstrip(b"\r\n")
            if not line:
                continue
            cols = line.split(b"\t")
            try:
                if len(cols) != 5:
                    raise ValueError(
                        f"expected 5 tab-separated columns (label id1 id2 text1 text2), found {len(cols)}"
                    )
                label = parse_label(cols[0])
            except ValueError as exc:
                malformed_row(f"{path}:{lineno}", exc, strict)
                skipped += 1
                continue
            for doc, offs, text in zip(docs, offsets, cols[3:], strict=True):
                doc += text[:max_len] if max_len else text
                offs.append(len(doc))
            labels.append(label)
            truncated.append(bool(max_len) and max(len(cols[3]), len(cols[4])) > max_len)
    arrays = {"labels": np.asarray(labels, dtype=np.int64), "truncated": np.asarray(truncated, dtype=bool)}
    for k, (doc, offs) in enumerate(zip(docs, offsets, strict=True), start=1):
        arrays[f"flat{k}"] = np.frombuffer(bytes(doc), dtype=np.uint8).copy()
        arrays[f"offsets{k}"] = np.asarray(offs, dtype=np.int64)
    return arrays, skipped


class RetrievalDataModule(LRADataModule):
    """AAN pairs from the release folder ``path`` (``<data_dir>/tsv_data``)."""

    num_classes = 2
    vocab_size = 256
    cache_folder = "retrieval"

    def __init__(self, *, max_len: int = 4000, **base):
        super().__init__(**base)
        self.max_len = max_len

    def resolve_source(self) -> Path:
        for fname in SPLIT_FILES.values():
            if not (self.path / fname).is_file():
                raise FileNotFoundError(
                    f"AAN retrieval file not found: {self.path / fname} (data.path). Download the LRA release "
                    f"({RELEASE_URL}), unpack it and set data_dir (or LRA_DATA) to the folder that holds "
                    f"tsv_data/, or point data.path at the tsv_data folder itself."
                )
        return self.path

    def cache_key(self, source: Path) -> list:
        sig = [file_signature(source / f) for f in SPLIT_FILES.values()]
        return [str(source.resolve()), sig, TOKENIZER, self.max_len, self.strict]

    def build(self, source: Path, out: Path) -> dict:
        report = {}
        for split, fname in SPLIT_FILES.items():
            arrays, skipped = read_aan_tsv(source / fname, self.max_len, self.strict)
            if skipped:
                log.warning("retrieval: skipped %d malformed rows of %s", skipped, source / fname)
            save_ragged(
                out / f"{split}.npz",
                flat=arrays["flat1"],
                offsets=arrays["offsets1"],
                labels=arrays["labels"],
                flat2=arrays["flat2"],
                offsets2=arrays["offsets2"],
                truncated=arrays["truncated"],
            )
            report[split] = {"file": fname, "examples": len(arrays["labels"]), "skipped": skipped}
        return {"path": str(source), "splits": report}

    def load(self, cache: Path) -> dict:
        return {split: load_ragged_dataset(cache / f"{split}.npz", self.max_len) for split in SPLIT_FILES}

    def source_info(self) -> dict:
        return {"source": "release", "path": str(self.path), "generator": None}
