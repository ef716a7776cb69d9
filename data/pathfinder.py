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
import os
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from data._arrays import ArrayDataset, ArrayWriter, load_arrays, split_indices
from data._generated import ReleaseOrGenerated
from data.cache import file_signature, tree_signature
from data.errors import DataFormatError, malformed_row
from data.pathfinder_generator import DIFFICULTIES, PathfinderSpec, generate_pathfinder, spec_for

log = logging.getLogger(__name__)

SPLIT_FRACTIONS = (0.8, 0.1, 0.1)
DECODER = "PIL-L/v1"
RELEASE_URL = "https://storage.googleapis.com/long-range-arena/lra_release.gz"
DECODE_CHUNK = 512


def _batch_key(path: Path):
    return (0, int(path.stem), "") if path.stem.isdigit() else (1, 0, path.stem)


def read_metadata(root: Path, strict: bool = True) -> tuple[list[tuple[str, int, str]], int]:
    """All (png path, label, "metadata file:line") entries under ``root``, in batch order; returns
    (entries, malformed rows skipped). A row whose image lies outside ``root`` (``..``, an absolute
    path, a symbolic link out of it) is malformed."""
    entries, skipped = [], 0
    inside = Path(os.path.realpath(root))
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
                    # The rows name files relative to data.path: "..", an absolute path or a link
                    # out of it would read an image from anywhere on the machine.
                    target = Path(os.path.realpath(root / fields[0] / fields[1]))
                    if not target.is_relative_to(inside):
                        raise ValueError(f"image {fields[0]}/{fields[1]} is outside {root} (data.path)")
                except ValueError as exc:
                    malformed_row(f"{meta}:{lineno}", exc, strict)
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
    root: Path, out: Path, side: int, strict: bool = True, workers: int | None = None, progress: bool = True
) -> dict:
    """Decode every image listed under ``root`` into the folder ``out``; returns the counts."""
    entries, malformed = read_metadata(root, strict)
    if not entries:
        raise DataFormatError(f"{root}/metadata: no image rows found")
    workers = workers if workers is not None else mp.cpu_count()
    jobs = [(entries[a : a + DECODE_CHUNK], side) for a in range(0, len(entries), DECODE_CHUNK)]
    counts = {"listed": len(entries), "malformed_rows": malformed, "empty": 0, "unreadable": 0}
    writer = ArrayWriter(out, len(entries), side * side)
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


class PathfinderDataModule(ReleaseOrGenerated):
    """Pathfinder / Path-X with ``source``: ``release`` (read ``path``), ``generate`` (write the same
    layout to ``generated_path`` first) or ``auto`` (release if present, else generate)."""

    num_classes = 2
    vocab_size = 256
    release_files = ("metadata",)
    spec_type = PathfinderSpec
    title = "Pathfinder"

    def __init__(
        self,
        *,
        source: str = "release",
        resolution: int = 32,
        difficulty: str = "curv_contour_length_14",
        max_len: int | None = None,
        split_seed: int = 0,
        generate: dict | None = None,
        **base,
    ):
        if difficulty not in DIFFICULTIES:
            raise ValueError(f"data.difficulty={difficulty!r} must be one of {'|'.join(DIFFICULTIES)}")
        if max_len is not None and max_len < resolution * resolution:
            raise ValueError(
                f"model.max_len={max_len} is shorter than one {resolution}x{resolution} image "
                f"({resolution * resolution} pixels)"
            )
        spec = spec_for(resolution, difficulty, **(generate or {}))
        super().__init__(source=source, spec=spec, **base)
        self.resolution = resolution
        self.difficulty = difficulty
        self.split_seed = split_seed

    @property
    def cache_folder(self) -> str:
        return f"pathfinder{self.resolution}"

    def missing_release_message(self, missing: list[str]) -> str:
        folder = f"pathfinder{self.resolution}/{self.difficulty}"
        return (
            f"Pathfinder release not found: {self.path / 'metadata'} (data.path). Either download the "
            f"LRA release ({RELEASE_URL}), unpack it and set data_dir (or LRA_DATA) to the folder that "
            f"holds {folder}/, or use data.source=generate to draw the same task here "
            f"(into {self.generated_path})."
        )

    def generate(self, out_dir: Path) -> None:
        generate_pathfinder(out_dir, self.spec, workers=self.workers)

    def cache_key(self, root: Path) -> list:
        metas = sorted((root / "metadata").glob("*.npy"), key=_batch_key)
        sig = [file_signature(m) for m in metas]
        images = tree_signature(root / "imgs")  # decoding depends on the images too, not only the lists
        return [str(root.resolve()), sig, images, self.resolution, DECODER, self.strict]

    def build(self, root: Path, out: Path) -> dict:
        counts = build_cache(root, out, self.resolution, self.strict, self.workers)
        if counts["empty"] or counts["unreadable"] or counts["malformed_rows"]:
            log.warning("pathfinder: %s", counts)
        return {"source_dir": str(root), "counts": counts}

    def load(self, cache: Path) -> dict[str, ArrayDataset]:
        images, labels, meta = load_arrays(cache)
        parts = split_indices(len(labels), SPLIT_FRACTIONS, self.split_seed)
        return {
            name: ArrayDataset(images, labels, indices=idx, content=meta["content"])
            for name, idx in zip(("train", "val", "test"), parts, strict=True)
        }
