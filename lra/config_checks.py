"""Config values that cannot work, refused before anything is built, in one line naming the key.

Without these, such values fail deep inside PyTorch or Lightning (a ZeroDivisionError for zero heads,
an OverflowError in the learning-rate schedule for a run without an end).
"""

from __future__ import annotations

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from lra.errors import ConfigError, LRAError

POSITIVE_MODEL_KEYS = ("dim", "depth", "num_heads", "ffn_dim", "max_len")


def check_config(cfg: DictConfig) -> None:
    for key in POSITIVE_MODEL_KEYS:
        value = cfg.model.get(key)
        if isinstance(value, int) and value < 1:
            raise ConfigError(f"model.{key}={value} must be a positive integer")
    if cfg.model.dim % cfg.model.num_heads:
        raise ConfigError(
            f"model.dim={cfg.model.dim} is not divisible by model.num_heads={cfg.model.num_heads}"
        )
    steps, epochs = cfg.trainer.get("max_steps"), cfg.trainer.get("max_epochs")
    total = cfg.get("optim", {}).get("total_steps")
    if _unbounded(steps) and _unbounded(epochs):
        raise ConfigError(
            f"trainer.max_steps={steps} with trainer.max_epochs={epochs} never ends, and the learning-rate "
            f"schedule needs an end; set trainer.max_steps to a positive number of steps"
        )
    if total is not None and total <= 0 and _unbounded(steps):
        raise ConfigError(f"optim.total_steps={total} must be positive (or null: trainer.max_steps)")


def _unbounded(value) -> bool:
    return value is None or value <= 0


def check_compatible(cfg: DictConfig, datamodule) -> None:
    """The model's task fields must fit the data."""
    vocab = getattr(datamodule, "vocab_size", None)
    if vocab is not None and cfg.model.get("embedding", "token") == "token" and cfg.model.vocab_size < vocab:
        raise ConfigError(
            f"model.vocab_size={cfg.model.vocab_size} is smaller than the data's vocabulary "
            f"({vocab} tokens); set model.vocab_size={vocab}"
        )
    classes = getattr(datamodule, "num_classes", None)
    if classes is not None and cfg.model.num_classes != classes:
        raise ConfigError(f"model.num_classes={cfg.model.num_classes} but the task has {classes} classes")


def instantiate_checked(node: DictConfig, group: str, **kwargs):
    """``hydra.utils.instantiate`` whose constructor errors arrive as one line: Hydra wraps them in a
    multi-line InstantiationException; a ValueError or TypeError from a constructor is a bad value or
    an unknown key of ``group``."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as exc:
        cause = exc.__cause__
        if isinstance(cause, (LRAError, FileNotFoundError)):
            raise cause from None
        if isinstance(cause, ValueError):  # the constructors' messages name their key
            raise ConfigError(str(cause)) from exc
        if isinstance(cause, TypeError):  # an override that is no parameter of the class
            raise ConfigError(
                f"{cause} (building {group}: check the keys given on the command line)"
            ) from exc
        raise
