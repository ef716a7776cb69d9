"""Image (LRA): CIFAR-10 in grayscale as a sequence of 1024 pixels, 10 classes.

Each pixel is one token (its grey level 0..255, vocabulary 256) or, with
``model.embedding=pixel_linear``, a value fed to a linear encoder; the data is the same either way.
Splits: 45k train / 5k validation / 10k test. ``val_split=last`` takes the last 10% of the training
set as LRA's ``train[90%:]`` does; ``val_split=random`` draws it with ``split_seed`` instead.

Two settings choose between this harness's pipeline (the defaults) and the LRA release's:

- ``grey``: ``pil`` (default) is PIL's ``L`` conversion, ITU-R 601-2 luma rounded to the nearest level;
  ``tensorflow`` is ``tf.image.rgb_to_grayscale`` on uint8 images as LRA's input pipeline applies it
  (:func:`tf_grey`, in numpy: TensorFlow is not needed). The two give different levels for 26.3% of
  all RGB colours, TensorFlow's always one lower (``tests/data/test_image.py``). Each has its own cache.
- ``mask_black_pixels``: ``false`` (default): every pixel is real, the mask is all True. ``true``: black
  (level 0) pixels are padding, as LRA's models build the mask from the tokens (``inputs > 0``).
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

import numpy as np
import torch

from data._arrays import ArrayDataset, ArrayWriter, load_arrays
from data._hf import HFDataModule
from data.errors import ConfigError, DataFormatError, malformed_row

log = logging.getLogger(__name__)

SIDE = 32
# data.grey -> the decoder's name, part of the cache key: change it when that conversion changes.
# (``pil`` keeps the name it had before ``data.grey`` existed, so its caches are still used.)
DECODERS = {"pil": "PIL-L/v1", "tensorflow": "TF-rgb_to_grayscale/v1"}
GREYS = tuple(DECODERS)
IMAGE_COLUMNS = ("img", "image")
VAL_SPLITS = ("last", "random")

# tf.image.rgb_to_grayscale on a uint8 image, as LRA's input pipeline applies it to CIFAR-10
# (lra_benchmarks/image/input_pipeline.py: tf.cast(tf.image.rgb_to_grayscale(x['image']), tf.int32)).
# TensorFlow's tensorflow/python/ops/image_ops_impl.py computes, all in float32:
#   1. convert_image_dtype(uint8 -> float32): cast, then multiply by the constant 1/255 (1. / dtype.max,
#      rounded to float32; a multiplication, not a division by 255);
#   2. tensordot with rgb_weights = [0.2989, 0.5870, 0.1140] over the channel axis (R, G, B);
#   3. convert_image_dtype(float32 -> uint8): multiply by 255.5 (dtype.max + 0.5), then cast, which
#      truncates toward zero. saturate is False there, but the weights sum to 0.9999, so the product
#      is at most 255.47 and never leaves 0..255.
TF_WEIGHTS = np.array([0.2989, 0.5870, 0.1140], dtype=np.float32)
TF_TO_FLOAT = np.float32(1.0 / 255)
TF_TO_UINT8 = np.float32(255 + 0.5)


def tf_grey(rgb: np.ndarray) -> np.ndarray:
    """``tf.image.rgb_to_grayscale`` of uint8 RGB pixels ``(..., 3)`` -> uint8 levels ``(...)``, in numpy
    float32 (the formula and its source are in the comment above). Checked against a per-pixel
    reference written out in ``tests/data/test_image.py``; the weighted sum is taken in the order
    (R + G) + B, one rounding per operation."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.shape[-1:] != (3,):
        raise ValueError(f"expected uint8 RGB pixels (..., 3), got {rgb.dtype} {rgb.shape}")
    x = rgb.astype(np.float32) * TF_TO_FLOAT
    grey = x[..., 0] * TF_WEIGHTS[0] + x[..., 1] * TF_WEIGHTS[1]
    grey += x[..., 2] * TF_WEIGHTS[2]
    return (grey * TF_TO_UINT8).astype(np.uint8)  # float -> uint8 truncates toward zero


def to_gray(img, grey: str = "pil") -> np.ndarray:
    """A PIL image (or HF's decoded dict / array) -> (SIDE*SIDE,) uint8 grey levels, converted by
    PIL's ``L`` (``grey="pil"``) or as TensorFlow's ``rgb_to_grayscale`` (``grey="tensorflow"``, of
    the image in RGB: PIL converts other modes to RGB first)."""
    from PIL import Image

    if isinstance(img, dict):  # undecoded HF image: {"bytes": ..., "path": ...}
        import io

        img = Image.open(io.BytesIO(img["bytes"])) if img.get("bytes") else Image.open(img["path"])
    if isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    if img.size != (SIDE, SIDE):
        raise ValueError(f"image is {img.size[0]}x{img.size[1]}, expected {SIDE}x{SIDE}")
    if grey == "tensorflow":
        gray = tf_grey(np.asarray(img.convert("RGB"), dtype=np.uint8))
    elif grey == "pil":
        gray = np.asarray(img.convert("L"), dtype=np.uint8)
    else:
        raise ValueError(f"data.grey={grey!r} must be one of {'|'.join(GREYS)}")
    return gray.reshape(-1)


def black_is_padding(collate, batch) -> dict[str, torch.Tensor]:
    """``collate(batch)`` with black (level 0) pixels marked as padding in the mask, as LRA's models
    build theirs from the tokens (``inputs > 0``); the lengths' padding stays padding."""
    out = collate(batch)
    out["mask"] = out["mask"] & (out["input_ids"] != 0)
    return out


class ImageDataModule(HFDataModule):
    """CIFAR-10 from a local copy at ``path`` (save_to_disk folder or parquet) or the HF Hub."""

    num_classes = 10
    vocab_size = 256
    cache_folder = "image"
    val_splits = VAL_SPLITS

    def __init__(
        self,
        *,
        dataset_name: str = "cifar10",
        max_len: int = SIDE * SIDE,
        val_split: str = "last",
        grey: str = "pil",
        mask_black_pixels: bool = False,
        **base,
    ):
        if max_len < SIDE * SIDE:
            raise ValueError(f"model.max_len={max_len} is shorter than one image ({SIDE * SIDE} pixels)")
        if grey not in GREYS:
            raise ConfigError(f"data.grey={grey!r} must be one of {'|'.join(GREYS)}")
        if not isinstance(mask_black_pixels, bool):
            raise ConfigError(f"data.mask_black_pixels={mask_black_pixels!r} must be true or false")
        super().__init__(dataset_name=dataset_name, val_split=val_split, **base)
        self.grey = grey
        self.mask_black_pixels = mask_black_pixels

    def cache_key(self, source: tuple[str, dict]) -> list:
        # mask_black_pixels is not here: the mask is made per batch, from the same cached levels.
        return [source[1], DECODERS[self.grey], self.strict]

    def _collate(self):
        collate = super()._collate()
        return partial(black_is_padding, collate) if self.mask_black_pixels else collate

    def build(self, source: tuple[str, dict], out: Path) -> dict:
        ds, where = self.load_dataset(source)
        counts, skipped = {}, {}
        writer = ArrayWriter(out, len(ds["train"]) + len(ds["test"]), SIDE * SIDE)
        for split in ("train", "test"):  # train rows first, then test rows
            before = writer.n
            skipped[split] = self._decode_split(ds[split], f"{where} [{split}]", writer)
            counts[split] = writer.n - before
        writer.close(source=where, counts=counts, skipped=skipped, decoder=DECODERS[self.grey])
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
                    pixels.append(to_gray(img, self.grey))
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
