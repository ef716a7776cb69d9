"""Data that would silently give wrong results: which source a run used, incomplete releases, empty
splits, truncation, stale Pathfinder caches, concurrent generation, leftovers, bad ListOps files."""

from __future__ import annotations

import logging
import os
import shutil
import stat

import numpy as np
import pytest

import data.cache as cache
from data.cache import (
    RaggedDataset,
    atomic_write_text,
    clean_leftovers,
    load_ragged_dataset,
)
from data.listops import VOCAB, DataFormatError, ListOpsDataModule, read_listops_tsv
from data.pathfinder import PathfinderDataModule
from data.retrieval import read_aan_tsv
from lra import results
from lra.errors import ConfigError
from tests.helpers.formats import write_aan, write_pathfinder
from tests.helpers.listops import module, write_release
from tests.helpers.runs import valid_record

VOCAB_IDS = {t: i for i, t in enumerate(VOCAB)}
SPEC = dict(num_train=300, num_val=30, num_test=30, min_length=10, max_length=200, max_depth=6)


# -- item 2: which data a run trained on ----------------------------------------------------------------
def test_partial_release_is_an_error_naming_the_missing_files(tmp_path):
    write_release(tmp_path / "listops-1000")
    (tmp_path / "listops-1000" / "basic_val.tsv").unlink()
    (tmp_path / "listops-1000" / "basic_test.tsv").unlink()
    with pytest.raises(FileNotFoundError) as err:
        module(tmp_path, source="auto").prepare_data()
    msg = str(err.value)
    assert "incomplete" in msg and "basic_val.tsv" in msg and "basic_test.tsv" in msg
    assert "basic_train.tsv" not in msg
    assert not (tmp_path / "generated").exists()  # no silent fallback to generated data


def test_data_record_names_source_generator_and_content(tmp_path):
    write_release(tmp_path / "listops-1000")
    dm = module(tmp_path, source="auto")
    dm.setup()
    record = dm.data_record()
    assert record["source"] == "release" and record["path"] == str(tmp_path / "listops-1000")
    assert record["generator"] is None and len(record["fingerprint"]) == 16
    assert record["splits"]["train"] == {"examples": 10, "truncated": 0}
    # The same files elsewhere: the same fingerprint. Other content: another one.
    shutil.copytree(tmp_path / "listops-1000", tmp_path / "copy" / "listops-1000")
    copy = module(tmp_path / "copy", cache_dir=tmp_path / "cache")
    copy.setup()
    assert copy.data_record()["fingerprint"] == record["fingerprint"]
    gen = module(tmp_path, source="generate", generate=SPEC, workers=1)
    gen.setup()
    generated = gen.data_record()
    assert generated["source"] == "generate" and generated["generator"]["seed"] == 0
    assert generated["generator"]["num_train"] == 300 and generated["fingerprint"] != record["fingerprint"]


def test_results_json_and_dashboard_record_the_data_source(tmp_path):
    from lra.compare.tables import data_cell
    from tests.helpers.listops import tiny_listops
    from tests.helpers.runs import read_record, train_here

    train_here(tmp_path / "run", *tiny_listops(tmp_path / "data"), "logger=none", "trainer.max_steps=2")
    data = read_record(tmp_path / "run")["data"]
    assert data["source"] == "generate" and data["path"] == str(
        tmp_path / "data" / "generated" / "listops-quick"
    )
    assert data["generator"]["seed"] == 0 and data["splits"]["val"]["examples"] == 40
    assert data_cell(data) == f"generate (seed 0) · {data['fingerprint'][:10]}"
    assert data_cell(None) == "—"  # records written before the field existed


# -- item 3: empty splits -------------------------------------------------------------------------------
@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_header_only_split_is_an_error_naming_it(tmp_path, split):
    write_release(tmp_path / "listops-1000")
    (tmp_path / "listops-1000" / f"basic_{split}.tsv").write_text("Source\tTarget\n")
    dm = module(tmp_path)
    dm.setup()
    with pytest.raises(DataFormatError, match=f"the {split} split of .* has no examples"):
        dm.check_splits()


def test_split_whose_every_row_was_skipped_is_an_error(tmp_path):
    write_release(tmp_path / "listops-1000")
    (tmp_path / "listops-1000" / "basic_test.tsv").write_text("Source\tTarget\n[FOO 1 ]\t1\n\t3\n")
    dm = module(tmp_path, strict=False)
    dm.setup()
    with pytest.raises(DataFormatError, match="the test split .* every row was skipped"):
        dm.check_splits()


def test_pathfinder_with_no_usable_image_is_an_error(tmp_path):
    root = write_pathfinder(tmp_path / "pf", n=6, per_batch=6)
    for png in (root / "imgs" / "0").iterdir():
        png.write_bytes(b"")
    dm = PathfinderDataModule(
        path=str(root), generated_path=str(tmp_path / "g"), cache_dir=str(tmp_path / "c"), workers=1
    )
    with pytest.raises(DataFormatError, match="none of the 6 listed images could be used"):
        dm.prepare_data()


# -- item 6: truncation -----------------------------------------------------------------------------------
def test_listops_truncation_is_refused_naming_split_count_and_fix(tmp_path):
    write_release(tmp_path / "listops-1000")
    dm = module(tmp_path, max_len=3)
    dm.setup()
    with pytest.raises(DataFormatError) as err:
        dm.check_splits()
    msg = str(err.value)
    # the longest expression has 5 LRA tokens ("[SM 9 [MIN 3 4"; 7 with its closing brackets)
    assert "train split" in msg and "of 10 examples" in msg and "model.max_len=5" in msg
    assert "data.allow_truncation=true" in msg
    allowed = module(tmp_path, max_len=3, allow_truncation=True)
    allowed.setup()
    report = allowed.check_splits()
    assert report["train"]["truncated"] > 0 and allowed.data_record()["splits"] == report


def test_truncation_counts_of_ragged_and_two_document_data(tmp_path):
    offsets = np.array([0, 2, 7, 10])
    ds = RaggedDataset(np.zeros(10, np.uint8), offsets, np.zeros(3, np.int64), max_len=3)
    assert ds.truncated_mask().tolist() == [False, True, False]
    write_aan(tmp_path)
    arrays, _ = read_aan_tsv(tmp_path / "tsv_data" / "new_aan_pairs.train.tsv", max_len=64)
    lengths = np.diff(arrays["offsets2"])
    assert arrays["truncated"].sum() > 0 and lengths.max() == 64  # cut when cached, and counted


def test_truncated_listops_run_records_counts(tmp_path):
    from tests.helpers.listops import tiny_listops
    from tests.helpers.runs import read_record, train_here

    args = [*tiny_listops(tmp_path / "data"), "logger=none", "trainer.max_steps=2", "model.max_len=40"]
    with pytest.raises(DataFormatError, match="data.allow_truncation=true"):
        train_here(tmp_path / "refused", *args)
    train_here(tmp_path / "run", *args, "data.allow_truncation=true")
    splits = read_record(tmp_path / "run")["data"]["splits"]
    assert all(splits[s]["truncated"] > 0 for s in ("train", "val", "test"))


# -- item 7: Pathfinder's cache sees changed images ---------------------------------------------------------
def test_fixed_image_is_picked_up(tmp_path):
    root = write_pathfinder(tmp_path / "pathfinder32" / "curv_contour_length_14", n=40)
    good = (root / "imgs" / "1" / "sample_2.png").read_bytes()
    (root / "imgs" / "1" / "sample_2.png").write_bytes(b"\x89PNG garbage")
    kw = dict(path=str(root), generated_path=str(tmp_path / "g"), cache_dir=str(tmp_path / "c"), workers=1)
    lenient = PathfinderDataModule(strict=False, **kw)
    lenient.setup()
    assert sum(len(s) for s in lenient.splits.values()) == 38  # the empty one and the corrupt one
    (root / "imgs" / "1" / "sample_2.png").write_bytes(good)  # the image is fixed
    again = PathfinderDataModule(strict=False, **kw)
    again.setup()
    assert sum(len(s) for s in again.splits.values()) == 39


# -- item 8: runs sharing data_dir but not cache_dir: tests/data/test_preparation_lock.py ------------------


# -- leftovers and permissions ---------------------------------------------------------------------------
DEAD_PID = 2**22 + 12345  # above Linux's pid_max: never a live process


def ours(name: str, pid: int = DEAD_PID, host: str | None = None) -> str:
    """A temporary's name as the harness writes it (``.lra-<host>-<pid>.<name>``)."""
    return f".lra-{host or cache._host()}-{pid}.{name}"


def generating(tmp_path, **kw):
    return module(tmp_path, source="generate", generate=SPEC, workers=1, max_len=200, **kw)


def test_leftovers_of_killed_preparations_are_removed_under_the_lock(tmp_path):
    where = tmp_path / "cache" / "listops"  # where ListOps caches are built
    dead_dir = where / ours("partial-0123abcd")
    dead_tmp = where / ours("k2j3h4g5.train.npz.tmp")
    live_dir = where / ours("partial-4567abcd", pid=os.getpid())
    elsewhere = where / ours("partial-89abcdef", host="othernode")  # pid dead here, maybe alive there
    for d in (dead_dir, live_dir, elsewhere):
        d.mkdir(parents=True)
    dead_tmp.write_bytes(b"half")
    dead_generation = tmp_path / ours("partial-generated")  # beside data.generated_path
    dead_generation.mkdir()
    generating(tmp_path).prepare_data()
    assert not dead_tmp.exists() and not dead_dir.exists() and not dead_generation.exists()
    assert live_dir.exists() and elsewhere.exists()  # a live writer's, and another machine's, stay
    assert clean_leftovers(tmp_path / "nowhere") == []


def test_a_users_folder_as_cache_dir_keeps_what_only_looks_temporary(tmp_path):
    """cache_dir and data.generated_path's parent set to a user's folder: the cleanup of killed
    preparations removes only the harness's own temporaries, only where it builds."""
    mine = tmp_path / "mine"
    kept = [
        mine / f".notes.{DEAD_PID}.v2.tmp",
        mine / f".thesis.partial-{DEAD_PID}" / "ch1.tex",
        mine / "sub" / f".draft.partial-{DEAD_PID}" / "notes.txt",
        mine / f".gen.replaced-{DEAD_PID}" / "old.txt",
        mine / "listops" / f".train.npz.{DEAD_PID}.k2j3h4g5.tmp",
        mine / "sub" / ours("partial-x") / "a.txt",  # the harness's form, in a folder it does not build in
        mine / "listops" / "sub" / ours("k2j3h4g5.b.tmp"),
    ]
    for path in kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("mine")
    dm = generating(tmp_path, cache_dir=mine, generated_path=mine / "gen")
    dm.setup()
    assert [path.read_text() for path in kept] == ["mine"] * len(kept)
    assert (mine / "gen" / "generation.json").is_file() and dm.data_record()["splits"]["train"]["examples"]


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_damaged_cache_file_is_rebuilt(tmp_path, caplog, damage):
    """``truncate -s 100 <cache_dir>/listops/<key>/train.npz``: derived data, rebuilt (with a warning
    naming it), not a zipfile.BadZipFile traceback."""
    write_release(tmp_path / "listops-1000")
    first = module(tmp_path)
    first.setup()
    (npz,) = (tmp_path / "cache" / "listops").glob("*/train.npz")
    if damage == "truncated":
        os.truncate(npz, 100)
    else:
        npz.write_bytes(b"not a cache\n" * 40)
    again = module(tmp_path)
    with caplog.at_level(logging.WARNING, logger="data.base"):
        again.setup()
    assert again.data_record()["fingerprint"] == first.data_record()["fingerprint"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(npz) in warnings[0] and "rebuilding" in warnings[0]
    assert [p.name for p in npz.parent.parent.iterdir()] == [npz.parent.name]  # nothing left beside it


def test_cache_that_stays_unreadable_is_one_line_saying_to_delete_it(tmp_path, monkeypatch):
    write_release(tmp_path / "listops-1000")
    monkeypatch.setattr(ListOpsDataModule, "load", lambda self, c: load_ragged_dataset(c / "missing.npz"))
    with pytest.raises(DataFormatError) as err:
        module(tmp_path).setup()
    (cache_path,) = (tmp_path / "cache" / "listops").iterdir()
    msg = str(err.value)
    assert f"delete the folder {cache_path} and run again" in msg and "missing.npz" in msg and "\n" not in msg


def test_cache_files_and_results_json_are_readable_by_others(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "cache.json", "{}")
        results.write(tmp_path, valid_record())
    finally:
        os.umask(old)
    for name in ("cache.json", "results.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name


def test_read_only_data_dir_says_to_set_cache_dir(tmp_path, monkeypatch):
    from tests.helpers.listops import tiny_listops
    from tests.helpers.runs import train_here

    def denied(cache_dir):
        raise PermissionError(13, "Permission denied", str(cache_dir))

    monkeypatch.setattr("data.base.preparation_lock", denied)
    with pytest.raises(ConfigError) as err:
        train_here(tmp_path / "run", *tiny_listops(tmp_path / "data"), "logger=none")
    msg = str(err.value)
    assert "Permission denied" in msg and "cache_dir=" in msg and "writable" in msg


# -- ListOps files as they come --------------------------------------------------------------------------
def write_tsv(tmp_path, body: bytes):
    path = tmp_path / "basic_train.tsv"
    path.write_bytes(body)
    return path


def test_utf8_bom_is_tolerated(tmp_path):
    path = write_tsv(tmp_path, "\ufeffSource\tTarget\n[MAX 1 2 ]\t2\n".encode())
    _, _, labels, _ = read_listops_tsv(path, VOCAB_IDS)
    assert labels.tolist() == [2]


@pytest.mark.parametrize(
    "row, complaint",
    [(b"[MAX 1 \xff 2 ]\t2", "not UTF-8 text (byte 0xff at column 8)"), (b"( )\t3", "empty expression")],
    ids=["not-utf8", "empty-expression"],
)
def test_bad_rows_name_file_and_line_or_are_skipped(tmp_path, row, complaint):
    path = write_tsv(tmp_path, b"Source\tTarget\n[MAX 1 2 ]\t2\n" + row + b"\n[MIN 3 4 ]\t3\n")
    with pytest.raises(DataFormatError) as err:
        read_listops_tsv(path, VOCAB_IDS)
    assert f"{path}:3: {complaint}" in str(err.value) and "data.strict=false" in str(err.value)
    _, _, labels, skipped = read_listops_tsv(path, VOCAB_IDS, strict=False)
    assert labels.tolist() == [2, 3] and skipped == 1


def test_non_utf8_header_names_the_file(tmp_path):
    path = write_tsv(tmp_path, b"Sou\xe9rce\tTarget\n")
    with pytest.raises(DataFormatError, match=f"{path}:1: not UTF-8"):
        read_listops_tsv(path, VOCAB_IDS)
