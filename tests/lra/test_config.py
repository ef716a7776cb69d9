"""Config composition: every group option composes, resolves and builds; bad overrides fail cleanly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from lra.registry import compose
from lra.train import build_model
from tests.helpers.cli import REPO, run_cli

CONF = REPO / "conf"


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def composed(*overrides: str):
    return compose(list(overrides))


@pytest.mark.parametrize("task", options("task"))
@pytest.mark.parametrize("attention", options("attention"))
def test_every_task_and_attention_composes_and_builds(task, attention):
    cfg = composed(f"task={task}", f"attention={attention}")
    OmegaConf.resolve(cfg)  # every interpolation resolves
    assert cfg.task.name == task and cfg.attention.name == attention
    assert cfg.model.max_len > 0 and cfg.model.num_classes >= 2
    model = build_model(cfg)
    n = 64
    x = torch.randint(0, cfg.model.vocab_size, (2, n))
    mask = torch.ones(2, n, dtype=torch.bool)
    extra = {"input_ids2": x, "mask2": mask} if cfg.model.two_towers else {}
    assert model(x, mask, **extra).shape == (2, cfg.model.num_classes)


@pytest.mark.parametrize("group", ["trainer", "logger", "experiment"])
def test_every_other_group_option_composes(group):
    for option in options(group):
        cfg = composed(f"{group}={option}")
        OmegaConf.resolve(cfg)
        if group == "trainer":
            assert cfg.trainer._target_.endswith("Trainer")


def test_data_dir_follows_lra_data(monkeypatch, tmp_path):
    monkeypatch.setenv("LRA_DATA", str(tmp_path))
    cfg = composed("task=listops")
    assert Path(cfg.data.path) == tmp_path / "listops-1000"


def test_data_and_caches_stay_out_of_the_source_tree_by_default(monkeypatch):
    """Without LRA_DATA, generated data and caches go under outputs/ (git-ignored, beside the runs),
    never into the `data/` package."""
    monkeypatch.delenv("LRA_DATA", raising=False)
    cfg = composed("task=listops")
    for path in (cfg.data.path, cfg.data.generated_path, cfg.data.cache_dir):
        assert Path(path).parts[0] == "outputs", path


def test_task_fields_reach_model_and_trainer():
    cfg = composed("task=listops")
    assert (cfg.model.vocab_size, cfg.model.num_classes, cfg.model.max_len) == (16, 10, 2000)
    assert cfg.optim.total_steps == cfg.trainer.max_steps == 5000
    assert cfg.data.max_len == cfg.model.max_len


def test_cli_help_and_cfg_job():
    import yaml

    help_out = run_cli("--help").stdout
    assert all(name in help_out for name in ("listops", "softmax", "spectral_shift"))
    job = yaml.safe_load(run_cli("--cfg", "job", "attention=softmax").stdout)
    assert job["attention"]["_target_"] == "attention.softmax.SoftmaxAttention"


@pytest.mark.parametrize(
    "override, message",
    [("task=no_such_task", "no_such_task"), ("no_such_key=1", "no_such_key")],
)
def test_a_bad_override_fails_naming_it_without_a_traceback(override, message):
    proc = run_cli(override, check=False)
    assert proc.returncode != 0
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_help_names_the_project_and_how_to_run_it():
    import subprocess
    import sys

    from tests.helpers.cli import REPO

    out = subprocess.run(
        [sys.executable, "run.py", "--help"], cwd=REPO, capture_output=True, text=True
    ).stdout
    assert out.startswith("LRA harness: efficient attention against exact softmax")
    assert "bigbird" in out and "python run.py task=listops --cfg job" in out


def test_quick_runs_are_apart_from_full_runs_in_wandb():
    quick, full = composed("experiment=quick"), composed("task=listops")
    assert quick.logger.wandb.group == "listops-quick" != full.logger.wandb.group
    assert "quick" in quick.logger.wandb.tags and quick.logger.wandb.name.endswith("/quick")


def test_a_bare_run_is_the_quick_pipeline_check():
    """``python run.py`` alone runs something that suits any machine; any option leaves it alone."""
    import run

    assert run.with_defaults(["run.py"]) == ["run.py", "experiment=quick", "attention=spectral_shift"]
    assert run.with_defaults(["run.py", "task=listops"]) == ["run.py", "task=listops"]
    cfg = composed(*run.with_defaults(["run.py"])[1:])
    assert cfg.trainer.max_steps == 300 and cfg.attention.name == "spectral_shift"
