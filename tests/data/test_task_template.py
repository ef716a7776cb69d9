"""A new task is two files and a fixture writer: shown here with a task defined in this test file.

``ParityDataModule`` stands for ``data/<task>.py`` (it implements only the task's own hooks: source,
cache key, build, load), the YAML written by ``task_config`` for ``conf/task/<task>.yaml``, and
``write_parity`` for the fixture writer in ``tests/helpers/formats.py``. The base class's preparation lock,
atomic cache, completeness marker, ``setup`` and loaders do the rest, and ``lra.train.train`` runs it.
docs/tasks.md ("Adding a task") walks through the same example.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from data.base import SPLITS, LRADataModule
from data.cache import file_signature, load_ragged_dataset, save_ragged
from lra.errors import DataFormatError


# -- the task: data/parity.py ---------------------------------------------------------------------------
class ParityDataModule(LRADataModule):
    """Is the number of ones in a bit string odd? Reads ``<path>/{train,val,test}.tsv`` (bits<TAB>label)."""

    num_classes = 2
    vocab_size = 2
    cache_folder = "parity"  # its caches: <cache_dir>/parity/<hash of cache_key>/

    def resolve_source(self) -> Path:
        missing = [s for s in SPLITS if not (self.path / f"{s}.tsv").is_file()]
        if missing:
            raise FileNotFoundError(f"parity: no {missing[0]}.tsv in {self.path} (data.path)")
        return self.path

    def cache_key(self, source: Path) -> list:
        return [str(source.resolve()), [file_signature(source / f"{s}.tsv") for s in SPLITS], self.strict]

    def build(self, source: Path, out: Path) -> dict:
        counts = {}
        for split in SPLITS:
            rows = [line.split("\t") for line in (source / f"{split}.tsv").read_text().splitlines()]
            if any(len(row) != 2 or set(row[0]) - {"0", "1"} for row in rows):
                raise DataFormatError(f"{source / split}.tsv: expected bits<TAB>label rows")
            bits = [[int(c) for c in row[0]] for row in rows]
            save_ragged(out / f"{split}.npz", bits, labels=[int(row[1]) for row in rows])
            counts[split] = len(rows)
        return {"path": str(source), "counts": counts}

    def load(self, cache: Path) -> dict:
        return {s: load_ragged_dataset(cache / f"{s}.npz") for s in SPLITS}

    def source_info(self) -> dict:
        return {"source": "release", "path": str(self.path), "generator": None}


# -- its config: conf/task/parity.yaml ------------------------------------------------------------------
TASK_YAML = """\
# @package _global_
task:
  name: parity
data:
  _target_: tests.data.test_task_template.ParityDataModule
  path: ${data_dir}/parity
  cache_dir: ${cache_dir}
  batch_size: 8
  seed: ${seed}
model:
  vocab_size: 2
  num_classes: 2
  max_len: 32
  dim: 16
  ffn_dim: 32
trainer:
  max_steps: 6
  val_check_interval: 3
  log_every_n_steps: 1
optim:
  warmup_steps: 2
"""


def task_config(conf_dir: Path) -> Path:
    (conf_dir / "task").mkdir(parents=True, exist_ok=True)
    (conf_dir / "task" / "parity.yaml").write_text(TASK_YAML)
    return conf_dir


# -- its fixture writer: tests/helpers/formats.py ----------------------------------------------------------
def write_parity(path: Path, sizes=(48, 16, 16), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True, exist_ok=True)
    for split, n in zip(SPLITS, sizes, strict=True):
        rows = ["".join(map(str, rng.integers(0, 2, int(rng.integers(4, 30))))) for _ in range(n)]
        (path / f"{split}.tsv").write_text("".join(f"{r}\t{r.count('1') % 2}\n" for r in rows))
    return path


# -- what the template gives it -------------------------------------------------------------------------
def module(tmp_path: Path, **kw) -> ParityDataModule:
    return ParityDataModule(path=tmp_path / "parity", cache_dir=tmp_path / "cache", batch_size=8, **kw)


def test_setup_builds_once_and_loads(tmp_path, monkeypatch):
    write_parity(tmp_path / "parity")
    dm = module(tmp_path)
    dm.setup()
    assert [len(dm.splits[s]) for s in SPLITS] == [48, 16, 16]
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape[0] == 8 and batch["mask"].dtype == torch.bool
    assert dm.data_record()["splits"]["val"] == {"examples": 16, "truncated": 0}
    # A second run finds the complete cache: nothing is built again.
    monkeypatch.setattr(ParityDataModule, "build", lambda *a: pytest.fail("built twice"))
    again = module(tmp_path)
    again.setup()
    assert again.data_record()["fingerprint"] == dm.data_record()["fingerprint"]


def test_a_failed_build_leaves_no_cache(tmp_path):
    write_parity(tmp_path / "parity")
    (tmp_path / "parity" / "test.tsv").write_text("0120\t1\n")
    with pytest.raises(DataFormatError, match="bits<TAB>label"):
        module(tmp_path).setup()
    leftovers = list((tmp_path / "cache" / "parity").iterdir())
    assert leftovers == []  # neither a cache nor a partial one
    with pytest.raises(FileNotFoundError, match="no train.tsv"):
        module(tmp_path / "nowhere").setup()


def test_trains_through_the_real_run(tmp_path):
    from lra.train import train
    from tests.helpers.runs import compose_run

    write_parity(tmp_path / "data" / "parity")
    conf = task_config(tmp_path / "conf")
    cfg = compose_run(
        f"hydra.searchpath=[file://{conf}]",
        "task=parity",
        f"data_dir={tmp_path / 'data'}",
        "logger=none",
        "trainer.enable_progress_bar=false",
    )
    record = train(cfg, tmp_path / "run")
    assert record.status == "completed" and record.task == "parity"
    assert record.metrics["global_step"] == 6 and record.metrics["test_acc"] is not None
    assert record.data["splits"]["train"]["examples"] == 48
