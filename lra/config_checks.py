"""Config values that cannot work, refused before anything is built, in one line naming the key.

Without these, such values fail deep inside PyTorch or Lightning (a ZeroDivisionError for zero heads,
an OverflowError in the learning-rate schedule for a run without an end), fail only once the data is
built or training has started (a negative learning rate, a validation interval of 0), or run absurdly
(a negative gradient-clipping norm flips the gradients; more threads than cores make every step wait
for a core).
"""

from __future__ import annotations

import math
from pathlib import Path

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from data.cache import check_folder
from lra.errors import ConfigError, LRAError
from lra.resources import machine_cores
from lra.schedule import SCHEDULES

POSITIVE_MODEL_KEYS = ("dim", "depth", "num_heads", "ffn_dim", "max_len", "vocab_size", "num_classes")
# Upper bounds of the sizes the model allocates: beyond them a run ends in a multi-line allocator error
# (or builds layers for hours), so they are refused in one line instead. Each is far past any LRA model:
# the longest LRA input (Path-X) is 16,384 tokens, the published models have dim 64-512 and depth 2-6.
MODEL_MAXIMA = {
    "max_len": (2**20, "(the longest LRA input, Path-X, is 16384 tokens)"),
    "dim": (2**16, ""),
    "ffn_dim": (2**18, ""),
    "head_hidden_dim": (2**18, "or null (model.ffn_dim)"),
    "vocab_size": (2**24, ""),
    "num_classes": (2**20, ""),
    "num_heads": (2**16, ""),
    "depth": (2**10, ""),
}
# Bounds on what every example of a batch allocates.
BATCH_MAX = 2**20
MAX_LEN_MAX = MODEL_MAXIMA["max_len"][0]
# The most parameters a model may have (8.6 billion: 137 GB with Adam's state in float32), so that
# sizes each within its bound cannot multiply into an allocator error either.
MAX_PARAMETERS = 2**33
# Lightning's precision settings (Trainer(precision=...)).
PRECISIONS = (
    "32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true", "32", "16", "bf16", "64",
    "transformer-engine", "transformer-engine-float16",
)  # fmt: skip
SEED_MAX = 2**32 - 1  # numpy's seeds are unsigned 32-bit integers
# Folder settings, checked where they are set (data.* usually follow data_dir and cache_dir).
FOLDER_KEYS = ("data_dir", "cache_dir", "data.path", "data.cache_dir", "data.generated_path")


def check_config(cfg: DictConfig) -> None:
    check_model(cfg)
    check_steps(cfg)
    check_trainer(cfg)  # before check_run: checkpoint_every_n_steps follows trainer.val_check_interval
    check_run(cfg)
    check_data(cfg)
    check_optim(cfg)
    check_folders(cfg)


def check_model(cfg: DictConfig) -> None:
    for key in POSITIVE_MODEL_KEYS:
        if key in cfg.model:
            most, fix = MODEL_MAXIMA[key]
            _integer(f"model.{key}", cfg.model[key], least=1, limit=most, fix=fix)
    if cfg.model.dim % cfg.model.num_heads:
        raise ConfigError(
            f"model.dim={cfg.model.dim} is not divisible by model.num_heads={cfg.model.num_heads}"
        )
    if "dropout" in cfg.model:
        _number("model.dropout", cfg.model.dropout, least=0.0, below=1.0, fix="a probability in [0, 1)")
    if cfg.model.get("embedding_init_std") is not None:
        _number(
            "model.embedding_init_std", cfg.model.embedding_init_std, above=0.0, fix="a positive std, or null"
        )
    if cfg.model.get("head_hidden_dim") is not None:
        most, fix = MODEL_MAXIMA["head_hidden_dim"]
        _integer("model.head_hidden_dim", cfg.model.head_hidden_dim, least=1, limit=most, fix=fix)
    _check_parameters(cfg.model)


def _check_parameters(model: DictConfig) -> None:
    """Refuse sizes that together make a model too large to allocate, naming the largest of them."""
    sizes = {key: model.get(key) for key in ("dim", "depth", "ffn_dim", "max_len", "vocab_size")}
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in sizes.values()):
        return  # a key this model does not have (or one set by the task later)
    dim, depth, ffn = sizes["dim"], sizes["depth"], sizes["ffn_dim"]
    head = model.get("head_hidden_dim") or ffn
    # Token and position embeddings, per block attention projections and the feed-forward layers, head.
    params = (sizes["vocab_size"] + sizes["max_len"]) * dim + depth * (4 * dim * dim + 2 * dim * ffn)
    params += 2 * dim * head
    if params > MAX_PARAMETERS:
        shown = ", ".join(f"model.{k}={v}" for k, v in sizes.items())
        raise ConfigError(
            f"{shown} make a model of about {params / 1e9:.3g} billion parameters, more than the "
            f"{MAX_PARAMETERS / 1e9:.3g} billion allowed (with Adam's state, 16 bytes each in float32); set "
            f"model.dim, model.depth, model.ffn_dim or model.max_len smaller"
        )


def check_steps(cfg: DictConfig) -> None:
    steps, epochs = cfg.trainer.get("max_steps"), cfg.trainer.get("max_epochs")
    for key, value in (("trainer.max_steps", steps), ("trainer.max_epochs", epochs)):
        if value is not None:
            _integer(key, value, fix="(-1: no limit)")
    total = cfg.get("optim", {}).get("total_steps")
    if _unbounded(steps) and _unbounded(epochs):
        raise ConfigError(
            f"trainer.max_steps={steps} with trainer.max_epochs={epochs} never ends, and the learning-rate "
            f"schedule needs an end; set trainer.max_steps to a positive number of steps"
        )
    if total is not None:
        _integer("optim.total_steps", total, fix="or null (trainer.max_steps)")
    if total is not None and total <= 0 and _unbounded(steps):
        raise ConfigError(f"optim.total_steps={total} must be positive (or null: trainer.max_steps)")


def check_run(cfg: DictConfig) -> None:
    """The run's own keys: seed, threads, checkpoint and speed-measurement schedules."""
    if cfg.get("seed") is not None:
        _integer("seed", cfg.seed, least=0, most=SEED_MAX)
    if cfg.get("threads") is not None:
        _within_cores("threads", cfg.threads, "torch intra-op threads")
    if "checkpoint_every_n_steps" in cfg:
        _integer(
            "checkpoint_every_n_steps",
            cfg.checkpoint_every_n_steps,
            least=1,
            fix="(it follows trainer.val_check_interval unless set)",
        )
    if "speed_warmup_steps" in cfg:
        _integer("speed_warmup_steps", cfg.speed_warmup_steps, least=0)


def check_data(cfg: DictConfig) -> None:
    data = cfg.data
    _integer("data.batch_size", data.get("batch_size"), least=1, limit=BATCH_MAX)
    if data.get("eval_batch_size") is not None:
        _integer(
            "data.eval_batch_size",
            data.eval_batch_size,
            least=1,
            limit=BATCH_MAX,
            fix="or null (data.batch_size)",
        )
    if data.get("num_workers") is not None:
        _integer("data.num_workers", data.num_workers, least=0, fix="(0: load in the main process), or null")
    if data.get("workers") is not None:
        _within_cores("data.workers", data.workers, "data-preparation processes")
    if data.get("split_seed") is not None:
        _integer("data.split_seed", data.split_seed, least=0, most=SEED_MAX)
    data_len, model_len = data.get("max_len"), cfg.model.get("max_len")
    if data_len is not None:
        _integer("data.max_len", data_len, least=1, limit=MAX_LEN_MAX, fix="or null (model.max_len)")
        if isinstance(model_len, int) and data_len > model_len:
            raise ConfigError(
                f"data.max_len={data_len} is longer than model.max_len={model_len}, the longest input the "
                f"model's positions cover; set data.max_len={model_len} or less (or model.max_len={data_len})"
            )


def check_optim(cfg: DictConfig) -> None:
    optim = cfg.get("optim") or {}
    if "schedule" in optim and optim.schedule not in SCHEDULES:
        raise ConfigError(f"optim.schedule={optim.schedule!r} must be one of {'|'.join(SCHEDULES)}")
    if "lr" in optim:
        _number("optim.lr", optim.lr, least=0.0, fix="a learning rate such as 1e-4")
    if "weight_decay" in optim:
        _number("optim.weight_decay", optim.weight_decay, least=0.0, fix="0 for none")
    if "eps" in optim:
        _number("optim.eps", optim.eps, above=0.0, fix="a small positive number such as 1e-6")
    if "warmup_steps" in optim:
        _integer("optim.warmup_steps", optim.warmup_steps, least=0, fix="(0: no warmup)")
    betas = optim.get("betas")
    if betas is not None:
        if not hasattr(betas, "__len__") or isinstance(betas, str) or len(betas) != 2:
            raise ConfigError(f"optim.betas={betas} must be two numbers in [0, 1), such as [0.9, 0.999]")
        for i, beta in enumerate(betas):
            _number(f"optim.betas[{i}]", beta, least=0.0, below=1.0, fix="in [0, 1), such as [0.9, 0.999]")


def check_trainer(cfg: DictConfig) -> None:
    trainer = cfg.trainer
    interval = trainer.get("val_check_interval")
    if interval is not None:
        if isinstance(interval, float):
            _number(
                "trainer.val_check_interval",
                interval,
                above=0.0,
                most=1.0,
                fix="a number of steps (an integer), or a fraction of an epoch in (0, 1]",
            )
        else:
            _integer("trainer.val_check_interval", interval, least=1, fix="(validate every N steps)")
    if "accumulate_grad_batches" in trainer:
        _integer("trainer.accumulate_grad_batches", trainer.accumulate_grad_batches, least=1, fix="(1: none)")
    if trainer.get("gradient_clip_val") is not None:
        _number("trainer.gradient_clip_val", trainer.gradient_clip_val, least=0.0, fix="or null for none")
    if "log_every_n_steps" in trainer:
        _integer("trainer.log_every_n_steps", trainer.log_every_n_steps, least=0)
    if trainer.get("check_val_every_n_epoch") is not None:
        _integer("trainer.check_val_every_n_epoch", trainer.check_val_every_n_epoch, least=1, fix="or null")
    precision = trainer.get("precision")
    if precision is not None and str(precision) not in PRECISIONS:
        raise ConfigError(
            f"trainer.precision={precision!r} is not a precision Lightning knows; use one of "
            f"{', '.join(PRECISIONS[:5])} (or trainer=cpu_bf16 / trainer=gpu)"
        )
    if str(trainer.get("devices")) == "0":
        raise ConfigError("trainer.devices=0 runs on no device; set trainer.devices=1 (or auto)")


def check_folders(cfg: DictConfig) -> None:
    """Folder settings that are files (or lie inside one): refused here, where the key is known, rather
    than as a traceback from the first mkdir of data preparation."""
    for key in FOLDER_KEYS:
        node, _, leaf = key.rpartition(".")
        parent = cfg.get(node) if node else cfg
        value = parent.get(leaf) if parent is not None else None
        if key == "data.generated_path" and cfg.data.get("source") == "release":
            continue  # never written
        if isinstance(value, str) and value:
            check_folder(Path(value), key)


def _integer(
    key: str,
    value,
    least: int | None = None,
    most: int | None = None,
    fix: str = "",
    limit: int | None = None,
) -> None:
    """``key=value`` must be an integer within [least, most], and not above ``limit`` (a size's bound,
    named only when it is passed); the message says what would work."""
    ok = isinstance(value, int) and not isinstance(value, bool)
    if ok and (least is None or value >= least) and (most is None or value <= most):
        if limit is not None and value > limit:
            raise ConfigError(f"{key}={value!r} must be at most {limit}" + (f" {fix}" if fix else ""))
        return
    if least is not None and most is not None:
        want = f"an integer from {least} to {most}"
    elif least == 1:
        want = "a positive integer"
    elif least is not None:
        want = f"an integer >= {least}"
    else:
        want = "an integer"
    raise ConfigError(f"{key}={value!r} must be {want}" + (f" {fix}" if fix else ""))


def _number(
    key: str,
    value,
    least: float | None = None,
    above: float | None = None,
    below: float | None = None,
    most: float | None = None,
    fix: str = "",
) -> None:
    """``key=value`` must be a finite number within the bounds given; ``fix`` says what would work."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (least is None or value >= least) and (above is None or value > above)
    ok = ok and (below is None or value < below) and (most is None or value <= most)
    if not ok:
        bounds = [
            f">= {least}" if least is not None else "",
            f"> {above}" if above is not None else "",
            f"< {below}" if below is not None else "",
            f"<= {most}" if most is not None else "",
        ]
        want = " and ".join(b for b in bounds if b)
        raise ConfigError(f"{key}={value!r} must be a finite number {want}" + (f": {fix}" if fix else ""))


def _within_cores(key: str, value, what: str) -> None:
    """A count of threads or processes: at least 1, and no more than the cores this process may use.
    Refused rather than clamped: one beyond them waits for a core at every parallel region, which slows
    every step many times over (lra/resources.py), and a silently changed setting would make the run's
    recorded compute differ from what was asked for."""
    cores, source = machine_cores()
    _integer(key, value, least=1, fix="or null (chosen from the cores this run may use)")
    if value > cores:
        raise ConfigError(
            f"{key}={value} asks for more {what} than the {cores} core(s) this process may use "
            f"({source}); set {key}={cores} or fewer, or {key}=null to choose from the cores"
        )


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
