"""Pathfinder (32x32, 1024 pixels) and Path-X (128x128, 16384 pixels): are the two markers connected?

Reads the LRA release layout, ``<difficulty>/imgs/<batch>/sample_<i>.png`` with
``<difficulty>/metadata/<batch>.npy`` (plain text despite the name: one whitespace-separated row per
image, field 0 the subfolder, 1 the file name, 3 the label). The generator in
``data/pathfinder_generator.py`` writes the same layout. PNGs are decoded once, in parallel, into a
``(N, pixels)`` uint8 cache read memory-mapped; splits are 80/10/10 of a permutation seeded by
``split_seed``. Empty PNGs (the release has one) are skipped and counted. The cache key covers
the metadata files and the name, size and mtime of every image, so fixing or replacing an image
rebuilds the cache.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from data._arrays import ArrayDataset, ArrayWriter, load_arrays, split_indices
from data.base import LRADataModule
from data.cache import AtomicDirectory, file_signature, fingerprint, generation_lock, tree_signature
from data.pathfinder_generator import DIFFICULTIES, generate_pathfinder, read_spec, spec_for
from lra.errors import DataFormatError

log = logging.getLogger(__name__)

SOURCES = ("auto", "release", "generate")
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
DECODER = "PIL-L/v1"
RELEASE_URL = "https://storage.googleapis.com/long-range-arena/lra_release.gz"
DECODE_CHUNK = 512


def _batch_key(path: Path):
    return (0, int(path.stem), "") if path.stem.isdigit() else (1, 0, path.stem)


def read_metadata(root: Path, strict: bool = True) -> tuple[list[tuple[str, int, str]], int]:
    """All (png path, label, "metadata file:line") entries under ``root``, in batch order; returns
    (entries, malformed rows skipped)."""
    entries, skipped = [], 0
    meta_files = sorted((root / "metadata").glob("*.npy"), key=_batch_key)
    for meta in meta_files:
        with open(meta, encoding="utf-8", errors="replace") as f:
            for lineno, line in enumerate(f, start=1):
                fields = line.split()
                if not fields:
                    continue
                try:
                    if len(fields) < 4:
                        raise ValueError(
                            f"expected at least 4 fields (subfolder file _ label), found {len(fields)}"
                        )
                    label = int(fields[3])
                    if label not in (0, 1):
                        raise ValueError(f"label {label} is not 0 or 1")
                except ValueError as exc:
                    if strict:
                        raise DataFormatError(
                            f"{meta}:{lineno}: {exc} (data.strict=false skips such rows)"
                        ) from None
                    skipped += 1
                    continue
                entries.append((str(root / fields[0] / fields[1]), label, f"{meta}:{lineno}"))
    return entries, skipped


def decode_png(path: str, side: int) -> np.ndarray | None:
    """(side*side,) uint8 grey levels; None for an empty file; ValueError/OSError if unreadable."""
    from PIL import Image

    if Path(path).stat().st_size == 0:
        return None
    with Image.open(path) as img:
        gray = np.asarray(img.convert("L"), dtype=np.uint8)
    if gray.shape != (side, side):
        raise ValueError(f"image is {gray.shape[1]}x{gray.shape[0]}, expected {side}x{side}")
    return gray.reshape(-1)


def _decode_chunk(args: tuple[list[tuple[str, int, str]], int]):
    """Decode a chunk; returns (pixels, labels, empties, [(png, where, error)])."""
    entries, side = args
    pixels, labels, empty, errors = [], [], 0, []
    for png, label, where in entries:
        try:
            row = decode_png(png, side)
        except (OSError, ValueError) as exc:  # OSError: missing file or bytes PIL cannot decode
            errors.append((png, where, f"{type(exc).__name__}: {exc}"))
            continue
        if row is None:
            empty += 1
            continue
        pixels.append(row)
        labels.append(label)
    rows = np.stack(pixels) if pixels else np.zeros((0, side * side), np.uint8)
    return rows, np.asarray(labels, np.int64), empty, errors


def build_cache(
    root: Path, cache: Path, side: int, strict: bool = True, workers: int | None = None, progress: bool = True
) -> dict:
    """Decode every image listed under ``root`` into ``cache`` (atomically); returns the counts."""
    entries, malformed = read_metadata(root, strict)
    if not entries:
        raise DataFormatError(f"{root}/metadata: no image rows found")
    workers = workers if workers is not None else mp.cpu_count()
    jobs = [(entries[a : a + DECODE_CHUNK], side) for a in range(0, len(entries), DECODE_CHUNK)]
    counts = {"listed": len(entries), "malformed_rows": malformed, "empty": 0, "unreadable": 0}
    with AtomicDirectory(cache) as tmp:
        writer = ArrayWriter(tmp, len(entries), side * side)
        bar = tqdm(total=len(entries), desc=f"decoding {root.name}", unit="img", disable=not progress)
        pool = mp.get_context("fork").Pool(workers) if workers > 1 and len(jobs) > 1 else None
        try:
            results = pool.imap(_decode_chunk, jobs) if pool else map(_decode_chunk, jobs)
            for rows, labels, empty, errors in results:  # ordered, so the cache is deterministic
                if errors and strict:
                    png, where, msg = errors[0]
                    raise DataFormatError(
                        f"{png} (listed at {where}): cannot decode: {msg} (data.strict=false skips it)"
                    )
                for png, where, msg in errors:
                    log.warning("skipping %s (listed at %s): %s", png, where, msg)
                writer.append(rows, labels)
                counts["empty"] += empty
                counts["unreadable"] += len(errors)
                bar.update(len(rows) + empty + len(errors))
        finally:
            bar.close()
            if pool is not None:
                pool.terminate()
        if writer.n == 0:
            raise DataFormatError(
                f"{root}: none of the {len(entries)} listed images could be used ({counts['empty']} empty, "
                f"{counts['unreadable']} unreadable); check the imgs/ folder"
            )
        writer.close(source=str(root), side=side, decoder=DECODER, counts=counts)
    return counts


class PathfinderDataModule(LRADataModule):
    """Pathfinder / Path-X with ``source``: ``release`` (read ``path``), ``generate`` (write the same
    layout to ``generated_path`` first) or ``auto`` (release if present, else generate)."""

    num_classes = 2
    vocab_size = 256

    def __init__(
        self,
        path: str,
        generated_path: str,
        cache_dir: str,
        source: str = "release",
        resolution: int = 32,
        difficulty: str = "curv_contour_length_14",
        max_len: int | None = None,
        strict: bool = True,
        split_seed: int = 0,
        workers: int | None = None,
        generate: dict | None = None,
        **loader,
    ):
        super().__init__(**loader)
        if source not in SOURCES:
            raise ValueError(f"data.source={source!r} must be one of {'|'.join(SOURCES)}")
        if difficulty not in DIFFICULTIES:
            raise ValueError(f"data.difficulty={difficulty!r} must be one of {'|'.join(DIFFICULTIES)}")
        if max_len is not None and max_len < resolution * resolution:
            raise ValueError(
                f"model.max_len={max_len} is shorter than one {resolution}x{resolution} image "
                f"({resolution * resolution} pixels)"
            )
        self.path = Path(path)
        self.generated_path = Path(generated_path)
        self.cache_dir = Path(cache_dir)
        self.source = source
        self.resolution = resolution
        self.difficulty = difficulty
        self.strict = strict
        self.split_seed = split_seed
        self.workers = workers
        self.spec = spec_for(resolution, difficulty, **(generate or {}))
        self._source_dir: Path | None = None

    def _release_present(self) -> bool:
        return (self.path / "metadata").is_dir()

    def uses_release(self) -> bool:
        if self.source == "release" or (self.source == "auto" and self._release_present()):
            if not self._release_present():
                folder = f"pathfinder{self.resolution}/{self.difficulty}"
                raise FileNotFoundError(
                    f"Pathfinder release not found: {self.path / 'metadata'} (data.path). Either download the "
                    f"LRA release ({RELEASE_URL}), unpack it and set data_dir (or LRA_DATA) to the folder that "
                    f"holds {folder}/, or use data.source=generate to draw the same task here "
                    f"(into {self.generated_path})."
                )
            return True
        return False

    def _lock(self):
        # Generated images are locked where they are written: runs with different cache_dirs share them.
        return nullcontext() if self.uses_release() else generation_lock(self.generated_path)

    def resolve_source_dir(self) -> Path:
        """Where the images come from, generating them first if needed (call under :meth:`_lock`)."""
        if self.uses_release():
            return self.path
        if read_spec(self.generated_path) != self.spec:
            log.info("generating Pathfinder into %s", self.generated_path)
            generate_pathfinder(self.generated_path, self.spec, workers=self.workers)
        return self.generated_path

    def _cache_path(self, root: Path) -> Path:
        metas = sorted((root / "metadata").glob("*.npy"), key=_batch_key)
        sig = [file_signature(m) for m in metas]
        images = tree_signature(root / "imgs")  # decoding depends on the images too, not only the lists
        key = fingerprint(str(root.resolve()), sig, images, self.resolution, DECODER, self.strict)
        return self.cache_dir / f"pathfinder{self.resolution}" / key

    def prepare_data(self) -> None:
        with self._lock():
            self._build(self.resolve_source_dir())

    def _build(self, root: Path) -> Path:
        cache = self._cache_path(root)
        if not (cache / "meta.json").exists():
            counts = build_cache(root, cache, self.resolution, self.strict, self.workers)
            if counts["empty"] or counts["unreadable"] or counts["malformed_rows"]:
                log.warning("pathfinder: %s", counts)
        return cache

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        with self._lock():
            root = self.resolve_source_dir()
            cache = self._build(root)
        self._source_dir = root
        images, labels, meta = load_arrays(cache)
        for name, idx in zip(
            ("train", "val", "test"),
            split_indices(len(labels), SPLIT_FRACTIONS, self.split_seed),
            strict=True,
        ):
            self.splits[name] = ArrayDataset(images, labels, idx, content=meta["content"])

    def source_info(self) -> dict:
        generated = self._source_dir is not None and self._source_dir == self.generated_path
        return {
            "source": None if self._source_dir is None else ("generate" if generated else "release"),
            "path": None if self._source_dir is None else str(self._source_dir),
            "generator": asdict(self.spec) if generated else None,
        }
