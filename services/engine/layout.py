"""Byte layout of the buffers the engine places in one linear memory.

A `LayoutBuilder` hands out 16-byte aligned regions from a start offset upwards (a bump
allocator); the result is an immutable `Layout` of named regions. The same layout code
serves the WASM host (offsets in the SharedMemory) and the native baseline (offsets from a
numpy buffer's base), which is why models only ever see offsets.

The regions of a run are allocated here too, once: `run_base` (where a run's buffers start),
`esg_rates`/`esg_context` and `term_life_regions` are what the pipeline and the model drivers
lay out, and what `services.engine.footprint` sums to tell how much memory a job needs
before any engine runs it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

from services.engine.abi import ESG_CTX_SIZE, N_PV, TERM_LIFE_CTX_SIZE
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


@dataclass(frozen=True)
class TableShapes:
    """Sizes of the assumption tables term_life reads (mortality [ages][select+1], lapse, curve)."""

    mortality: tuple[int, int]
    lapse: int
    curve: int


def esg_rates(alloc: LayoutBuilder, name: str, n_scen: int, months: int) -> Region:
    """The scenario generator's output: rates r_s(m), f64 [n_scen][months]."""
    return alloc.add_array(name, (n_scen, months), np.float64)


def esg_context(alloc: LayoutBuilder, name: str) -> Region:
    """The scenario generator's context struct (`lc_esg_ctx`)."""
    return alloc.add(f"{name}.ctx", ESG_CTX_SIZE)


def term_life_regions(
    alloc: LayoutBuilder, name: str, *, rows: int, n_scen: int, months: int, tables: TableShapes, lanes: int
) -> dict[str, Region]:
    """term_life's context, policy columns, tables, per-scenario workspace (``lanes`` scenarios
    interleaved per group) and block partials f64 [blocks][5][n_scen], in allocation order."""
    groups = -(-n_scen // lanes)
    blocks = -(-rows // BLOCK_SIZE)
    r: dict[str, Region] = {"ctx": alloc.add(f"{name}.ctx", TERM_LIFE_CTX_SIZE)}
    for col in ("age_at_entry", "female", "policy_term", "duration_mth"):
        r[col] = alloc.add_array(f"{name}.{col}", (rows,), np.int32)
    for col in ("policy_count", "sum_assured", "premium_pp", "premium_eff"):
        r[col] = alloc.add_array(f"{name}.{col}", (rows,), np.float64)
    r["mortality"] = alloc.add_array(f"{name}.mortality", tables.mortality, np.float64)
    r["lapse"] = alloc.add_array(f"{name}.lapse", (tables.lapse,), np.float64)
    r["curve"] = alloc.add_array(f"{name}.curve", (tables.curve,), np.float64)
    r["q_mth"] = alloc.add_array(f"{name}.q_mth", (2, *tables.mortality), np.float64)
    r["l_base"] = alloc.add_array(f"{name}.l_base", (tables.lapse,), np.float64)
    r["df0"] = alloc.add_array(f"{name}.df0", (months,), np.float64)
    r["maint_infl"] = alloc.add_array(f"{name}.maint_infl", (months,), np.float64)
    r["disc"] = alloc.add_array(f"{name}.disc", (groups, months, lanes), np.float64)
    r["dlap"] = alloc.add_array(f"{name}.dlap", (groups, months, lanes), np.float64)
    r["partials"] = alloc.add_array(f"{name}.partials", (blocks, N_PV, n_scen), np.float64)
    return r
