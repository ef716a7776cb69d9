"""Capture the q, k, v (and padding mask) that reach each attention layer of a trained model.

Forward pre-hooks on the modules yielded by ``model.named_attention()`` record the call's arguments;
nothing in the model changes. A checkpoint is loaded through ``LRAModule.load_from_checkpoint`` with
the model rebuilt from the run's resolved config (``results.json`` or ``.hydra/config.yaml`` in the
run directory, the checkpoint's grandparent), and fed a batch of its own task's validation data.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn


@contextmanager
def record_attention_inputs(named_modules: Iterable[tuple[str, nn.Module]]):
    """Yield a dict ``layer -> list of (q, k, v, mask)`` filled by every forward inside the block."""
    captured: dict[str, list[tuple]] = {}
    handles = []

    def hook_for(name):
        def hook(module, args, kwargs):
            names = ("q", "k", "v", "key_padding_mask")
            values = dict(zip(names, args, strict=False)) | {k: kwargs[k] for k in names if k in kwargs}
            mask = values.get("key_padding_mask")
            captured.setdefault(name, []).append(
                tuple(t.detach().cpu() for t in (values["q"], values["k"], values["v"]))
                + (None if mask is None else mask.detach().cpu(),)
            )

        return hook

    try:
        for name, module in named_modules:
            handles.append(module.register_forward_pre_hook(hook_for(name), with_kwargs=True))
        yield captured
    finally:
        for h in handles:
            h.remove()


def capture_model(model: nn.Module, batch: dict) -> dict[str, list[tuple]]:
    """Run ``model(**batch)`` once (eval mode, no grad) and return what each attention layer received."""
    model.eval()
    with torch.no_grad(), record_attention_inputs(model.named_attention()) as captured:
        model(**{k: v for k, v in batch.items() if k != "label"})
    return captured


def run_config(checkpoint: Path):
    """The resolved config of the run that wrote ``checkpoint`` (``<run>/checkpoints/x.ckpt``)."""
    from omegaconf import OmegaConf

    run_dir = Path(checkpoint).resolve().parent.parent
    results = run_dir / "results.json"
    if results.is_file():
        cfg = json.loads(results.read_text()).get("config")
        if cfg:
            return OmegaConf.create(cfg)
    hydra_cfg = run_dir / ".hydra" / "config.yaml"
    if hydra_cfg.is_file():
        return OmegaConf.load(hydra_cfg)
    raise FileNotFoundError(
        f"no results.json or .hydra/config.yaml in {run_dir}: --checkpoint must point into a run directory "
        "written by run.py (<run dir>/checkpoints/<name>.ckpt)"
    )


def load_checkpoint_model(checkpoint: Path) -> tuple[nn.Module, object]:
    """Rebuild the run's model, load the checkpoint's weights, return (model, config)."""
    from lra.module import LRAModule
    from lra.train import build_model

    cfg = run_config(checkpoint)
    module = LRAModule.load_from_checkpoint(str(checkpoint), model=build_model(cfg), map_location="cpu")
    return module.model, cfg


def validation_batch(cfg, batch_size: int) -> dict:
    """The batch of the run's own validation data (the data module from its config) with the longest
    sequences: evaluation batches are formed from neighbouring lengths, so this is where attention
    works at the task's full length."""
    from hydra.utils import instantiate

    datamodule = instantiate(cfg.data, batch_size=batch_size, eval_batch_size=batch_size, num_workers=0)
    datamodule.prepare_data()
    datamodule.setup("validate")
    return max(datamodule.val_dataloader(), key=lambda batch: int(batch["mask"].sum(dim=1).max()))


def capture_checkpoint(checkpoint: Path, batch_size: int = 4) -> dict[str, list[tuple]]:
    model, cfg = load_checkpoint_model(checkpoint)
    return capture_model(model, validation_batch(cfg, batch_size))
