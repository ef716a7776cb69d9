"""Tiny ListOps: the overrides of seconds-long runs on sets made by the real generator, a set-up data
module on a generated set, and a tiny release written in the release's TSV format."""

from __future__ import annotations

from pathlib import Path

# A tiny ListOps set made by the real generator (seconds), shared by every test that trains on one.
TINY_LISTOPS_DATA = (
    "data.generate.num_train=96",
    "data.generate.num_val=40",
    "data.generate.num_test=40",
    "data.generate.min_length=10",
    "data.generate.max_length=120",
    "data.generate.max_depth=5",
    "data.workers=1",
)


def tiny_listops(data_dir: Path) -> list[str]:
    """Overrides for a seconds-long ListOps run on a tiny generated set (the real generator and loader)."""
    return [
        "task=listops",
        "experiment=quick",
        f"data_dir={data_dir}",
        *TINY_LISTOPS_DATA,
        "data.batch_size=16",
        "model.max_len=128",
        "trainer.max_steps=8",
        "trainer.val_check_interval=4",
        "trainer.log_every_n_steps=2",
        "optim.warmup_steps=2",
        "speed_warmup_steps=1",
    ]


# The shape of ``learnable_listops``'s run: its steps, validated every VAL_EVERY in VAL_BATCHES batches,
# and its test's batches.
STEPS, VAL_EVERY, VAL_BATCHES, TEST_BATCHES = 40, 4, 4, 3


def learnable_listops(data_dir: Path) -> list[str]:
    """40 steps of a ListOps small enough to learn in them (the best moves at several validations),
    validated every 4 steps in 4 batches, checkpointed every 3, logged every 5 (so that a curve point
    out of step with its value shows), on one thread (so that the numbers are bit-for-bit
    repeatable)."""
    return [
        *tiny_listops(data_dir),
        "data.generate.num_train=160",
        "data.generate.num_val=64",
        "data.generate.min_length=3",
        "data.generate.max_length=40",
        "data.generate.max_depth=2",
        "data.eval_batch_size=16",
        "model.max_len=64",
        f"trainer.max_steps={STEPS}",
        f"optim.total_steps={STEPS}",
        f"trainer.val_check_interval={VAL_EVERY}",
        "checkpoint_every_n_steps=3",
        "optim.lr=3e-3",
        "trainer.log_every_n_steps=5",
        "trainer.enable_progress_bar=false",
        "logger=csv",
        "threads=1",
    ]


def write_release(root, n_train=10, n_val=5, n_test=7):
    """A tiny ListOps release (``basic_{train,val,test}.tsv``) of three example rows repeated."""
    from data.listops_generator import write_tsv

    root.mkdir(parents=True, exist_ok=True)
    rows = [("( ( ( [MAX 2 ) 9 ) ] )", 9), ("( ( ( [SM 9 ) ( ( ( [MIN 3 ) 4 ) ] ) ) ] )", 2), ("7", 7)]
    for split, n in (("train", n_train), ("val", n_val), ("test", n_test)):
        write_tsv(root / f"basic_{split}.tsv", [rows[i % len(rows)] for i in range(n)])
    return root


def module(tmp_path, **kw):
    """A ListOps data module reading the release under ``tmp_path / "listops-1000"`` (``kw`` overrides)."""
    from data.listops import ListOpsDataModule

    args = dict(
        path=tmp_path / "listops-1000",
        generated_path=tmp_path / "generated",
        cache_dir=tmp_path / "cache",
        source="release",
        max_len=100,
        batch_size=4,
        eval_batch_size=4,
    )
    return ListOpsDataModule(**{**args, **kw})


def generated_listops(tmp_path: Path, max_len: int, num_test: int):
    """A set-up ListOps data module on a small generated set whose test lengths span 10..max_len."""
    from data.listops import ListOpsDataModule

    dm = ListOpsDataModule(
        path=str(tmp_path / "release"),
        generated_path=str(tmp_path / "gen"),
        cache_dir=str(tmp_path / "cache"),
        source="generate",
        max_len=max_len,
        generate={
            "num_train": 8,
            "num_val": 8,
            "num_test": num_test,
            "min_length": 10,
            "max_length": max_len,
        },
        workers=1,
    )
    dm.prepare_data()
    dm.setup()
    return dm
