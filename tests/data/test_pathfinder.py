"""Pathfinder / Path-X reading: the release layout, empty and corrupt PNGs, malformed rows, splits, cache."""

from __future__ import annotations

import numpy as np
import pytest

from data import pathfinder
from data.listops import DataFormatError
from data.pathfinder import PathfinderDataModule, read_metadata
from tests.helpers.formats import write_pathfinder

DIFF = "curv_contour_length_14"


def module(tmp_path, root=None, **kw):
    args = dict(
        path=str(root or tmp_path / "pathfinder32" / DIFF),
        generated_path=str(tmp_path / "generated" / DIFF),
        cache_dir=str(tmp_path / "cache"),
        batch_size=8,
        workers=1,
    )
    return PathfinderDataModule(**{**args, **kw})


@pytest.fixture
def release(tmp_path):
    return write_pathfinder(tmp_path / "pathfinder32" / DIFF, n=40)


def test_reads_release_skipping_the_empty_image(tmp_path, release):
    dm = module(tmp_path)
    dm.prepare_data()
    dm.setup()
    sizes = [len(dm.splits[s]) for s in ("train", "val", "test")]
    assert sizes == [31, 4, 4] and sum(sizes) == 39  # 40 listed, one empty file skipped
    # The fixture marks positives with a bright top-left pixel: labels stay paired with their images.
    for split in dm.splits.values():
        for i in range(len(split)):
            ex = split[i]
            assert ex["input_ids"].shape == (1024,) and (ex["input_ids"][0] == 255) == (ex["label"] == 1)


def test_split_is_seeded_disjoint_and_independent_of_run_seed(tmp_path, release):
    def indices(**kw):
        dm = module(tmp_path, **kw)
        dm.setup()
        return [dm.splits[s].indices.tolist() for s in ("train", "val", "test")]

    a = indices(seed=0)
    assert a == indices(seed=5)  # the run's seed does not move the split
    assert a != indices(split_seed=1)
    assert sorted(sum(a, [])) == list(range(39))


def test_cache_decodes_once(tmp_path, release, monkeypatch):
    module(tmp_path).prepare_data()
    monkeypatch.setattr(pathfinder, "build_cache", lambda *a, **k: pytest.fail("decoded twice"))
    dm = module(tmp_path)
    dm.setup()
    assert len(dm.splits["train"]) == 31


def test_dataset_pickles_as_a_reference_to_the_cache(tmp_path, release):
    # Loader workers started by spawn must reopen the memory map, not receive a copy of the array.
    import pickle

    dm = module(tmp_path)
    dm.setup()
    blob = pickle.dumps(dm.splits["train"])
    assert len(blob) < 2000
    again = pickle.loads(blob)
    assert np.array_equal(again[5]["input_ids"].numpy(), dm.splits["train"][5]["input_ids"].numpy())


def test_corrupt_png_names_file_and_metadata_line(tmp_path, release):
    (release / "imgs" / "1" / "sample_2.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(DataFormatError) as err:
        module(tmp_path).prepare_data()
    msg = str(err.value)
    assert (
        str(release / "imgs" / "1" / "sample_2.png") in msg and f"{release / 'metadata' / '1.npy'}:3" in msg
    )
    dm = module(tmp_path, strict=False)
    dm.setup()
    assert sum(len(s) for s in dm.splits.values()) == 38


def test_wrong_size_image_is_an_error(tmp_path, release):
    from PIL import Image

    Image.fromarray(np.zeros((16, 16), np.uint8)).save(release / "imgs" / "0" / "sample_0.png")
    with pytest.raises(DataFormatError, match="16x16, expected 32x32"):
        module(tmp_path).prepare_data()


def test_malformed_metadata_row_names_file_and_line(tmp_path, release):
    meta = release / "metadata" / "2.npy"
    lines = meta.read_text().splitlines()
    lines[1] = "imgs/2 sample_1.png 1"
    meta.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError, match=rf"{meta}:2: expected at least 4 fields"):
        read_metadata(release)
    entries, skipped = read_metadata(release, strict=False)
    assert skipped == 1 and len(entries) == 39


def test_missing_release_explains_download_and_generate(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        module(tmp_path).prepare_data()
    msg = str(err.value)
    assert str(tmp_path / "pathfinder32" / DIFF / "metadata") in msg
    assert "data.source=generate" in msg and "lra_release" in msg


def test_generate_source_writes_then_reads_the_release_layout(tmp_path):
    dm = module(tmp_path, source="generate", generate={"num_images": 30, "images_per_batch": 10})
    dm.setup()
    gen = tmp_path / "generated" / DIFF
    assert sorted(p.name for p in (gen / "metadata").iterdir()) == ["0.npy", "1.npy", "2.npy"]
    assert [len(dm.splits[s]) for s in ("train", "val", "test")] == [24, 3, 3]
    mtime = (gen / "generation.json").stat().st_mtime_ns
    module(tmp_path, source="auto", path=str(gen)).setup()  # same settings: nothing regenerated
    assert (gen / "generation.json").stat().st_mtime_ns == mtime


def test_max_len_shorter_than_an_image_is_refused(tmp_path):
    with pytest.raises(ValueError, match="shorter than one 128x128 image"):
        module(tmp_path, resolution=128, max_len=1024)
