"""ABI v2's context and descriptors, packed as docs/model-interface.md "The context" specifies
(little-endian; offsets are u32 byte offsets into the engine's memory; the C header
``livecalc_model.h`` declares the same structs).

A context describes one run of one model: counts, then arrays of descriptors (policy columns,
tables, scenario buffers), the parameter slots, the partials and the workspace. Nothing here
knows a product: the declaration says what is laid out.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from services.valuation.model_abi import ABI_VERSION

CTX_SIZE: Final = 128
ARRAY_SIZE: Final = 48
MAX_DIMS: Final = 4
_HEADER: Final = struct.Struct("<" + "I" * 21)
_ARRAY: Final = struct.Struct("<IIII4I4i")
assert _ARRAY.size == ARRAY_SIZE and _HEADER.size <= CTX_SIZE

TYPE_INT32: Final = 1
TYPE_INT64: Final = 2
TYPE_FLOAT64: Final = 3
TYPE_CATEGORY: Final = 4

FEATURE_ROW_VALUES: Final = 1
"""`lc_features()` bit: ``lc_run_blocks`` writes row values when the context gives their offset."""
FEATURE_CASH_FLOWS: Final = 2
"""`lc_features()` bit: ``lc_run_blocks`` writes block cash flows by month when the context gives their offset."""


@dataclass(frozen=True)
class ArrayDescriptor:
    """`lc_array`: an array at ``offset`` of element ``type``, with ``shape`` and per-axis ``origin``."""

    offset: int
    type: int
    shape: tuple[int, ...]
    origin: tuple[int, ...] = ()

    def pack(self) -> bytes:
        if not 1 <= len(self.shape) <= MAX_DIMS or len(self.origin) > len(self.shape):
            raise ValueError(f"an array has 1 to {MAX_DIMS} axes, got shape {self.shape}")
        shape = (*self.shape, *(1,) * (MAX_DIMS - len(self.shape)))
        origin = (*self.origin, *(0,) * (MAX_DIMS - len(self.origin)))
        return _ARRAY.pack(self.offset, self.type, len(self.shape), 0, *shape, *origin)


def pack_arrays(arrays: Sequence[ArrayDescriptor]) -> bytes:
    return b"".join(a.pack() for a in arrays)


def pack_params(values: Sequence[float | int], types: Sequence[str]) -> bytes:
    """Parameter slots: f64, or i64/u64 for whole-number parameters, 8 bytes each."""
    out = bytearray()
    for value, kind in zip(values, types, strict=True):
        if kind == "float64":
            out += struct.pack("<d", float(value))
        elif kind == "uint64":
            out += struct.pack("<Q", int(value))
        else:
            out += struct.pack("<q", int(value))
    return bytes(out)


@dataclass(frozen=True)
class Context:
    """`lc_ctx`: the 128-byte header a model's entry points receive (by its offset)."""

    n_rows: int
    n_scen: int
    n_months: int
    block_size: int
    n_columns: int = 0
    columns: int = 0
    n_tables: int = 0
    tables: int = 0
    n_params: int = 0
    params: int = 0
    n_scenario_inputs: int = 0
    scenario_inputs: int = 0
    n_outputs: int = 0
    partials: int = 0
    workspace: int = 0
    workspace_bytes: int = 0
    first_row: int = 0
    row_values: int = 0
    """Offset of f64 [n_rows][n_outputs][n_scen] the projection fills with each row's values (0: not asked)."""
    cash_flows: int = 0
    """Offset of f64 [blocks][n_monthly][n_scen][n_months + 1]: each block's cash flows by month (0: not asked)."""
    n_monthly: int = 0

    def pack(self) -> bytes:
        head = _HEADER.pack(
            ABI_VERSION, self.n_rows, self.n_scen, self.n_months, self.block_size,
            self.n_columns, self.columns, self.n_tables, self.tables, self.n_params, self.params,
            self.n_scenario_inputs, self.scenario_inputs, self.n_outputs, self.partials,
            self.workspace, self.workspace_bytes, self.first_row, self.row_values, self.cash_flows, self.n_monthly,
        )  # fmt: skip
        return head + bytes(CTX_SIZE - len(head))
