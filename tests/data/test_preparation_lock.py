"""Runs of a parallel sweep that start together build the data once, without tripping over each other:
the data module's own ``setup`` takes the preparation lock (and the generated folder's lock)."""

from __future__ import annotations

import multiprocessing as mp

from data.listops import ListOpsDataModule

SPEC = dict(num_train=300, num_val=30, num_test=30, min_length=10, max_length=200, max_depth=6)


def prepare_and_count(args: tuple[str, str]) -> list[int]:
    root, cache = args
    dm = ListOpsDataModule(
        path=f"{root}/release",
        generated_path=f"{root}/generated",
        cache_dir=f"{root}/{cache}",
        source="generate",
        generate=SPEC,
        workers=1,
    )
    dm.prepare_data()
    dm.setup()
    return [len(dm.splits[s]) for s in ("train", "val", "test")]


def prepare_concurrently(root, caches: list[str]) -> list[list[int]]:
    with mp.get_context("spawn").Pool(len(caches)) as pool:
        return pool.map(prepare_and_count, [(str(root), cache) for cache in caches])


def test_concurrent_runs_share_one_build(tmp_path):
    assert prepare_concurrently(tmp_path, ["cache"] * 3) == [[300, 30, 30]] * 3
    assert len(list((tmp_path / "cache" / "listops").iterdir())) == 1  # one cache, built once
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]  # no leftover temporary dirs


def test_concurrent_generation_with_separate_caches(tmp_path):
    """Runs sharing data_dir but not cache_dir: the generated folder's own lock keeps them apart."""
    assert prepare_concurrently(tmp_path, ["cache0", "cache1", "cache2"]) == [[300, 30, 30]] * 3
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]
