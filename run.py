"""Entry point: ``python run.py task=listops attention=spectral_shift`` (see README)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    from lra.cli import run_from_hydra

    return run_from_hydra(cfg)


if __name__ == "__main__":
    main()
