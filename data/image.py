"""Image (LRA): CIFAR-10 in grayscale as a sequence of 1024 pixels, 10 classes.

Each pixel is one token (its grey level 0..255, vocabulary 256) or, with
``model.embedding=pixel_linear``, a value fed to a linear encoder; the data is the same either way.
Grayscale is PIL's ``L`` conversion (ITU-R 601-2 luma, as ``tf.image.rgb_to_grayscale`` in LRA).
Splits: 45k train / 5k validation / 10k test. ``val_split=last`` takes the last 10% of the training
set as LRA's ``train[90%:]`` does; ``val_split=random`` draws it with ``split_seed`` instead.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from data._arrays import ArrayDataset, ArrayWriter, load_arrays
from data._hf import HFDataModule
from data.errors import DataFormatError, malformed_row

log = logging.getLogger(__name__)

SIDE = 32
DECODER = "PIL-L/v1"  # part of the cache key: change it when to_gray() changes
IMAGE_COLUMNS = ("img", "image")
VAL_SPLITS = ("last", "random")


def to_gray(img) -> np.ndarray:
    """A PIL image (or HF's decoded dict / array) -> (SIDE*SIDE,) uint8 grey levels."""
    from PIL import Image

    if isinstance(img, dict):  # undecoded HF image: {"bytes": ..., "path": ...}
        import io

        img = Image.open(io.BytesIO(img["bytes"])) if img.get("bytes") else Image.open(img["path"])
    if isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    gray = np.asarray(img.convert("L"), dtype=np.uint8)
    if gray.shape != (SIDE, SIDE):
        raise ValueError(f"image is {gray.shape[1]}x{gray.shape[0]}, expected {SIDE}x{SIDE}")
    return gray.reshape(-1)


class ImageDataModule(HFDataModule):
    """CIFAR-10 from a local copy at ``path`` (save_to_disk folder or parquet) or the HF Hub."""

    num_classes = 10
    vocab_size = 256
    cache_folder = "image"
    val_splits = VAL_SPLITS

    def __init__(
        self, *, dataset_name: str = "cifar10", max_len: int = SIDE * SIDE, val_split: str = "last", **base
    ):
        if max_len < SIDE * SIDE:
            raise ValueError(f"model.max_len={max_len} is shorter than one image ({SIDE * SIDE} pixels)")
        super().__init__(dataset_name=dataset_name, val_split=val_split, **base)

    def cache_key(self, source: tuple[str, dict]) -> list:
        return [source[1], DECODER, self.strict]

    def build(self, source: tuple[str, dict], out: Path) -> dict:
        ds, where = self.load_dataset(source)
        counts, skipped = {}, {}
        writer = ArrayWriter(out, len(ds["train"]) + len(ds["test"]), SIDE * SIDE)
        for split in ("train", "test"):  # train rows first, then test rows
            before = writer.n
            skipped[split] = self._decode_split(ds[split], f"{where} [{split}]", writer)
            counts[split] = writer.n - before
        writer.close(source=where, counts=counts, skipped=skipped, decoder=DECODER)
        if any(skipped.values()):
            log.warning("image: skipped unreadable examples %s", skipped)
        return {"source": where, "counts": counts, "skipped": skipped}

    def _decode_split(self, split, where: str, writer: ArrayWriter) -> int:
        column = next((c for c in IMAGE_COLUMNS if c in split.column_names), None)
        if column is None or "label" not in split.column_names:
            raise DataFormatError(
                f"{where}: expected columns img|image and label, found {split.column_names}"
            )
        skipped, row = 0, 0
        for batch in split.iter(batch_size=1000):
            pixels, labels = [], []
            for img, label in zip(batch[column], batch["label"], strict=True):
                try:
                    if not isinstance(label, (int, np.integer)) or not 0 <= label < self.num_classes:
                        raise ValueError(f"label {label!r} is not a class in 0..{self.num_classes - 1}")
                    pixels.append(to_gray(img))
                    labels.append(int(label))
                except (ValueError, OSError) as exc:  # OSError: PIL cannot decode the bytes
                    malformed_row(f"{where} row {row}", exc, self.strict)
                    skipped += 1
                row += 1
            if pixels:
                writer.append(np.stack(pixels), np.asarray(labels))
        return skipped

    def load(self, cache: Path) -> dict[str, ArrayDataset]:
        images, labels, meta = load_arrays(cache)
        n_train = meta["counts"]["train"]
        n_val = int(round(self.val_fraction * n_train))
        if self.val_split == "last":
            fit, val = np.arange(n_train - n_val), np.arange(n_train - n_val, n_train)
        else:
            fit, val = self.held_out(n_train)
        test = np.arange(n_train, len(labels))
        return {
            name: ArrayDataset(images, labels, indices=idx, content=meta["content"])
            for name, idx in (("train", fit), ("val", val), ("test", test))
        }
