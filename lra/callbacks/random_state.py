"""The random-number state travels in every checkpoint, so a resumed run draws the same dropout masks
as the run it continues would have (``seed_everything`` alone restarts the stream from the seed)."""

from __future__ import annotations

import random

import numpy as np
import torch
from pytorch_lightning import Callback

from lra.errors import CheckpointError


class RandomState(Callback):
    """Saves the Python, NumPy, torch CPU and CUDA generator states with each checkpoint and restores
    them when training resumes from one. Under DDP the checkpoint holds rank 0's state."""

    def state_dict(self) -> dict:
        # Plain types and tensors only: Lightning loads checkpoints with torch's weights_only
        # unpickler, which refuses NumPy objects.
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        state = {
            "python": random.getstate(),
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
            "torch": torch.get_rng_state(),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        try:
            random.setstate(state_dict["python"])
            kind, keys, pos, has_gauss, gauss = state_dict["numpy"]
            np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
            torch.set_rng_state(state_dict["torch"])
            if "cuda" in state_dict and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(state_dict["cuda"])
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
            raise CheckpointError(
                f"the checkpoint's random-number state is damaged ({type(exc).__name__}: {str(exc)[:120]}); "
                f"it cannot be resumed exactly"
            ) from None
