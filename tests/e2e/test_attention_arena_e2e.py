"""End to end: every attention config of the registry trains through ``run.py -m`` (one sweep, a few
steps each on a tiny generated ListOps), and Performer's feature redraw is driven by the training loop's
per-step hook."""

from __future__ import annotations

import json
from types import SimpleNamespace

import torch

from attention.performer import PerformerAttention
from lra.callbacks import AttentionDiagnostics
from lra.registry import attention_names, small_overrides
from tests.helpers.cli import run_cli


def test_every_attention_trains_in_one_sweep(listops_args, tmp_path):
    names = attention_names()
    overrides = ["trainer.max_steps=2", "trainer.val_check_interval=2", "trainer.log_every_n_steps=1"]
    run_cli(
        "-m",
        *listops_args,
        *overrides,
        f"attention={','.join(names)}",
        "logger=csv",
        f"hydra.sweep.dir={tmp_path}",
    )
    records = {}
    for path in tmp_path.glob("*/results.json"):
        record = json.loads(path.read_text())
        records[record["attention"]] = record
    assert sorted(records) == names
    for record in records.values():
        assert record["status"] == "completed" and record["global_step"] == 2
        assert 0.0 <= record["test_acc"] <= 1.0


def test_performer_features_are_redrawn_by_the_training_loop_hook():
    torch.manual_seed(0)
    cores = [PerformerAttention(2, 8, num_features=16, redraw_interval=2) for _ in range(2)]
    model = SimpleNamespace(named_attention=lambda: ((f"layer{i}", c) for i, c in enumerate(cores)))
    pl_module = SimpleNamespace(model=model)
    before = [c.projection.clone() for c in cores]
    callback = AttentionDiagnostics()
    for step in (0, 1):
        callback.on_train_batch_start(SimpleNamespace(global_step=step), pl_module, None, step)
    assert all(torch.equal(c.projection, b) for c, b in zip(cores, before, strict=True))
    callback.on_train_batch_start(SimpleNamespace(global_step=2), pl_module, None, 2)
    assert not any(torch.equal(c.projection, b) for c, b in zip(cores, before, strict=True))
    assert not torch.equal(cores[0].projection, cores[1].projection)  # each layer draws its own


def test_every_attention_predicts_the_same_at_any_eval_batch_size(tmp_path):
    """A model's test predictions are the same one sequence at a time and 64 at a time (different
    padding), for every attention: outputs never depend on the batch, and the randomised ones use their
    fixed evaluation seed."""
    from hydra import compose, initialize_config_dir

    from lra.train import build_model
    from tests.helpers.cli import REPO
    from tests.helpers.listops import generated_listops

    dm = generated_listops(tmp_path, max_len=300, num_test=48)
    lengths = [dm.splits["test"].num_tokens(i) for i in range(len(dm.splits["test"].labels))]
    assert max(lengths) > 64 > min(lengths)  # blocks, windows and buckets really differ with padding
    for name in attention_names():
        # Blocks, windows, buckets, landmarks and features of at most 16 (the registry's size knobs):
        # every variant's blocked, windowed or approximate path runs at these lengths.
        small = [f"attention.{key}={value}" for key, value in small_overrides(name).items()]
        with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
            cfg = compose("config", [f"attention={name}", "model.max_len=300", "model.dropout=0", *small])
        torch.manual_seed(0)
        model = build_model(cfg).eval()

        one, many = _predict(model, dm, 1), _predict(model, dm, 48)
        torch.testing.assert_close(one, many, rtol=1e-4, atol=1e-5, msg=name)


def _predict(model, dm, batch_size: int) -> torch.Tensor:
    dm.eval_batch_size = batch_size
    with torch.no_grad():
        return torch.cat([model(b["input_ids"], b["mask"]) for b in dm.test_dataloader()])
