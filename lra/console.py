"""Keep the console to lines that help: drop third-party notices that say nothing about the run.

Dropped: Lightning's advertisement for its cloud logger, its note that checkpoints are loaded with
``weights_only=False`` (they are this harness's own files), a deprecation warning Lightning
itself triggers inside its pytree helper, and the model summary's note that it sizes a bf16-mixed
model's parameters as 32-bit (they are: mixed precision keeps the parameters in fp32). W&B's warning about the ``anonymous`` setting is avoided
at the source (lra.loggers). Everything else, warnings included, is kept.
"""

from __future__ import annotations

import logging
import warnings

NOISE = ("litlogger", "`weights_only` was not set")
NOISY_LOGGERS = (
    "pytorch_lightning.utilities.rank_zero",
    "pytorch_lightning.trainer.connectors.checkpoint_connector",
    "lightning_fabric.utilities.rank_zero",
)


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(noise in message for noise in NOISE)


def quiet_third_party_notices() -> None:
    for name in NOISY_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNoise) for f in logger.filters):
            logger.addFilter(_DropNoise())
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    warnings.filterwarnings("ignore", message=r"Precision bf16-mixed is not supported by the model summary")
