"""Image (grayscale CIFAR-10): decoding, 45k/5k/10k-style splits, masks that ignore pixel values by
default, and LRA's pipeline as options: TensorFlow's grey conversion and black pixels as padding."""

from __future__ import annotations

import inspect
import pickle
import struct

import numpy as np
import pytest
import torch

from attention.softmax import SoftmaxAttention
from data.collate import pad_collate
from data.image import ImageDataModule, tf_grey, to_gray
from models.transformer import LRATransformer
from tests.helpers.formats import write_cifar


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


# -- data.grey=tensorflow: tf.image.rgb_to_grayscale, as LRA's input pipeline ------------------------------
def f32(x: float) -> float:
    """``x`` rounded to the nearest float32. A float32 +, - or * of float32 inputs computed in Python's
    double and rounded once is the float32 result (double has over twice float32's precision)."""
    return struct.unpack("f", struct.pack("f", x))[0]


def tf_grey_reference(r: int, g: int, b: int) -> int:
    """One pixel through tf.image.rgb_to_grayscale on uint8, written out step by step in float32:
    level * float32(1/255); weights 0.2989, 0.5870, 0.1140 summed in channel order; * 255.5; cast to
    uint8, which truncates toward zero (the result stays below 255.5, so nothing saturates)."""
    scale = f32(1 / 255)
    red, green, blue = (f32(v * scale) for v in (r, g, b))
    total = f32(f32(red * f32(0.2989)) + f32(green * f32(0.5870)))
    total = f32(total + f32(blue * f32(0.1140)))
    return int(f32(total * 255.5))


def test_tensorflow_grey_equals_the_written_out_formula():
    """A grid of every 17th level (4096 colours, the 8 corners among them) and 60,000 random colours.
    (The numpy function also equals TensorFlow 2.21's own rgb_to_grayscale, on CPU, on all 256^3
    colours: checked once outside the suite, as TensorFlow is no dependency.)"""
    grid = np.stack(np.meshgrid(*[np.arange(0, 256, 17)] * 3, indexing="ij"), -1).reshape(-1, 3)
    random = np.random.default_rng(0).integers(0, 256, (60_000, 3))
    colours = np.concatenate([grid, random]).astype(np.uint8)
    expected = np.array([tf_grey_reference(*map(int, c)) for c in colours], dtype=np.uint8)
    assert np.array_equal(tf_grey(colours), expected)
    assert tf_grey(np.array([[0, 0, 0], [255, 255, 255], [0, 1, 0]], np.uint8)).tolist() == [0, 255, 0]
    # Colours on a level's edge, where the order of the float32 steps decides: TensorFlow 2.21 gives these
    # levels; dividing by 255 instead of multiplying by 1/255 gives one less on the first two, the sum
    # of the weighted channels in float64 one more or less on the middle two, and summing B + G + R one
    # more on the last two.
    edges = {(5, 171, 227): 128, (13, 219, 204): 156, (16, 218, 140): 148, (50, 205, 39): 140}
    edges.update({(5, 49, 41): 34, (20, 196, 164): 139})
    assert [tf_grey_reference(*c) for c in edges] == list(edges.values())
    assert tf_grey(np.array(list(edges), np.uint8)).tolist() == list(edges.values())


def test_pil_grey_is_one_level_above_tensorflows_on_a_quarter_of_colours():
    """Over all 256^3 colours: PIL's L (rounded luma) and TensorFlow's (truncated luma) agree on
    12,368,673 and differ on 4,408,543 (26.3%), where PIL's is always exactly one level higher;
    mostly on dark colours (42% of those with luma below 64, 11% above 192)."""
    from PIL import Image

    g, b = np.meshgrid(np.arange(256), np.arange(256), indexing="ij")
    differences = np.zeros(2, dtype=np.int64)
    for r in range(256):  # one red level at a time: 65,536 colours as a 256x256 image
        rgb = np.stack([np.full_like(g, r), g, b], -1).astype(np.uint8)
        pil = np.asarray(Image.fromarray(rgb).convert("L")).astype(np.int16)
        diff = pil - tf_grey(rgb)
        assert diff.min() >= 0 and diff.max() <= 1
        differences += np.bincount(diff.ravel(), minlength=2)
    assert differences.tolist() == [12_368_673, 4_408_543]


def test_to_gray_converts_as_asked():
    from PIL import Image

    rgb = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    img = Image.fromarray(rgb)
    assert np.array_equal(to_gray(img), np.asarray(img.convert("L")).reshape(-1))  # the default
    assert np.array_equal(to_gray(img, "tensorflow"), tf_grey(rgb).reshape(-1))
    with pytest.raises(ValueError, match="expected 32x32"):
        to_gray(Image.fromarray(rgb[:16]), "tensorflow")


def test_each_grey_conversion_has_its_own_cache(cifar_dir, tmp_path):
    import datasets

    pil = module(cifar_dir, tmp_path / "cache")
    tf = module(cifar_dir, tmp_path / "cache", grey="tensorflow")
    pil.setup()
    tf.setup()
    source = pil.resolved_source
    assert pil.cache_path(source) != tf.cache_path(source)
    # data.grey=pil keeps the key it had before the option existed: caches built then are still used.
    assert pil.cache_key(source) == [source[1], "PIL-L/v1", True]
    rgb = np.stack(
        [np.asarray(im.convert("RGB")) for im in datasets.load_from_disk(str(cifar_dir))["test"]["img"]]
    )
    tf_rows = np.stack([tf.splits["test"][i]["input_ids"].numpy() for i in range(len(rgb))])
    pil_rows = np.stack([pil.splits["test"][i]["input_ids"].numpy() for i in range(len(rgb))])
    assert np.array_equal(tf_rows, tf_grey(rgb).reshape(len(rgb), -1))
    assert (pil_rows != tf_rows).any() and ((pil_rows - tf_rows) >= 0).all()


# -- data.mask_black_pixels=true: black pixels are padding, as LRA's models mask tokens equal to 0 --------
@pytest.fixture(scope="module")
def dark_dir(tmp_path_factory):
    """CIFAR-shaped images with black pixels among others, one all black, one without any black, and
    pixels (0, 1, 0): level 1 for PIL, 0 (black) for TensorFlow."""
    import datasets
    from PIL import Image

    rng = np.random.default_rng(2)
    arrays = []
    for _ in range(14):
        a = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        a[rng.random((32, 32)) < 0.3] = 0
        a[rng.random((32, 32)) < 0.1] = (0, 1, 0)
        arrays.append(a)
    arrays[0][:] = 0
    arrays[1][:] = 200
    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(num_classes=10)})

    def split(chunk):
        imgs = [Image.fromarray(a) for a in chunk]
        return datasets.Dataset.from_dict(
            {"img": imgs, "label": [i % 10 for i in range(len(chunk))]}, features=features
        )

    path = tmp_path_factory.mktemp("dark") / "cifar10"
    datasets.DatasetDict({"train": split(arrays[:10]), "test": split(arrays[10:])}).save_to_disk(str(path))
    return path


def batches(dm) -> list[dict]:
    """Every batch of the three loaders, as a run gets them."""
    dm.setup()
    return [
        b for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()) for b in loader
    ]


@pytest.mark.parametrize("grey", ["pil", "tensorflow"])
def test_black_pixels_are_padding_only_with_the_option(dark_dir, tmp_path, grey):
    default = batches(module(dark_dir, tmp_path / "cache", grey=grey, batch_size=4))
    assert all(b["mask"].all() for b in default)  # every pixel is real, black or not

    masked = batches(module(dark_dir, tmp_path / "cache", grey=grey, batch_size=4, mask_black_pixels=True))
    assert sum(len(b["label"]) for b in masked) == 14
    for b in masked:
        assert torch.equal(b["mask"], b["input_ids"] != 0)
    ids = torch.cat([b["input_ids"] for b in masked])
    mask = torch.cat([b["mask"] for b in masked])
    assert not mask.all() and mask.any()
    assert (~mask).all(dim=1).sum() == 1 and mask.all(dim=1).sum() == 1  # the all-black and no-black images
    # The same tokens either way: the option changes the mask, not the data (or its cache).
    assert torch.equal(ids, torch.cat([b["input_ids"] for b in default]))


def test_tensorflow_grey_makes_more_padding_than_pils(dark_dir, tmp_path):
    def padding(grey):
        dm = module(dark_dir, tmp_path / "cache", grey=grey, batch_size=4, mask_black_pixels=True)
        return sum(int((~b["mask"]).sum()) for b in batches(dm))

    assert padding("tensorflow") > padding("pil")  # (0, 1, 0) is black for TensorFlow only


def test_black_padding_collate_pickles_and_an_all_black_image_stays_finite(dark_dir, tmp_path):
    dm = module(dark_dir, tmp_path / "cache", batch_size=4, mask_black_pixels=True)
    dm.setup()
    examples = [dm.splits["train"][i] for i in range(3)]  # the all-black image first
    collate = pickle.loads(pickle.dumps(dm._collate()))  # loader workers started by spawn get a copy
    batch = collate(examples)
    assert torch.equal(batch["mask"], batch["input_ids"] != 0) and not batch["mask"][0].any()
    torch.manual_seed(0)
    model = LRATransformer(256, 10, 1024, attention=SoftmaxAttention, dim=16).eval()
    with torch.no_grad():
        assert torch.isfinite(model(batch["input_ids"], batch["mask"])).all()


# -- the config -------------------------------------------------------------------------------------------
def test_shipped_config_names_the_class_defaults():
    from tests.helpers.runs import compose_run

    data = compose_run("task=image").data
    params = inspect.signature(ImageDataModule.__init__).parameters
    for key in ("grey", "mask_black_pixels"):
        assert data[key] == params[key].default, key


@pytest.mark.parametrize(
    "override, expected",
    [
        ("data.grey=tf", "data.grey='tf' must be one of pil|tensorflow"),
        ("data.mask_black_pixels=1", "data.mask_black_pixels=1 must be true or false"),
    ],
)
def test_bad_values_are_refused_in_one_line_naming_the_key(override, expected):
    from lra.config_checks import instantiate_checked
    from lra.errors import ConfigError
    from tests.helpers.runs import compose_run

    with pytest.raises(ConfigError) as err:
        instantiate_checked(compose_run("task=image", override).data, "data")
    assert str(err.value) == expected


def test_dashboard_keeps_runs_with_other_image_settings_apart():
    """The dashboard's variant logic needs nothing for the new keys: runs that differ in them are rows
    of their own, labelled by the key; seeds of one setting share a row."""
    from pathlib import Path

    from omegaconf import OmegaConf

    from lra.compare.collect import Run
    from lra.compare.variants import assign_variants
    from tests.helpers.runs import compose_run

    def run(seed, *overrides):
        config = OmegaConf.to_container(compose_run("task=image", f"seed={seed}", *overrides), resolve=True)
        return Run(Path(f"r{seed}{overrides}"), "completed", "image", "softmax", seed, config)

    runs = [run(0), run(1), run(2), run(0, "data.grey=tensorflow"), run(0, "data.mask_black_pixels=true")]
    keys = assign_variants(runs)
    assert keys["softmax"] == ["data.grey", "data.mask_black_pixels"]
    assert [r.variant for r in runs] == [
        "softmax",
        "softmax",
        "softmax",
        "softmax [grey=tensorflow]",
        "softmax [mask_black_pixels=true]",
    ]
