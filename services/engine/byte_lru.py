"""A small in-memory cache bounded by bytes: least recently used entries dropped first.

What an engine keeps between chunks in its own memory (scenario sets read from the data
service, scenarios a generator made) is kept this way: a value larger than the bound alone is
not kept at all, and a new one pushes out the oldest until the total fits.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class ByteLru(Generic[K, V]):
    """Values by key, at most ``max_bytes`` of them by ``size`` (a value's bytes)."""

    def __init__(self, max_bytes: int, size: Callable[[V], int]) -> None:
        self.max_bytes = max_bytes
        self._size = size
        self._values: OrderedDict[K, V] = OrderedDict()

    @property
    def size_bytes(self) -> int:
        return sum(self._size(v) for v in self._values.values())

    def get(self, key: K) -> V | None:
        """The value kept for ``key`` (now the most recently used), or None."""
        found = self._values.get(key)
        if found is not None:
            self._values.move_to_end(key)
        return found

    def put(self, key: K, value: V) -> None:
        """Keep ``value`` (replacing the key's), unless it alone passes the bound."""
        if self._size(value) > self.max_bytes:
            return
        self._values[key] = value
        self._values.move_to_end(key)
        while self.size_bytes > self.max_bytes:
            self._values.popitem(last=False)
