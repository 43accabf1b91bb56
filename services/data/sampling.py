"""Seeded uniform sampling without replacement, and the sample cache.

`sample_indices(rows, n, seed)` is a pure function of its arguments: Floyd's algorithm
draws n distinct rows in O(n) time and memory, then a Fisher–Yates shuffle puts them in
a uniformly random order, both driven by SplitMix64 and unbiased bounded integers
(Lemire's method with rejection). Python integers make it exact and identical on every
platform, backend, process and restart; numpy is not used because its generators do not
promise the same streams across releases. The first k rows of a sample are themselves a
uniform sample of k rows.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from livecalc.data.v1 import data_pb2, data_service_pb2
from services.data.schema import ColumnSpec

MASK64: Final = (1 << 64) - 1
GOLDEN: Final = 0x9E3779B97F4A7C15
#: Stream domain constant, so sample streams differ from the scenario generator's.
SAMPLE_DOMAIN: Final = 0x5A4D504C45524F57


class SplitMix64:
    """SplitMix64 (Steele, Lea & Flood 2014): a tiny, well-mixed, seekable 64-bit stream."""

    def __init__(self, seed: int) -> None:
        self._state = (seed ^ SAMPLE_DOMAIN) & MASK64

    def next(self) -> int:
        self._state = (self._state + GOLDEN) & MASK64
        z = self._state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)

    def below(self, bound: int) -> int:
        """Uniform integer in [0, bound), exactly (Lemire 2019, with rejection)."""
        m = self.next() * bound
        low = m & MASK64
        if low < bound:
            threshold = ((1 << 64) - bound) % bound
            while low < threshold:
                m = self.next() * bound
                low = m & MASK64
        return m >> 64


def sample_indices(rows: int, n: int, seed: int) -> npt.NDArray[np.int64]:
    """n distinct row numbers in [0, rows), uniformly chosen and uniformly ordered."""
    if not 0 <= n <= rows:
        raise ValueError(f"n must be in 0..{rows}, got {n}")
    rng = SplitMix64(seed)
    chosen: set[int] = set()
    out: list[int] = []
    for j in range(rows - n, rows):  # Floyd: each subset equally likely
        t = rng.below(j + 1)
        if t in chosen:
            t = j
        chosen.add(t)
        out.append(t)
    for i in range(n - 1, 0, -1):  # Fisher–Yates: each order equally likely
        k = rng.below(i + 1)
        out[i], out[k] = out[k], out[i]
    return np.asarray(out, dtype=np.int64)


_CELL_FIELD: Final = {
    data_pb2.COLUMN_TYPE_INT64: "int64_value",
    data_pb2.COLUMN_TYPE_FLOAT64: "float64_value",
    data_pb2.COLUMN_TYPE_STRING: "string_value",
    data_pb2.COLUMN_TYPE_BOOL: "bool_value",
}


def add_rows(
    response: data_service_pb2.SampleRowsResponse,
    table: pa.Table,
    row_numbers: npt.NDArray[np.int64],
    columns: Sequence[ColumnSpec],
) -> None:
    """Append the rows to `response` as typed cells following `columns` (the table holds each).

    Cells are created inside the response (`add`), never as messages of their own: each
    stand-alone message carries an arena of its own, which made 50,000 rows cost ~300 MB.
    """
    values = [table.column(c.name).to_pylist() for c in columns]
    fields = [_CELL_FIELD.get(c.type) for c in columns]
    rows = response.rows
    for i, number in enumerate(row_numbers.tolist()):
        cells = rows.add(row=number).cells
        for field, column in zip(fields, values, strict=True):
            v = column[i]
            if v is None:
                cells.add()
            elif field is None:  # a type the contract does not name: its text
                cells.add(string_value=str(v))
            else:
                cells.add(**{field: v})


@dataclass
class _Cached:
    expires: float
    payload: bytes


class SampleCache:
    """Serialized sample answers for `ttl` seconds, bounded in total bytes (LRU)."""

    def __init__(
        self, *, ttl: float = 300.0, max_bytes: int = 64 << 20, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl = ttl
        self.max_bytes = max_bytes
        self._clock = clock
        self._items: OrderedDict[Hashable, _Cached] = OrderedDict()
        self._bytes = 0

    def get(self, key: Hashable) -> bytes | None:
        item = self._items.get(key)
        if item is None:
            return None
        if item.expires <= self._clock():
            self._drop(key)
            return None
        self._items.move_to_end(key)
        return item.payload

    def put(self, key: Hashable, payload: bytes) -> None:
        if len(payload) > self.max_bytes:
            return
        if key in self._items:
            self._drop(key)
        self._items[key] = _Cached(self._clock() + self.ttl, payload)
        self._bytes += len(payload)
        now = self._clock()
        for old in [k for k, v in self._items.items() if v.expires <= now]:
            self._drop(old)
        while self._bytes > self.max_bytes:
            self._drop(next(iter(self._items)))

    def _drop(self, key: Hashable) -> None:
        item = self._items.pop(key)
        self._bytes -= len(item.payload)

    def __len__(self) -> int:
        return len(self._items)
