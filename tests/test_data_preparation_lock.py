"""Runs of a parallel sweep that start together build the data once, without tripping over each other."""

from __future__ import annotations

import multiprocessing as mp

from data.cache import preparation_lock
from data.listops import ListOpsDataModule

SPEC = dict(num_train=300, num_val=30, num_test=30, min_length=10, max_length=200, max_depth=6)


def prepare_and_count(root: str) -> list[int]:
    dm = ListOpsDataModule(
        path=f"{root}/release",
        generated_path=f"{root}/generated",
        cache_dir=f"{root}/cache",
        source="generate",
        generate=SPEC,
        workers=1,
    )
    with preparation_lock(f"{root}/cache"):
        dm.prepare_data()
    dm.setup()
    return [len(dm.splits[s]) for s in ("train", "val", "test")]


def test_concurrent_runs_share_one_build(tmp_path):
    with mp.get_context("spawn").Pool(3) as pool:
        sizes = pool.map(prepare_and_count, [str(tmp_path)] * 3)
    assert sizes == [[300, 30, 30]] * 3
    assert len(list((tmp_path / "cache" / "listops").iterdir())) == 1  # one cache, built once
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]  # no leftover temporary dirs
