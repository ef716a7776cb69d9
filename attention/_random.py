"""Counter-based random numbers: a value is a hash of (seed, index...), not a position in a stream.

Sparse and hashing attentions draw random structure (BigBird's random blocks, Reformer's rotations)
whose *shape* depends on the padded length of the batch. Drawn from a stream, the numbers a sequence
gets would change with that length; hashed from their own indices they do not, so a sequence gets the
same random blocks and rotations alone or padded inside any batch. One seed per forward is drawn from
torch's global generator (:func:`draw_seed`), so ``torch.manual_seed`` reproduces a forward exactly.

In evaluation mode a module uses a fixed seed instead (:func:`forward_seed`): its ``eval_seed`` buffer,
drawn once at construction (so it follows the run's seed and is saved in checkpoints), which makes
evaluation deterministic and independent of the evaluation batch size.

The hash works on int64 tensors with every intermediate below 2^48 (multiplications modulo the prime
2^31 - 1, alternated with xor-shifts), so it is exact on every device.
"""

from __future__ import annotations

import math

import torch

PRIME = 2**31 - 1
_MULTIPLIERS = (48271, 69621, 39373, 16807)


def _mix(x: torch.Tensor) -> torch.Tensor:
    for multiplier in _MULTIPLIERS:
        x = (x * multiplier) % PRIME
        x = x ^ (x >> 15)
    return x


def draw_seed(device) -> torch.Tensor:
    """One seed from torch's global (CPU) generator, as a 0-d int64 tensor on ``device``."""
    return torch.randint(0, PRIME, (), dtype=torch.int64).to(device)


def eval_seed() -> torch.Tensor:
    """A seed for a module's ``eval_seed`` buffer, from torch's global generator."""
    return torch.randint(0, PRIME, (), dtype=torch.int64)


def forward_seed(module: torch.nn.Module, device) -> torch.Tensor:
    """Training: a fresh seed from torch's global generator every forward; evaluation: the module's
    ``eval_seed`` buffer."""
    if module.training:
        return draw_seed(device)
    return module.eval_seed.to(device)


def counter_hash(seed: torch.Tensor, *indices: torch.Tensor) -> torch.Tensor:
    """Integers in [0, 2^31 - 1) from a seed and broadcastable non-negative integer index tensors."""
    h = _mix(seed.to(torch.int64) % PRIME + 1)
    for index in indices:
        h = _mix((h + index.to(torch.int64) % PRIME) % PRIME)
    return h


def counter_uniform(seed: torch.Tensor, *indices: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """Uniform numbers in (0, 1), one per broadcast index."""
    return ((counter_hash(seed, *indices).to(torch.float64) + 0.5) / PRIME).to(dtype)


def counter_normal(seed: torch.Tensor, *indices: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """Standard normal numbers (Box-Muller on two hashed uniforms), one per broadcast index."""
    u1 = counter_uniform(
        seed, *indices, torch.zeros((), dtype=torch.int64, device=seed.device), dtype=torch.float64
    )
    u2 = counter_uniform(
        seed, *indices, torch.ones((), dtype=torch.int64, device=seed.device), dtype=torch.float64
    )
    return (torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)).to(dtype)
