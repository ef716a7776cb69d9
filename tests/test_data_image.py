"""Image (grayscale CIFAR-10): decoding, 45k/5k/10k-style splits, and masks that ignore pixel values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attention.softmax import SoftmaxAttention
from data.collate import pad_collate
from data.image import ImageDataModule, to_gray
from models.transformer import LRATransformer
from tests.fixtures_lra import write_cifar


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory):
    return write_cifar(tmp_path_factory.mktemp("cifar") / "cifar10", n_train=40, n_test=20)


def module(path, cache, **kw):
    return ImageDataModule(path=str(path), cache_dir=str(cache), **{"batch_size": 8, **kw})


def test_grayscale_is_luma_of_rgb():
    from PIL import Image

    rgb = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    gray = to_gray(Image.fromarray(rgb)).astype(float)
    luma = rgb.astype(float) @ np.array([0.299, 0.587, 0.114])
    assert gray.shape == (1024,) and np.abs(gray - luma.reshape(-1)).max() <= 1.0


def test_splits_last_tenth_of_train_and_test(cifar_dir, tmp_path):
    dm = module(cifar_dir, tmp_path / "cache")
    dm.prepare_data()
    dm.setup()
    assert [len(dm.splits[s]) for s in ("train", "val", "test")] == [36, 4, 20]  # 45k/5k/10k at full size
    assert dm.splits["val"].indices.tolist() == [36, 37, 38, 39]
    ex = dm.splits["test"][0]
    assert ex["input_ids"].shape == (1024,) and ex["input_ids"].max() <= 255
    assert [dm.splits["test"][i]["label"] for i in range(3)] == [0, 1, 2]


def test_random_validation_split_is_seeded(cifar_dir, tmp_path):
    def val(seed):
        dm = module(cifar_dir, tmp_path / "cache", val_split="random", split_seed=seed)
        dm.setup()
        assert not set(dm.splits["train"].indices) & set(dm.splits["val"].indices)
        return dm.splits["val"].indices.tolist()

    assert val(0) == val(0) != val(1) and len(val(0)) == 4


def test_black_image_is_data_not_padding(cifar_dir, tmp_path):
    dm = module(cifar_dir, tmp_path / "cache")
    dm.setup()
    black = dm.splits["train"][0]  # the fixture's all-black image
    assert int(black["input_ids"].max()) == 0
    batch = pad_collate([black, dm.splits["train"][1]])
    assert batch["mask"].all()  # every pixel is real, black or not

    torch.manual_seed(0)
    for embedding in ("token", "pixel_linear"):
        model = LRATransformer(256, 10, 1024, attention=SoftmaxAttention, dim=16, embedding=embedding).eval()
        x = batch["input_ids"][:1].clone()
        changed = x.clone()
        changed[0, 500] = 1  # one black pixel turns almost black
        with torch.no_grad():
            a, b = model(x, batch["mask"][:1]), model(changed, batch["mask"][:1])
        assert not torch.allclose(a, b), embedding


def test_corrupt_image_named_or_skipped(tmp_path):
    import io

    import datasets
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(buf, format="PNG")
    feats = datasets.Features({"img": datasets.Image(decode=False), "label": datasets.Value("int64")})
    rows = {
        "img": [{"bytes": b"not a png", "path": None}, {"bytes": buf.getvalue(), "path": None}],
        "label": [3, 4],
    }
    split = datasets.Dataset.from_dict(rows, features=feats)
    datasets.DatasetDict({"train": split, "test": split}).save_to_disk(str(tmp_path / "c"))
    with pytest.raises(ValueError, match=r"\[train\] row 0: cannot identify image"):
        module(tmp_path / "c", tmp_path / "cache").prepare_data()
    dm = module(tmp_path / "c", tmp_path / "cache", strict=False)
    dm.setup()
    assert len(dm.splits["test"]) == 1 and dm.splits["test"][0]["label"] == 4
