"""Text (IMDB bytes): local copies (save_to_disk, parquet), byte round trip, splits, offline errors."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from data import _hf
from data.listops import DataFormatError
from data.text import TextDataModule, check_examples, encode_bytes
from tests.helpers.formats import POSITIVE, write_imdb


def decode(ids) -> str:
    return bytes(int(i) for i in ids).decode("utf-8")


@pytest.fixture(scope="module")
def imdb_dir(tmp_path_factory):
    return write_imdb(tmp_path_factory.mktemp("imdb") / "imdb")


def module(path, cache, **kw):
    return TextDataModule(path=str(path), cache_dir=str(cache), **{"max_len": 4000, "batch_size": 4, **kw})


def test_bytes_round_trip_and_range():
    texts = ["", "abc", POSITIVE]
    flat, offsets = encode_bytes(texts)
    assert [decode(flat[a:b]) for a, b in zip(offsets[:-1], offsets[1:], strict=True)] == texts
    assert flat.dtype == np.uint8 and flat.tolist()[:3] == list(b"abc")


@pytest.mark.parametrize("fmt", ["save_to_disk", "parquet"])
def test_local_copy_loads_and_test_serves_as_validation(tmp_path, fmt):
    path = write_imdb(tmp_path / "imdb", n_train=10, n_test=6, fmt=fmt)
    dm = module(path, tmp_path / "cache")
    dm.prepare_data()
    dm.setup()
    assert [len(dm.splits[s]) for s in ("train", "val", "test")] == [10, 6, 6]
    assert dm.splits["val"] is dm.splits["test"]
    ex = dm.splits["train"][1]
    assert decode(ex["input_ids"]).startswith(POSITIVE) and ex["label"] == 1


def test_max_len_truncates_and_mask_counts_real_bytes(imdb_dir, tmp_path):
    dm = module(imdb_dir, tmp_path / "cache", max_len=20)
    dm.setup()
    batch = next(iter(dm.val_dataloader()))
    assert batch["input_ids"].shape[1] <= 20
    assert batch["mask"].sum(1).tolist() == [min(20, len(dm.splits["val"][i]["input_ids"])) for i in range(4)]


def test_train_holdout_is_seeded_and_disjoint(imdb_dir, tmp_path):
    def split(seed):
        dm = module(imdb_dir, tmp_path / "cache", val_split="train", val_fraction=0.25, split_seed=seed)
        dm.setup()
        return dm, list(dm.splits["train"].indices), list(dm.splits["val"].indices)

    dm, fit, val = split(0)
    assert len(val) == 6 and len(fit) == 18 and not set(fit) & set(val)
    assert (fit, val) == split(0)[1:] and val != split(1)[2]
    assert len(dm.splits["test"]) == 16


def test_cache_is_reused_without_touching_hf(imdb_dir, tmp_path, monkeypatch):
    module(imdb_dir, tmp_path / "cache").prepare_data()
    monkeypatch.setattr(_hf, "load_splits", lambda *a, **k: pytest.fail("cache miss: HF loaded again"))
    dm = module(imdb_dir, tmp_path / "cache", max_len=1000)  # another length shares the cache
    dm.setup()
    assert len(dm.splits["train"]) == 24


def test_malformed_row_named_or_skipped():
    texts, labels = ["good", None, "fine", "bad label"], [0, 1, 1, 7]
    with pytest.raises(DataFormatError, match=r"\[train\] row 1: text is NoneType"):
        check_examples(texts, labels, "x [train]", 2, strict=True)
    kept_t, kept_l, skipped = check_examples(texts, labels, "x [train]", 2, strict=False)
    assert kept_t == ["good", "fine"] and kept_l == [0, 1] and skipped == 2


def test_missing_copy_offline_fails_fast_naming_path(tmp_path, monkeypatch):
    # Fast by construction, not by the clock: offline, the Hub is never probed (nor waited on).
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(_hf, "hub_reachable", lambda *a, **k: pytest.fail("probed the Hub while offline"))
    dm = module(tmp_path / "no-imdb", tmp_path / "cache")
    with pytest.raises(FileNotFoundError) as err:
        dm.prepare_data()
    msg = str(err.value)
    assert (
        str(tmp_path / "no-imdb") in msg and "data.path" in msg and "HF Hub" in msg and "save_to_disk" in msg
    )
    assert "\n" not in msg


def test_unreachable_hub_fails_fast(tmp_path, monkeypatch):
    # Not offline, but the endpoint refuses connections: one short probe, then a one-line error.
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    assert _hf.hub_reachable(timeout=2) is False
    # Fast by construction, not by the clock: one probe with a bounded timeout, and `datasets` (and
    # its retries) never asked.
    probes = []
    urlopen = _hf.urllib.request.urlopen

    def probe(url, *args, timeout=None, **kwargs):
        probes.append(timeout)
        return urlopen(url, *args, timeout=timeout, **kwargs)

    monkeypatch.setattr(_hf.urllib.request, "urlopen", probe)
    unused = types.ModuleType("datasets")
    unused.load_dataset = lambda *a, **k: pytest.fail("asked datasets although the Hub is unreachable")
    monkeypatch.setitem(sys.modules, "datasets", unused)
    with pytest.raises(FileNotFoundError, match="cannot be reached"):
        module(tmp_path / "no-imdb", tmp_path / "cache", source="hub").prepare_data()
    assert probes == [_hf.HUB_TIMEOUT_S] and 0 < _hf.HUB_TIMEOUT_S < float("inf")


def test_local_source_requires_the_copy(tmp_path):
    with pytest.raises(FileNotFoundError, match="no local copy"):
        module(tmp_path / "missing", tmp_path / "cache", source="local").prepare_data()
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="neither a save_to_disk"):
        module(tmp_path / "empty", tmp_path / "cache").prepare_data()
