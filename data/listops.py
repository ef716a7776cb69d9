"""ListOps: the LRA release's ``listops-1000/basic_*.tsv`` or the same distribution generated here."""

from __future__ import annotations

import array
import json
import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np

from data.base import LRADataModule
from data.cache import RaggedDataset, atomic_write_text, file_signature, fingerprint, load_ragged, save_ragged
from data.listops_generator import SPLIT_FILES, ListOpsSpec, generate_listops, read_spec

log = logging.getLogger(__name__)

PAD = "<pad>"
VOCAB = [PAD, "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "[MIN", "[MAX", "[MED", "[SM", "]"]
SOURCES = ("auto", "release", "generate")


class DataFormatError(ValueError):
    """A malformed input file; the message names the file and line."""


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


def read_listops_tsv(
    path: Path, vocab: dict[str, int], closing_brackets: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stream a TSV into (flat uint8 token ids, offsets, labels) without holding the text in memory."""
    flat = array.array("B")
    offsets = [0]
    labels = []
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        if header != ["Source", "Target"]:
            raise DataFormatError(f"{path}:1: expected header 'Source<TAB>Target', found {header!r}")
        for lineno, line in enumerate(f, start=2):
            line = line.rstrip("\r\n")
            if not line:
                continue
            cols = line.split("\t")
            if len(cols) != 2:
                raise DataFormatError(f"{path}:{lineno}: expected 2 tab-separated columns, found {len(cols)}")
            source, target = cols
            try:
                label = int(target)
            except ValueError:
                raise DataFormatError(f"{path}:{lineno}: target {target!r} is not an integer") from None
            if not 0 <= label <= 9:
                raise DataFormatError(f"{path}:{lineno}: target {label} is outside 0..9")
            try:
                ids = [vocab[t] for t in tokenize(source, closing_brackets)]
            except KeyError as e:
                raise DataFormatError(f"{path}:{lineno}: unknown ListOps token {e.args[0]!r}") from None
            flat.extend(ids)
            offsets.append(len(flat))
            labels.append(label)
    return (
        np.frombuffer(flat, dtype=np.uint8).copy(),
        np.asarray(offsets, np.int64),
        np.asarray(labels, np.int64),
    )


class ListOpsDataModule(LRADataModule):
    """ListOps with ``source``: ``release`` (read ``path``), ``generate`` (write the same format to
    ``generated_path`` with the LRA recipe, then read it) or ``auto`` (release if present, else generate)."""

    num_classes = 10

    def __init__(
        self,
        path: str,
        generated_path: str,
        cache_dir: str,
        source: str = "auto",
        max_len: int = 2000,
        generate: dict | None = None,
        workers: int | None = None,
        closing_brackets: bool = False,
        **loader,
    ):
        super().__init__(**loader)
        self.closing_brackets = bool(closing_brackets)
        if source not in SOURCES:
            raise ValueError(f"data.source={source!r} must be one of {'|'.join(SOURCES)}")
        self.path = Path(path)
        self.generated_path = Path(generated_path)
        self.cache_dir = Path(cache_dir)
        self.source = source
        self.max_len = max_len
        self.spec = ListOpsSpec(**(generate or {}))
        self.workers = workers
        self.vocab = {tok: i for i, tok in enumerate(VOCAB)}

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def _release_present(self) -> bool:
        return all((self.path / f).is_file() for f in SPLIT_FILES.values())

    def resolve_source_dir(self) -> Path:
        """Where the TSVs come from, generating them first if needed."""
        if self.source == "release" or (self.source == "auto" and self._release_present()):
            if not self._release_present():
                missing = [f for f in SPLIT_FILES.values() if not (self.path / f).is_file()]
                raise FileNotFoundError(
                    f"ListOps release files not found: {self.path}/{missing[0]} (data.path). Either download "
                    f"the LRA release and put listops-1000/ there (or set LRA_DATA to the release folder), "
                    f"or use data.source=generate to build the same distribution locally."
                )
            return self.path
        if read_spec(self.generated_path) != self.spec:
            log.info("generating ListOps into %s", self.generated_path)
            generate_listops(self.generated_path, self.spec, workers=self.workers)
        return self.generated_path

    def _cache_path(self, source_dir: Path) -> Path:
        sig = [file_signature(source_dir / f) for f in SPLIT_FILES.values()]
        tokens = "with closing brackets" if self.closing_brackets else "LRA tokens (no brackets)"
        return self.cache_dir / "listops" / fingerprint(str(source_dir.resolve()), sig, VOCAB, tokens)

    def prepare_data(self) -> None:
        source_dir = self.resolve_source_dir()
        cache = self._cache_path(source_dir)
        if all((cache / f"{s}.npz").exists() for s in SPLIT_FILES):
            return
        for split, fname in SPLIT_FILES.items():
            flat, offsets, labels = read_listops_tsv(source_dir / fname, self.vocab, self.closing_brackets)
            save_ragged(cache / f"{split}.npz", flat=flat, offsets=offsets, labels=labels)
        atomic_write_text(cache / "vocab.json", json.dumps(self.vocab, indent=1) + "\n")
        atomic_write_text(
            cache / "source.json",
            json.dumps(
                {
                    "source_dir": str(source_dir),
                    "generation": asdict(self.spec) if source_dir == self.generated_path else None,
                },
                indent=1,
            )
            + "\n",
        )

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        source_dir = self.resolve_source_dir()
        cache = self._cache_path(source_dir)
        if not (cache / "test.npz").exists():
            self.prepare_data()
        for split in SPLIT_FILES:
            z = load_ragged(cache / f"{split}.npz")
            self.splits[split] = RaggedDataset(z["flat"], z["offsets"], z["labels"], max_len=self.max_len)
