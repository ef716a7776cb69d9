"""Capture the q, k, v (and padding mask) that reach each attention layer of a trained model.

Forward pre-hooks on the modules yielded by ``model.named_attention()`` record the call's arguments;
nothing in the model changes. A checkpoint's weights are read with torch's weights-only unpickler into
the model rebuilt from the run's resolved config (``results.json`` or ``.hydra/config.yaml`` in the
run directory, the checkpoint's grandparent; only the registered classes are built), and fed a batch
of its own task's validation data.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from lra.errors import CheckpointError, ConfigError, LRAError


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


# What rebuilding a run needs from its config; nothing else of a recorded config is read.
BUILD_KEYS = ("task", "attention", "model", "data")


# The one resolver a Hydra config of this harness uses (data_dir: ${oc.env:LRA_DATA,outputs/data}); others
# (oc.create, oc.decode, ...) turn text into structure and are not evaluated from a file.
ALLOWED_RESOLVERS = ("oc.env",)


def _check_resolvers(node, where: Path, path: str = "") -> None:
    stack = [(node, path)]
    while stack:
        node, path = stack.pop()
        if isinstance(node, dict):
            stack.extend((v, f"{path}.{k}".lstrip(".")) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(node))
        elif isinstance(node, str):
            for name in re.findall(r"\$\{\s*([\w.\-]+)\s*:", node):
                if name not in ALLOWED_RESOLVERS:
                    raise ConfigError(
                        f"{where}: {path} uses the resolver {name!r}; only {', '.join(ALLOWED_RESOLVERS)} is "
                        "evaluated in a run's saved config"
                    )


def run_config(checkpoint: Path):
    """The resolved config of the run that wrote ``checkpoint`` (``<run>/checkpoints/x.ckpt``), as
    far as rebuilding its model and data needs it, checked against the registries
    (:func:`lra.registry.check_buildable`): a recorded config is input, and must not choose what
    gets called."""
    from omegaconf import OmegaConf

    from lra.registry import check_buildable
    from lra.run_files import load_yaml, read_text

    run_dir = Path(checkpoint).resolve().parent.parent
    results = run_dir / "results.json"
    container, where = None, None
    if results.is_file():
        try:
            record = json.loads(read_text(results))
        except (OSError, ValueError, RecursionError) as exc:
            first = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
            raise ConfigError(f"{results}: unreadable ({first}); cannot rebuild the run's model") from None
        cfg = record.get("config") if isinstance(record, dict) else None
        if cfg:
            if not isinstance(cfg, dict):
                raise ConfigError(f"{results}: config is {type(cfg).__name__}, not a mapping")
            container, where = {k: cfg.get(k) for k in BUILD_KEYS}, str(results)
    hydra_cfg = run_dir / ".hydra" / "config.yaml"
    if container is None and hydra_cfg.is_file():
        # Hydra's copy is unresolved by design (${data_dir}, ${model.max_len}): resolved here, only
        # where the build reads, and checked after resolving (a resolver can make a mapping).
        try:
            raw = load_yaml(hydra_cfg)
            _check_resolvers(raw, hydra_cfg)
            loaded = OmegaConf.create(raw)
            container = {
                k: OmegaConf.to_container(loaded[k], resolve=True) for k in BUILD_KEYS if k in loaded
            }
        except ConfigError:
            raise
        except Exception as exc:  # unresolvable interpolations, YAML errors
            first = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
            raise ConfigError(f"{hydra_cfg}: cannot read the run's config ({first})") from None
        where = str(hydra_cfg)
    if container is None:
        raise FileNotFoundError(
            f"no results.json or .hydra/config.yaml in {run_dir}: --checkpoint must point into a run "
            "directory written by run.py (<run dir>/checkpoints/<name>.ckpt)"
        )
    check_buildable(container, where)
    return OmegaConf.create(container)


def load_weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The model's parameters in ``checkpoint``, read with torch's weights-only unpickler (tensors
    and plain data; a pickled object that would run code is refused). LRAModule keeps the model
    under ``model.``, which is stripped."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise CheckpointError(f"--checkpoint {checkpoint}: no such file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pickle-protocol notices: the error below says enough
            ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as exc:  # other formats, truncated files, pickles of anything but tensors
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        # torch's message starts with advice to load with weights_only=False: the reason is further down.
        reason = next((line for line in lines if "GLOBAL" in line or "Unsupported" in line), None)
        reason = reason or (lines[0] if lines else "")
        raise CheckpointError(
            f"--checkpoint {checkpoint}: not a checkpoint this harness reads ({type(exc).__name__}: "
            f"{reason[:160]}); only tensors and plain data are loaded"
        ) from None
    state = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
    weights = (
        {
            k.removeprefix("model."): v
            for k, v in state.items()
            if isinstance(k, str) and k.startswith("model.")
        }
        if isinstance(state, dict)
        else {}
    )
    if not weights:
        raise CheckpointError(
            f"--checkpoint {checkpoint}: no model weights in it (a training checkpoint has a state_dict "
            "with model.* entries); give <run dir>/checkpoints/<name>.ckpt"
        )
    return weights


def load_checkpoint_model(checkpoint: Path) -> tuple[nn.Module, object]:
    """Rebuild the run's model, load the checkpoint's weights, return (model, config)."""
    from lra.train import build_model

    cfg = run_config(checkpoint)
    weights = load_weights(checkpoint)
    try:
        model = build_model(cfg)
    except LRAError:
        raise
    except Exception as exc:  # the classes are ours, the values are whatever the run recorded
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise ConfigError(
            f"--checkpoint {checkpoint}: its run's config does not build a model ({type(exc).__name__}: {first})"
        ) from None
    try:
        model.load_state_dict(weights)
    except (RuntimeError, TypeError, ValueError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise CheckpointError(
            f"--checkpoint {checkpoint}: its weights do not fit the model of its run's config ({first})"
        ) from None
    return model, cfg


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
