"""ABI v2's context, descriptors and parameter slots are packed at the byte offsets
docs/model-interface.md documents ("The context (`lc_ctx`, 128 bytes, little-endian)" and
`lc_array`): the table is read from the page itself, so the page and `services.engine.abi`
cannot drift apart unnoticed."""

from __future__ import annotations

import dataclasses
import re
import struct

import pytest

from services.engine.abi import (
    ARRAY_SIZE,
    CTX_SIZE,
    TYPE_CATEGORY,
    TYPE_FLOAT64,
    TYPE_INT32,
    TYPE_INT64,
    ArrayDescriptor,
    Context,
    pack_arrays,
    pack_params,
)
from services.valuation.interface.declaration import ABI_TYPE_CODES
from services.valuation.model_abi import ABI_VERSION
from tests.support import ROOT

ROW = re.compile(r"^\| (\d+) \| u32 \| ([a-z_0-9]+)")


def documented_fields() -> dict[str, int]:
    """Field name → byte offset, from the context table of docs/model-interface.md."""
    text = (ROOT / "docs" / "model-interface.md").read_text(encoding="utf-8")
    table = text[text.index("### The context (`lc_ctx`, 128 bytes, little-endian)") :]
    table = table[: table.index("`lc_array`")]
    fields = {m[2]: int(m[1]) for line in table.splitlines() if (m := ROW.match(line))}
    assert "| 84–127 | | reserved, zero |" in table
    return fields


def test_the_documented_context_is_every_field_of_the_struct() -> None:
    fields = documented_fields()
    assert list(fields.values()) == list(range(0, 84, 4))  # u32s back to back, then the reserved bytes
    assert set(fields) == {"abi_version"} | {f.name for f in dataclasses.fields(Context)}
    assert CTX_SIZE == 128 and ABI_VERSION == 2


def test_each_field_is_packed_at_its_documented_offset() -> None:
    names = [f.name for f in dataclasses.fields(Context)]
    values = {name: 0x01010101 * (i + 3) for i, name in enumerate(names)}  # distinct, every byte non-zero
    packed = Context(**values).pack()
    assert len(packed) == CTX_SIZE
    for name, offset in documented_fields().items():
        (got,) = struct.unpack_from("<I", packed, offset)
        assert got == (ABI_VERSION if name == "abi_version" else values[name]), name
    assert packed[84:] == bytes(CTX_SIZE - 84)  # reserved, zero


def test_a_generators_context_leaves_the_projection_fields_zero() -> None:
    packed = Context(n_rows=0, n_scen=19, n_months=240, block_size=1024, n_params=4, params=4096).pack()
    fields = documented_fields()
    word = {name: struct.unpack_from("<I", packed, offset)[0] for name, offset in fields.items()}
    assert (word["n_scen"], word["n_months"], word["block_size"], word["n_params"], word["params"]) == (
        19, 240, 1024, 4, 4096
    )  # fmt: skip
    assert all(word[n] == 0 for n in ("n_rows", "n_columns", "columns", "n_tables", "tables", "n_outputs",
                                      "partials", "workspace", "workspace_bytes", "first_row", "row_values",
                                      "cash_flows", "n_monthly"))  # fmt: skip


def test_lc_array_is_48_bytes_unused_dims_one_origins_signed() -> None:
    """`u32 offset`, `u32 type`, `u32 ndim`, `u32 reserved`, `u32 shape[4]` (unused dims 1), `i32 origin[4]`."""
    assert ARRAY_SIZE == 48
    table = ArrayDescriptor(0x123450, TYPE_FLOAT64, (103, 6), (18, 0)).pack()
    assert len(table) == ARRAY_SIZE
    assert struct.unpack("<4I", table[:16]) == (0x123450, TYPE_FLOAT64, 2, 0)
    assert struct.unpack("<4I", table[16:32]) == (103, 6, 1, 1)
    assert struct.unpack("<4i", table[32:48]) == (18, 0, 0, 0)
    negative = ArrayDescriptor(64, TYPE_FLOAT64, (5,), (-3,)).pack()
    assert struct.unpack("<4i", negative[32:48]) == (-3, 0, 0, 0)
    column = ArrayDescriptor(4096, TYPE_CATEGORY, (1000,)).pack()
    assert struct.unpack("<8I", column[:32]) == (4096, TYPE_CATEGORY, 1, 0, 1000, 1, 1, 1)
    both = pack_arrays([ArrayDescriptor(16, TYPE_INT32, (1,)), ArrayDescriptor(32, TYPE_INT64, (2,))])
    assert len(both) == 2 * ARRAY_SIZE and struct.unpack_from("<2I", both, ARRAY_SIZE) == (32, TYPE_INT64)
    for shape, origin in (((), ()), ((1, 1, 1, 1, 1), ()), ((4,), (0, 0))):
        with pytest.raises(ValueError, match="1 to 4 axes"):
            ArrayDescriptor(0, TYPE_FLOAT64, shape, origin).pack()


def test_type_codes_are_the_documented_ones() -> None:
    """1 int32, 2 int64, 3 float64, 4 category as int32 codes; the declaration's columns use them."""
    assert (TYPE_INT32, TYPE_INT64, TYPE_FLOAT64, TYPE_CATEGORY) == (1, 2, 3, 4)
    assert dict(ABI_TYPE_CODES) == {"int32": 1, "int64": 2, "float64": 3, "category": 4}


def test_parameter_slots_are_8_bytes_f64_or_whole_numbers() -> None:
    slots = pack_params([0.1, 42, 2**64 - 1, -7], ["float64", "uint64", "uint64", "int64"])
    assert len(slots) == 32
    assert struct.unpack("<dQQq", slots) == (0.1, 42, 2**64 - 1, -7)
