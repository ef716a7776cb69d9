"""One run per run directory: a run claims its folder before writing anything into it.

Two runs that shared a folder would overwrite each other's record, mix their checkpoints and fight
over one CSV log. The default folder names are unique per start (``conf/config.yaml``: the time and
a random token ``run.py`` draws), and a run claims its folder by creating ``.hydra/`` in it, which only
one process can do (``mkdir`` is atomic). A folder already claimed, one holding anything but Hydra's
``run.log`` (another run's record or checkpoints, other runs, a user's files), or a folder inside
another run's is refused in one line before anything in it changes.

Hydra's own copy of the config is switched off (``hydra.output_subdir: null``), since Hydra would
write it before any check; the claim writes the same three files once it holds the folder. Under DDP
only rank 0 claims: the other ranks are started by Lightning into the same folder.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from lra.errors import ConfigError


class RunDirectoryTaken(ConfigError):
    """The folder belongs to another run (or holds other things): nothing was written into it."""


CLAIM = ".hydra"
# What a run leaves in its folder: any of these means the folder belongs to a run already.
RUN_FILES = ("results.json", "checkpoints", "csv", "wandb")
# The log Hydra opens in the folder before any of our code runs.
HYDRA_LOG = "run.log"


def claim(run_dir: Path, cfg: DictConfig) -> None:
    """Make ``run_dir`` this run's own, or refuse in one line (``ConfigError``) if another run has it."""
    if rank_zero_only.rank != 0:
        return
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirectoryTaken(f"hydra.run.dir={run_dir} is a file; give a folder for the run")
    taken = [name for name in (CLAIM, *RUN_FILES) if (run_dir / name).exists()]
    inside = next((p for p in run_dir.resolve().parents if (p / CLAIM / "config.yaml").is_file()), None)
    if inside is not None:
        raise RunDirectoryTaken(
            f"the run directory {run_dir} is inside the folder of another run ({inside}); name a folder "
            f"outside it"
        )
    others = sorted(p.name for p in run_dir.iterdir() if p.name != HYDRA_LOG) if run_dir.is_dir() else []
    if others and not taken:
        raise RunDirectoryTaken(
            f"the run directory {run_dir} is not empty (it holds {', '.join(others[:4])}"
            f"{' and more' if len(others) > 4 else ''}); a run starts in a new or empty folder: leave "
            f"hydra.run.dir at its default (unique per run) or name a new folder"
        )
    if not taken:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / CLAIM).mkdir()
        except FileExistsError:  # another process claimed it a moment ago
            taken = [CLAIM]
        except OSError as exc:
            raise RunDirectoryTaken(
                f"cannot create the run directory {run_dir}: {exc.strerror or exc}"
            ) from None
    if taken:
        last = run_dir / "checkpoints" / "last.ckpt"
        requeued = os.environ.get("SLURM_RESTART_COUNT", "0") not in ("", "0") and last.is_file()
        fix = (
            f"this looks like a requeued SLURM job: start it again with ckpt_path={last} (it resumes "
            f"in a new folder)"
            if requeued
            else "leave hydra.run.dir at its default (unique per run) or name a new folder"
        )
        raise RunDirectoryTaken(
            f"the run directory {run_dir} already belongs to another run (it holds {', '.join(taken)}); "
            f"each run needs a folder of its own: {fix}"
        )
    _save_configs(run_dir / CLAIM, cfg)


def _save_configs(folder: Path, cfg: DictConfig) -> None:
    """What Hydra would have saved: the composed config, Hydra's own and the command-line overrides."""
    from hydra.core.hydra_config import HydraConfig

    OmegaConf.save(cfg, folder / "config.yaml")
    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        OmegaConf.save(OmegaConf.create({"hydra": hydra_cfg}), folder / "hydra.yaml")
        OmegaConf.save(hydra_cfg.overrides.task, folder / "overrides.yaml")
