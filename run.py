"""Entry point: ``python run.py task=listops attention=spectral_shift`` (see README)."""

from __future__ import annotations

import os
import secrets
import sys

import hydra
from omegaconf import DictConfig

from lra.registry import store_knob_defaults

# Each attention's knob defaults live in its class; Hydra sees them as the attention_knobs group.
store_knob_defaults()

# With no options at all, a run that suits any machine: the quick pipeline check (a minute or two on a
# CPU) rather than a full ListOps run (hours on a CPU). The main job names its task and attention.
BARE_RUN = ["experiment=quick", "attention=spectral_shift"]


def with_defaults(argv: list[str]) -> list[str]:
    return [*argv, *BARE_RUN] if len(argv) == 1 else argv


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    from lra.cli import run_from_hydra

    return run_from_hydra(cfg)


if __name__ == "__main__":
    # Names this start's run folder with the time (conf/config.yaml): two runs started in the same
    # moment (the clock's resolution can be coarse) still get folders of their own.
    os.environ["LRA_RUN_TOKEN"] = secrets.token_hex(3)
    if len(sys.argv) == 1:
        print(
            f"no options: the quick pipeline check ({' '.join(BARE_RUN)}); the main job is "
            "python run.py task=listops attention=spectral_shift (--help lists the options)",
            file=sys.stderr,
        )
    sys.argv = with_defaults(sys.argv)
    main()
