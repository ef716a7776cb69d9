"""ListOps: the LRA release's ``listops-1000/basic_*.tsv`` or the same distribution generated here."""

from __future__ import annotations

import array
import json
import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np

from data._generated import ReleaseOrGenerated
from data.cache import RaggedDataset, atomic_write_text, file_signature, load_ragged_dataset, save_ragged
from data.errors import DataFormatError, malformed_row
from data.listops_generator import SPLIT_FILES, ListOpsSpec, generate_listops

__all__ = ["DataFormatError", "ListOpsDataModule", "read_listops_tsv", "tokenize"]

log = logging.getLogger(__name__)

PAD = "<pad>"
VOCAB = [PAD, "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "[MIN", "[MAX", "[MED", "[SM", "]"]
HEADER = ["Source", "Target"]


def tokenize(source: str, closing_brackets: bool = False) -> list[str]:
    """Tokens of a release-format expression. The grouping parentheses are always dropped.

    ``closing_brackets=False`` is what the LRA release's own input pipeline feeds every published LRA
    model (the JAX LRA code and the Nyströmformer, Skyformer and xformers harnesses that reuse it): its
    tokenizer keeps only alphanumeric runs, so ``[MIN`` becomes ``MIN`` and every ``]`` disappears, and
    where an operator's arguments end is not in the input. ``True`` keeps ``]`` (as the S4 line of work
    does), which makes every expression unambiguous: a different, easier task than the published rows.
    """
    tokens = source.replace("(", " ").replace(")", " ").split()
    if closing_brackets:
        return tokens
    return [t for t in tokens if t != "]"]


def parse_row(line: str, vocab: dict[str, int], closing_brackets: bool = False) -> tuple[list[int], int]:
    """(token ids, label) of one ``expression<TAB>answer`` row; ValueError saying what is wrong."""
    cols = line.split("\t")
    if len(cols) != 2:
        raise ValueError(f"expected 2 tab-separated columns, found {len(cols)}")
    source, target = cols
    try:
        label = int(target)
    except ValueError:
        raise ValueError(f"target {target!r} is not an integer") from None
    if not 0 <= label <= 9:
        raise ValueError(f"target {label} is outside 0..9")
    tokens = tokenize(source, closing_brackets)
    if not tokens:
        raise ValueError("empty expression")
    try:
        return [vocab[t] for t in tokens], label
    except KeyError as e:
        raise ValueError(f"unknown ListOps token {e.args[0]!r}") from None


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError as e:
        raise ValueError(f"not UTF-8 text (byte {raw[e.start]:#04x} at column {e.start + 1})") from None


def _check_header(path: Path, first: bytes) -> None:
    try:
        header = _decode(first).removeprefix("\ufeff").split("\t")  # a UTF-8 BOM is harmless
    except ValueError as exc:
        raise DataFormatError(f"{path}:1: {exc}") from None
    if header != HEADER:
        raise DataFormatError(f"{path}:1: expected header 'Source<TAB>Target', found {header!r}")


def read_listops_tsv(
    path: Path, vocab: dict[str, int], strict: bool = True, closing_brackets: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Stream a TSV into (flat uint8 token ids, offsets, labels, rows skipped) without holding the
    text in memory. A malformed row is an error naming the file and line, or with ``strict=False``
    is skipped and counted."""
    flat = array.array("B")
    offsets = [0]
    labels = []
    skipped = 0
    with open(path, "rb") as f:
        _check_header(path, f.readline())
        for lineno, raw in enumerate(f, start=2):
            try:
                line = _decode(raw)
                if not line:
                    continue
                ids, label = parse_row(line, vocab, closing_brackets)
            except ValueError as exc:
                malformed_row(f"{path}:{lineno}", exc, strict)
                skipped += 1
                continue
            flat.extend(ids)
            offsets.append(len(flat))
            labels.append(label)
    return (
        np.frombuffer(flat, dtype=np.uint8).copy(),
        np.asarray(offsets, np.int64),
        np.asarray(labels, np.int64),
        skipped,
    )


class ListOpsDataModule(ReleaseOrGenerated):
    """ListOps with ``source``: ``release`` (read ``path``), ``generate`` (write the same format to
    ``generated_path`` with the LRA recipe, then read it) or ``auto`` (the release when its files are
    there, generated data when none is; a release with some files missing is an error, never a
    silent switch to generated data)."""

    num_classes = 10
    truncation_changes_answer = True  # a cut expression keeps the label of the whole one
    cache_folder = "listops"
    release_files = tuple(SPLIT_FILES.values())
    spec_type = ListOpsSpec
    title = "ListOps"

    def __init__(
        self,
        *,
        max_len: int = 2000,
        generate: dict | None = None,
        allow_truncation: bool = False,
        closing_brackets: bool = False,
        **base,
    ):
        super().__init__(spec=ListOpsSpec(**(generate or {})), **base)
        if self.source != "release":
            self.spec.check(prefix="data.generate.")
        self.closing_brackets = bool(closing_brackets)
        self.max_len = max_len
        self.allow_truncation = allow_truncation
        self.vocab = {tok: i for i, tok in enumerate(VOCAB)}

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def missing_release_message(self, missing: list[str]) -> str:
        what = "is incomplete, missing" if len(missing) < len(SPLIT_FILES) else "was not found:"
        return (
            f"ListOps release {what} {', '.join(str(self.path / f) for f in missing)} (data.path). "
            f"Either download the LRA release and put listops-1000/ there (or set LRA_DATA to the "
            f"release folder), or use data.source=generate to build the same distribution locally."
        )

    def generate(self, out_dir: Path) -> None:
        generate_listops(out_dir, self.spec, workers=self.workers, prefix="data.generate.")

    def _tokens(self) -> str:
        return "with closing brackets" if self.closing_brackets else "LRA tokens (no brackets)"

    def cache_key(self, source_dir: Path) -> list:
        sig = [file_signature(source_dir / f) for f in SPLIT_FILES.values()]
        lenient = ["strict=false"] if not self.strict else []  # skipped rows make a different cache
        return [str(source_dir.resolve()), sig, VOCAB, self._tokens(), *lenient]

    def build(self, source_dir: Path, out: Path) -> dict:
        skipped = {}
        for split, fname in SPLIT_FILES.items():
            flat, offsets, labels, skipped[split] = read_listops_tsv(
                source_dir / fname, self.vocab, self.strict, self.closing_brackets
            )
            if skipped[split]:
                log.warning("listops: skipped %d malformed rows of %s", skipped[split], source_dir / fname)
            save_ragged(out / f"{split}.npz", flat=flat, offsets=offsets, labels=labels)
        atomic_write_text(out / "vocab.json", json.dumps(self.vocab, indent=1) + "\n")
        generated = source_dir == self.generated_path
        info = {"source_dir": str(source_dir), "generation": asdict(self.spec) if generated else None}
        return {**info, "skipped": skipped}

    def load(self, cache: Path) -> dict[str, RaggedDataset]:
        return {split: load_ragged_dataset(cache / f"{split}.npz", self.max_len) for split in SPLIT_FILES}

    def source_info(self) -> dict:
        tokens = "with closing brackets" if self.closing_brackets else "LRA (no brackets)"
        return {**super().source_info(), "tokens": tokens}
