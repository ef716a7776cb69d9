"""What a step asks of a device, whatever the device: the ATen operators it dispatches and the bytes
autograd keeps for its backward.

Eager PyTorch runs every dispatched operator as its own kernel, except those that only make a view
(``view``, ``transpose``, ``expand``, ...: metadata, no kernel). So the operators that are not views
count the kernel launches of an eager step on a GPU, which is what makes many small operators slow
there whatever their arithmetic. Both counts are reported: ``ops`` (kernels) and ``ops_all`` (every
dispatched operator, views included). The count is the same on every device; a compiled module is one
call into generated code, so it is counted for eager modules only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch.utils._python_dispatch import TorchDispatchMode


class _Counter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.kernels = 0
        self.views = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.is_view:
            self.views += 1
        else:
            self.kernels += 1
        return func(*args, **(kwargs or {}))


def count_ops(fn: Callable[[], object]) -> dict[str, int]:
    """``{"ops": kernels, "ops_all": every operator}`` that one call of ``fn`` dispatches (its
    backward included when ``fn`` runs one)."""
    with _Counter() as counter:
        fn()
    return {"ops": counter.kernels, "ops_all": counter.kernels + counter.views}


def saved_bytes(fn: Callable[[], object], exclude: Iterable[torch.Tensor] = ()) -> int:
    """Bytes of the distinct storages autograd saves for backward during ``fn()``, leaving out those
    of ``exclude`` (the inputs and parameters, which live anyway): the activations a step keeps."""
    skip = {t.untyped_storage().data_ptr() for t in exclude}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in skip:
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())
