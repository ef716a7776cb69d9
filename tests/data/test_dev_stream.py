"""Validation on a stream of dev batches (``data.val_examples``), as the published code validates:
each validation takes the next N examples of an endless reshuffled stream of the dev split, and a
resumed run continues the stream where the checkpoint left it."""

from __future__ import annotations

import pytest
import torch

from data.errors import ConfigError
from data.sampling import DevStream
from lra.compare.collect import read_curves
from tests.helpers.listops import STEPS, VAL_EVERY, learnable_listops
from tests.helpers.runs import read_record, train_here


def test_each_validation_takes_the_next_examples_of_reshuffled_passes():
    size, examples, seed = 10, 7, 3
    # Written out: pass p is randperm(size) seeded with seed * 1_000_003 + p, passes end to end.
    passes = [
        torch.randperm(size, generator=torch.Generator().manual_seed(seed * 1_000_003 + p)).tolist()
        for p in range(4)
    ]
    stream = [i for order in passes for i in order]
    sampler = DevStream(size, examples, batch_size=3, seed=seed)
    for v in range(5):  # 35 examples: validations 2 and 3 cross into passes 1 and 2
        batches = list(sampler)
        assert [len(b) for b in batches] == [3, 3, 1] and len(sampler) == 3
        assert [i for b in batches for i in b] == stream[v * examples : (v + 1) * examples]
    assert sampler.position == 5 * examples
    # A sampler started at a position continues the same stream.
    later = [i for b in DevStream(size, examples, 3, seed=seed, position=14) for i in b]
    assert later == stream[14:21]


@pytest.mark.parametrize("bad", [0, -3, 2.5, "all"])
def test_a_bad_val_examples_names_the_key(tmp_path, bad):
    args = learnable_listops(tmp_path / "data")
    with pytest.raises(ConfigError, match="data.val_examples"):
        train_here(tmp_path / "run", *args, f"data.val_examples={bad}")


def test_a_resumed_run_continues_the_dev_stream(tmp_path):
    """24 of the 64 dev examples per validation (passes cross every few validations): a run stopped
    at step 16 and resumed validates on exactly the examples the uninterrupted run saw."""
    args = [*learnable_listops(tmp_path / "data"), "data.val_examples=24"]
    curves = ("val/acc", "val/loss", "train/loss")
    train_here(tmp_path / "whole", *args)
    train_here(tmp_path / "a", *args, "trainer.max_steps=16")
    ckpt = torch.load(tmp_path / "a" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["ListOpsDataModule"] == {"dev_stream_position": 24 * (16 // VAL_EVERY)}
    train_here(tmp_path / "b", *args, f"ckpt_path={tmp_path / 'a' / 'checkpoints' / 'last.ckpt'}")
    assert read_curves(tmp_path / "b", curves) == read_curves(tmp_path / "whole", curves)
    whole, resumed = read_record(tmp_path / "whole"), read_record(tmp_path / "b")
    assert resumed["global_step"] == STEPS
    assert {k: resumed[k] for k in ("best_val_acc", "best_step", "test_acc")} == {
        k: whole[k] for k in ("best_val_acc", "best_step", "test_acc")
    }
    # ...and the stream is not the whole split every time: the curve differs from a full validation.
    train_here(tmp_path / "full", *learnable_listops(tmp_path / "data"))
    assert read_curves(tmp_path / "full", ("val/loss",)) != read_curves(tmp_path / "whole", ("val/loss",))


def test_a_checkpoint_from_before_the_setting_existed_resumes_with_its_default(tmp_path):
    """Checkpoints written before data.val_examples existed record no such key: they resume with the
    default (the whole dev split, what they did), and are refused with another value."""
    from lra.errors import ConfigError as PipelineConfigError
    from lra.module import RUN_IDENTITY_KEY

    args = learnable_listops(tmp_path / "data")
    train_here(tmp_path / "a", *args, "trainer.max_steps=8")
    ckpt = torch.load(tmp_path / "a" / "checkpoints" / "last.ckpt", weights_only=True)
    del ckpt[RUN_IDENTITY_KEY]["data"]["val_examples"]
    old = tmp_path / "old.ckpt"
    torch.save(ckpt, old)
    with pytest.raises(PipelineConfigError, match="data.val_examples=null vs 24"):
        train_here(tmp_path / "b", *args, "data.val_examples=24", f"ckpt_path={old}")
    train_here(
        tmp_path / "c", *args, "trainer.max_steps=12", f"optim.total_steps={STEPS}", f"ckpt_path={old}"
    )
    assert read_record(tmp_path / "c")["global_step"] == 12
