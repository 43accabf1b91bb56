"""Byte layout of the buffers the engine places in one linear memory.

A `LayoutBuilder` hands out 16-byte aligned regions from a start offset upwards (a bump
allocator); the result is an immutable `Layout` of named regions. The same layout code
serves the WASM host (offsets in the SharedMemory) and the native baseline (offsets from a
numpy buffer's base), which is why models only ever see offsets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

ALIGN: Final = 16


def align_up(value: int, alignment: int = ALIGN) -> int:
    return -(-value // alignment) * alignment


@dataclass(frozen=True)
class Region:
    """``size`` bytes at byte ``offset`` (a multiple of 16) of the memory."""

    name: str
    offset: int
    size: int

    @property
    def end(self) -> int:
        return self.offset + self.size


@dataclass(frozen=True)
class Layout:
    """Named regions in increasing offset order; ``end`` is the first byte after the last."""

    regions: tuple[Region, ...]
    start: int
    end: int
    _by_name: dict[str, Region] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._by_name.update({r.name: r for r in self.regions})

    def __getitem__(self, name: str) -> Region:
        return self._by_name[name]

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def describe(self) -> str:
        """One line per region: offset, size, name (for logs and docs)."""
        return "\n".join(f"{r.offset:#012x} {r.size:>12} {r.name}" for r in self.regions)


class LayoutBuilder:
    """Allocates 16-byte aligned, non-overlapping regions upwards from ``start``."""

    def __init__(self, start: int) -> None:
        self._start = align_up(start)
        self._next = self._start
        self._regions: list[Region] = []
        self._names: set[str] = set()

    def add(self, name: str, size: int) -> Region:
        if name in self._names:
            raise ValueError(f"region {name!r} allocated twice")
        if size < 0:
            raise ValueError(f"region {name!r} has negative size {size}")
        region = Region(name, self._next, size)
        self._regions.append(region)
        self._names.add(name)
        self._next = align_up(self._next + max(size, 1))
        return region

    def add_array(self, name: str, shape: tuple[int, ...], dtype: npt.DTypeLike) -> Region:
        return self.add(name, int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize)

    @property
    def end(self) -> int:
        return self._next

    def build(self) -> Layout:
        return Layout(tuple(self._regions), self._start, self._next)
