"""Check a ``ckpt_path`` before a run uses it: a training checkpoint read with PyTorch's safe
unpickler, written by a run of the same experiment, whose parameters fit this model, and whose best
checkpoint can still be found.

A resumed run must be the run it continues: its record carries that run's best and is reported as
one run. So every checkpoint records the run's identity (``lra.module.RUN_IDENTITY_KEY``): the task,
the data (settings and a fingerprint of its content, not its path), the attention, the model, the
optimisation, the seed and the trainer settings that change what is computed. A resume compares it
with the current run's and refuses any difference in one line. ``resume_check=false`` starts a new
run from the checkpoint's weights instead (fine-tuning: a fresh optimiser and schedule, no inherited
best, recorded as ``initialized_from``); the shape check always applies.
"""

from __future__ import annotations

import json
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from lra import run_files
from lra.checkpointing import best_state, inherited_best
from lra.errors import CheckpointError, ConfigError
from lra.module import RUN_IDENTITY_KEY

MAX_LISTED = 4


# Settings that change how the network computes, not what: the conv skip's implementation, and compiling
# (the same state_dict, outputs equal within float tolerance). A checkpoint resumes across them (and
# checkpoints written before such a key existed still resume), and the dashboard (lra/compare/variants.py
# derives its entries from this tuple) does not split rows on them. Declared here only. Paths are not
# compared either: the data's content fingerprint is, so a moved data folder resumes and other data
# under the same path does not.
HOW_NOT_WHAT = ("attention.conv_impl", "model.compile", "model.compile_mode")


def _what(group: str, node: dict) -> dict:
    """``node`` (the config group ``group``) without its how-not-what keys."""
    return {k: v for k, v in node.items() if f"{group}.{k}" not in HOW_NOT_WHAT}


# Settings added after runs were recorded, each with the value that does what those runs did: a
# checkpoint or a run record without the key reads as having this value (resume checks, dashboard rows).
ADDED_LATER = {"data.val_examples": None, "data.grey": "pil", "data.mask_black_pixels": False}
# Settings that no longer exist (their variant was removed); what older records say about them is
# ignored: attention.num_samples belonged to spectral shift's removed sampled normaliser.
REMOVED_LATER = ("attention.num_samples",)
DATA_HOW_NOT_WHAT = (
    "path",
    "generated_path",
    "cache_dir",
    "num_workers",
    "workers",
    "pin_memory",
    "pad_to_multiple",
)
# The trainer settings that change what a step computes or when validation happens.
TRAINER_WHAT = (
    "precision",
    "accumulate_grad_batches",
    "gradient_clip_val",
    "gradient_clip_algorithm",
    "val_check_interval",
    "check_val_every_n_epoch",
    "limit_train_batches",
    "limit_val_batches",
    "devices",
    "num_nodes",
    "strategy",
)


def run_identity(cfg: DictConfig, data_fingerprint: str | None = None) -> dict[str, Any]:
    """What a checkpoint must match to be resumed (see the module's docstring)."""
    container = OmegaConf.to_container(cfg, resolve=True)
    attention = container.get("attention") or {}
    data = container.get("data") or {}
    trainer = container.get("trainer") or {}
    identity = {
        "task": {"name": str(cfg.task.name)},
        "attention": _what("attention", attention),
        "model": _what("model", container.get("model") or {}),
        "data": {k: v for k, v in data.items() if k not in DATA_HOW_NOT_WHAT},
        "optim": container.get("optim") or {},
        "seed": container.get("seed"),
        "trainer": {k: trainer[k] for k in TRAINER_WHAT if k in trainer},
    }
    if data_fingerprint is not None:
        identity["data"]["fingerprint"] = data_fingerprint
    return identity


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint's content, read with PyTorch's safe unpickler (tensors and plain Python values
    only: a crafted file cannot run code), or a one-line error when it is not a training checkpoint."""
    unreadable = CheckpointError(
        f"ckpt_path={path} is not a checkpoint this harness can read; point it at "
        f"<run dir>/checkpoints/last.ckpt"
    )
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive; anything else is not ours
        raise unreadable
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # a pickle of something else than tensors and plain values
        named = re.search(r"GLOBAL ([\w.]+)", str(exc))
        raise CheckpointError(
            f"ckpt_path={path} is not a checkpoint this harness wrote: it holds objects other than tensors "
            f"and plain values{f' ({named.group(1)})' if named else ''}, and loading it could run code, so "
            f"it was not loaded"
        ) from None
    except Exception as exc:  # a truncated or damaged archive
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
        raise CheckpointError(f"{unreadable} ({type(exc).__name__}: {first})") from None
    if not isinstance(ckpt, dict) or not {"state_dict", "global_step"} <= set(ckpt):
        raise CheckpointError(
            f"ckpt_path={path} is not a training checkpoint (no state_dict / global_step in it); "
            f"point it at <run dir>/checkpoints/last.ckpt"
        )
    return ckpt


def recorded_identity(ckpt: dict, path: Path) -> dict | None:
    """The identity stored in the checkpoint, else (older checkpoints) the config Hydra saved in the
    run directory the checkpoint sits in, read as another run's file (:mod:`lra.run_files`: bounded, with
    references between its keys resolved and nothing else evaluated)."""
    if isinstance(ckpt.get(RUN_IDENTITY_KEY), dict):
        return ckpt[RUN_IDENTITY_KEY]
    hydra_config = Path(path).resolve().parent.parent / ".hydra" / "config.yaml"
    try:
        saved = run_files.resolve_references(run_files.load_yaml(hydra_config))
        attention = saved["attention"]
        return {
            "task": {"name": str(saved["task"]["name"])},
            "attention": _what("attention", attention),
            "model": _what("model", saved["model"]),
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # no config this version can read
        return None


def _flatten(tree: Any, prefix: str = "") -> dict[str, str]:
    if isinstance(tree, dict) and tree:
        out: dict[str, str] = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): json.dumps(tree, sort_keys=True, default=str)}


def differences(saved: dict, current: dict) -> list[str]:
    """``key=checkpoint value vs this run's value`` for every key that differs; a different task or
    attention (``*.name``) first, since only the first few are listed and that says the most. Only the
    sections the checkpoint recorded are compared (older checkpoints recorded fewer)."""
    a = _flatten({k: v for k, v in saved.items() if k in current})
    b = _flatten({k: v for k, v in current.items() if k in saved})
    for key, value in ADDED_LATER.items():
        if key in b and key not in a and key.split(".")[0] in saved:
            a[key] = json.dumps(value)
    for key in REMOVED_LATER:
        a.pop(key, None)
    keys = sorted(set(a) | set(b), key=lambda k: (not k.endswith(".name"), k))
    return [f"{k}={a.get(k, '<unset>')} vs {b.get(k, '<unset>')}" for k in keys if a.get(k) != b.get(k)]


def _listed(items: list[str]) -> str:
    more = f" and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else ""
    return ", ".join(items[:MAX_LISTED]) + more


def check_identity(ckpt: dict, path: Path, cfg: DictConfig, data_fingerprint: str | None = None) -> None:
    saved = recorded_identity(ckpt, path)
    if saved is None:
        raise CheckpointError(
            f"ckpt_path={path} records no task/attention/model config and has no .hydra/config.yaml beside "
            f"its run, so it cannot be checked against this run; set resume_check=false to start a new run "
            f"from its weights"
        )
    diff = differences(saved, run_identity(cfg, data_fingerprint))
    if len(diff) == 1 and diff[0].startswith("optim.total_steps="):
        planned = diff[0].split("=", 1)[1].split(" vs ")[0]
        raise ConfigError(
            f"ckpt_path={path} was trained with a learning-rate schedule of {planned} steps, and "
            f"trainer.max_steps changes it to {diff[0].split(' vs ')[-1]}; to train it further on its own "
            f"schedule add optim.total_steps={planned}, or set resume_check=false to start a new run from "
            f"its weights"
        )
    if diff:
        raise ConfigError(
            f"ckpt_path={path} was trained with other settings (checkpoint vs this run: {_listed(diff)}); "
            f"resume with the same settings, or set resume_check=false to start a new run from its "
            f"weights (fine-tuning)"
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


def check_checkpoint(
    ckpt: dict[str, Any],
    path: Path,
    cfg: DictConfig,
    model_state: dict[str, torch.Tensor],
    data_fingerprint: str | None = None,
) -> tuple[str, Any, int | None] | None:
    """Everything that must hold before the checkpoint ``ckpt`` (read from ``path`` by
    :func:`load_checkpoint`) is used in this run. For a resume (``resume_check``, training), also that
    the best checkpoint it names is there and whole; returns that best (file, score, step), else None."""
    path = Path(path)
    if cfg.get("resume_check", True):
        check_identity(ckpt, path, cfg, data_fingerprint)
    check_shapes(ckpt["state_dict"], model_state, path)
    if not (cfg.get("resume_check", True) and cfg.get("train", True)):
        return None
    state = best_state(ckpt)
    found = inherited_best(state, path) if state is not None else None
    if found is not None:  # the file the resumed run will test: a whole, safe checkpoint too
        try:
            check_shapes(load_checkpoint(Path(found[0]))["state_dict"], model_state, Path(found[0]))
        except CheckpointError as exc:
            raise CheckpointError(f"the best checkpoint of {path} cannot be used: {exc}") from None
    return found
