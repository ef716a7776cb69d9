"""Check a ``ckpt_path`` before resuming from it: a readable training checkpoint, written by a run of
the same task, attention and model, whose parameters fit this model.

Parameter names alone do not identify a model (a softmax checkpoint loads into a Nyström model
without its convolution), so every checkpoint records the run's task, attention and model config
(``lra.module.RUN_IDENTITY_KEY``) and a resume compares it with the current run's. ``resume_check=false``
skips that comparison, to fine-tune from another configuration; the shape check always applies.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from lra.errors import CheckpointError, ConfigError
from lra.module import RUN_IDENTITY_KEY

MAX_LISTED = 4


# Attention keys that change how a layer computes, not what: a checkpoint resumes across them (and
# checkpoints written before such a key existed still resume).
HOW_NOT_WHAT = ("conv_impl",)


def run_identity(cfg: DictConfig) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: the task's name, the attention and the model."""
    attention = OmegaConf.to_container(cfg.attention, resolve=True)
    return {
        "task": {"name": str(cfg.task.name)},
        "attention": {k: v for k, v in attention.items() if k not in HOW_NOT_WHAT},
        "model": OmegaConf.to_container(cfg.model, resolve=True),
    }


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint's content, or a one-line error when it is not a training checkpoint."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # truncated files, other formats, pickles of anything
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
        raise CheckpointError(
            f"ckpt_path={path} is not a checkpoint this harness can read ({type(exc).__name__}: {first}); "
            f"point it at <run dir>/checkpoints/last.ckpt"
        ) from None
    if not isinstance(ckpt, dict) or not {"state_dict", "global_step"} <= set(ckpt):
        raise CheckpointError(
            f"ckpt_path={path} is not a training checkpoint (no state_dict / global_step in it); "
            f"point it at <run dir>/checkpoints/last.ckpt"
        )
    return ckpt


def recorded_identity(ckpt: dict, path: Path) -> dict | None:
    """The identity stored in the checkpoint, else (older checkpoints) the config Hydra saved in the
    run directory the checkpoint sits in."""
    if isinstance(ckpt.get(RUN_IDENTITY_KEY), dict):
        return ckpt[RUN_IDENTITY_KEY]
    hydra_config = Path(path).resolve().parent.parent / ".hydra" / "config.yaml"
    if hydra_config.is_file():
        try:
            return run_identity(OmegaConf.load(hydra_config))
        except Exception:  # unresolvable interpolations of another machine: no record
            return None
    return None


def _flatten(tree: Any, prefix: str = "") -> dict[str, str]:
    if isinstance(tree, dict) and tree:
        out: dict[str, str] = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): json.dumps(tree, sort_keys=True, default=str)}


def differences(saved: dict, current: dict) -> list[str]:
    """``key: checkpoint value -> this run's value`` for every key that differs; a different task or
    attention (``*.name``) first, since only the first few are listed and that says the most."""
    a, b = _flatten(saved), _flatten(current)
    keys = sorted(set(a) | set(b), key=lambda k: (not k.endswith(".name"), k))
    return [f"{k}={a.get(k, '<unset>')} vs {b.get(k, '<unset>')}" for k in keys if a.get(k) != b.get(k)]


def _listed(items: list[str]) -> str:
    more = f" and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else ""
    return ", ".join(items[:MAX_LISTED]) + more


def check_identity(ckpt: dict, path: Path, cfg: DictConfig) -> None:
    saved = recorded_identity(ckpt, path)
    if saved is None:
        raise CheckpointError(
            f"ckpt_path={path} records no task/attention/model config and has no .hydra/config.yaml beside "
            f"its run, so it cannot be checked against this run; set resume_check=false to resume anyway"
        )
    diff = differences(saved, run_identity(cfg))
    if diff:
        raise ConfigError(
            f"ckpt_path={path} was trained with another configuration (checkpoint vs this run: "
            f"{_listed(diff)}); resume with the same task, attention and model, or set resume_check=false "
            f"to load its weights anyway (fine-tuning)"
        )


def check_shapes(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], path: Path) -> None:
    """Refuse, in one line, a checkpoint whose parameters do not fit (instead of a page of mismatches)."""
    wrong = [
        f"{k} {list(v.shape)} vs {list(expected[k].shape)}"
        for k, v in state.items()
        if k in expected and hasattr(v, "shape") and v.shape != expected[k].shape
    ]
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if wrong or missing or unexpected:
        parts = [f"{len(wrong)} with other shapes (checkpoint vs model: {_listed(wrong)})"] if wrong else []
        parts += [f"{len(missing)} missing ({_listed(missing)})"] if missing else []
        parts += [f"{len(unexpected)} unexpected ({_listed(unexpected)})"] if unexpected else []
        raise CheckpointError(f"ckpt_path={path} does not fit this model: parameters {'; '.join(parts)}")


def check_exists(path: Path) -> None:
    if not Path(path).is_file():
        raise ConfigError(f"ckpt_path={path} does not exist; point it at <run dir>/checkpoints/last.ckpt")


def check_resume(path: Path, cfg: DictConfig, model_state: dict[str, torch.Tensor]) -> None:
    """Everything that must hold before Lightning loads ``path`` into this run."""
    path = Path(path)
    check_exists(path)
    ckpt = load_checkpoint(path)
    if cfg.get("resume_check", True):
        check_identity(ckpt, path, cfg)
    check_shapes(ckpt["state_dict"], model_state, path)
