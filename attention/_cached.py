"""``cached``: a lazily computed attribute that ``torch.compile`` can trace.

``functools.cached_property`` takes an ``RLock`` on Python 3.11, and Dynamo cannot enter a lock: every
read of one breaks the graph. This descriptor computes the value on first read and stores it in the
instance's ``__dict__``, which then shadows it (a non-data descriptor), with no lock; the objects it
serves live for one forward pass in one thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class cached:  # noqa: N801 - used as a decorator, like the property it stands in for
    def __init__(self, compute: Callable[[Any], Any]):
        self.compute = compute
        self.name = compute.__name__
        self.__doc__ = compute.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:
            return self
        value = self.compute(obj)
        obj.__dict__[self.name] = value
        return value
