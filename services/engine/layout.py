"""Byte layout of the buffers the engine places in one linear memory.

A `LayoutBuilder` hands out 16-byte aligned regions from a start offset upwards (a bump
allocator); the result is an immutable `Layout` of named regions. The same layout code
serves the WASM host (offsets in the SharedMemory) and the native baseline (offsets from a
numpy buffer's base), which is why models only ever see offsets.

The regions of a run are allocated here too, once: `run_base` (where a run's buffers start),
`scenario_buffer`, `projection_regions` and `generator_regions` are what the pipeline and the
model drivers lay out, and what `services.engine.footprint` sums to tell how much memory a job needs
before any engine runs it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from services.engine.abi import ARRAY_SIZE, CTX_SIZE
from services.valuation.blocks import BLOCK_SIZE

ALIGN: Final = 16

STATIC_LIMIT: Final = 1 << 20
"""Models' static data (each model's [__global_base, __heap_base)) must lie below 1 MiB."""

STACK_SIZE: Final = 64 * 1024
"""Bytes of C shadow stack per worker thread."""


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


# ---------------------------------------------------------------------------
# The regions of a run (one source for the engine and for footprint estimates)


def run_base(threads: int) -> int:
    """First byte of a run's buffers: past the models' static data and ``threads`` worker stacks."""
    return align_up(STATIC_LIMIT + threads * STACK_SIZE, 4096)


def scenario_buffer(alloc: LayoutBuilder, name: str, n_scen: int, months: int) -> Region:
    """A scenario input: f64 [n_scen][months], scenario-major."""
    return alloc.add_array(name, (n_scen, months), np.float64)


@dataclass(frozen=True)
class ProjectionShape:
    """What a projection's layout depends on: rows, scenarios, the declaration's arrays."""

    rows: int
    n_scen: int
    n_outputs: int
    columns: tuple[tuple[str, np.dtype[Any]], ...]
    """(name, dtype) of each policy column, declaration order."""
    tables: tuple[tuple[str, tuple[int, ...]], ...]
    """(name, shape) of each table, declaration order."""
    n_params: int
    n_scenario_inputs: int
    row_values: bool = False
    """Lay out row values f64 [rows][n_outputs][n_scen] (a run that asks for them)."""
    n_monthly: int = 0
    """Lay out block cash flows f64 [blocks][n_monthly][n_scen][cash_flow_months] when > 0."""
    cash_flow_months: int = 0
    """Months of a cash-flow profile: the run's n_months + 1 (t = 0 … n_months)."""


def projection_regions(alloc: LayoutBuilder, name: str, shape: ProjectionShape) -> dict[str, Region]:
    """A projection's context, descriptor arrays, parameter slots, policy columns, tables and
    block partials f64 [blocks][n_outputs][n_scen], then, only when the run asks for them, row
    values and block cash flows, in allocation order (the workspace, whose size the model tells
    once its context is written, comes after them)."""
    blocks = -(-shape.rows // BLOCK_SIZE)
    r: dict[str, Region] = {
        "ctx": alloc.add(f"{name}.ctx", CTX_SIZE),
        "columns": alloc.add(f"{name}.columns", ARRAY_SIZE * len(shape.columns)),
        "tables": alloc.add(f"{name}.tables", ARRAY_SIZE * len(shape.tables)),
        "scenario_inputs": alloc.add(f"{name}.scenario_inputs", ARRAY_SIZE * shape.n_scenario_inputs),
        "params": alloc.add(f"{name}.params", 8 * shape.n_params),
    }
    for col, dtype in shape.columns:
        r[f"column.{col}"] = alloc.add_array(f"{name}.column.{col}", (shape.rows,), dtype)
    for table, dims in shape.tables:
        r[f"table.{table}"] = alloc.add_array(f"{name}.table.{table}", dims, np.float64)
    r["partials"] = alloc.add_array(f"{name}.partials", (blocks, shape.n_outputs, shape.n_scen), np.float64)
    if shape.row_values:
        r["row_values"] = alloc.add_array(f"{name}.row_values", (shape.rows, shape.n_outputs, shape.n_scen), np.float64)
    if shape.n_monthly:
        r["cash_flows"] = alloc.add_array(
            f"{name}.cash_flows", (blocks, shape.n_monthly, shape.n_scen, shape.cash_flow_months), np.float64
        )
    return r


def generator_regions(alloc: LayoutBuilder, name: str, *, n_buffers: int, n_params: int) -> dict[str, Region]:
    """A scenario generator's context, its buffers' descriptors and its parameter slots."""
    return {
        "ctx": alloc.add(f"{name}.ctx", CTX_SIZE),
        "scenario_inputs": alloc.add(f"{name}.scenario_inputs", ARRAY_SIZE * n_buffers),
        "params": alloc.add(f"{name}.params", 8 * n_params),
    }
