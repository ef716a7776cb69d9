"""Tiny inputs in the real formats of every LRA task, written by the tests themselves.

Each writer returns the folder to pass as ``data.path`` (or ``data_dir``), so the data modules read
them exactly as they would read the release or a local HF copy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

POSITIVE = "A wonderful film, \u00e9l\u00e9gant and moving. I \u2665 it! <br /><br />10/10"
NEGATIVE = 'Dull. "Boring" plot, wooden acting; avoid.'


def write_imdb(path: Path, n_train: int = 24, n_test: int = 16, fmt: str = "save_to_disk") -> Path:
    """IMDB-shaped DatasetDict (``text``, ``label``) saved with save_to_disk or as parquet shards."""
    import datasets

    def split(n: int, offset: int) -> datasets.Dataset:
        texts = [(POSITIVE if i % 2 else NEGATIVE) + f" #{offset + i}" * (1 + i % 5) for i in range(n)]
        labels = [i % 2 for i in range(n)]
        features = datasets.Features(
            {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])}
        )
        return datasets.Dataset.from_dict({"text": texts, "label": labels}, features=features)

    dd = datasets.DatasetDict({"train": split(n_train, 0), "test": split(n_test, 1000)})
    path = Path(path)
    if fmt == "save_to_disk":
        dd.save_to_disk(str(path))
    else:  # the Hub's layout: <config>/<split>-00000-of-00001.parquet
        for name, d in dd.items():
            out = path / "plain_text" / f"{name}-00000-of-00001.parquet"
            out.parent.mkdir(parents=True, exist_ok=True)
            d.to_parquet(str(out))
    return path


def write_cifar(path: Path, n_train: int = 40, n_test: int = 20, seed: int = 0) -> Path:
    """CIFAR-10-shaped DatasetDict (``img`` 32x32 RGB, ``label`` 0..9) saved with save_to_disk."""
    import datasets
    from PIL import Image

    rng = np.random.default_rng(seed)

    def split(n: int) -> datasets.Dataset:
        imgs = [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(n)]
        # One all-black image: black pixels are data, never padding.
        imgs[0] = Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8))
        labels = [i % 10 for i in range(n)]
        features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(num_classes=10)})
        return datasets.Dataset.from_dict({"img": imgs, "label": labels}, features=features)

    datasets.DatasetDict({"train": split(n_train), "test": split(n_test)}).save_to_disk(str(path))
    return Path(path)


AAN_SPLITS = {"train": 24, "eval": 10, "test": 10}


def aan_text(i: int, side: int) -> str:
    # Quotes of every kind inside the texts: a CSV reader with quote handling would merge rows.
    return f'paper {i}.{side} says "attention" is \'all\' you need; "unbalanced quote {i} \u00fcber'


def write_aan(data_dir: Path, splits: dict[str, int] | None = None) -> Path:
    """``tsv_data/new_aan_pairs.{train,eval,test}.tsv``: label id1 id2 text1 text2, no header."""
    out = Path(data_dir) / "tsv_data"
    out.mkdir(parents=True, exist_ok=True)
    for split, n in (splits or AAN_SPLITS).items():
        with open(out / f"new_aan_pairs.{split}.tsv", "w", encoding="utf-8", newline="\n") as f:
            for i in range(n):
                label = f"{float(i % 2):.1f}"
                f.write(f"{label}\tid{i}a\tid{i}b\t{aan_text(i, 1)}\t{aan_text(i, 2) * (1 + i % 3)}\n")
    return Path(data_dir)


def write_pathfinder(root: Path, n: int = 40, size: int = 32, per_batch: int = 16, seed: int = 0) -> Path:
    """The release layout: ``imgs/<batch>/sample_<i>.png`` and ``metadata/<batch>.npy`` (plain text).

    Sample 3 of batch 0 is an empty file, as ``curv_baseline/imgs/0/sample_172.png`` is in the release.
    Image pixels encode their label (bright top-left pixel for positives) so tests can check pairing.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    root = Path(root)
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    rows: dict[int, list[str]] = {}
    for k in range(n):
        batch, i = divmod(k, per_batch)
        folder = root / "imgs" / str(batch)
        folder.mkdir(parents=True, exist_ok=True)
        label = int(rng.integers(0, 2))
        if batch == 0 and i == 3:
            (folder / f"sample_{i}.png").write_bytes(b"")
        else:
            img = (rng.random((size, size)) < 0.05).astype(np.uint8) * 191
            img[0, 0] = 255 if label else 0
            Image.fromarray(img, mode="L").save(folder / f"sample_{i}.png")
        rows.setdefault(batch, []).append(f"imgs/{batch} sample_{i}.png {i} {label} 14 4")
    for batch, lines in rows.items():
        (root / "metadata" / f"{batch}.npy").write_text("\n".join(lines) + "\n")
    return root
