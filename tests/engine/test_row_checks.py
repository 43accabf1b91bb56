"""The rows path's shortcuts give what the general path gives: category texts matched as they are,
typed columns without empty cells taken as they are, checked arrays frozen without a copy, keys
that ascend known to be unique, and pieces grown for jobs of few scenarios."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from services.engine.chunk_runner import MAX_PIECE_BLOCKS, piece_blocks_for
from services.valuation.errors import ModelInputError
from services.valuation.interface.records import Records, coerce_category, coerce_column, term_life_rules
from services.valuation.policy_schema import coerce

CATEGORY_CASES = [
    ["M", "F", "F", "M"],  # exact texts: the shortcut
    ["M", "F", "1", "0"],  # codes as text: the shortcut too
    ["M", " f", "m ", "F"],  # trimmed and folded: the general path
    ["M", None, "F", ""],  # empty cells
    ["M", "X", "F", "MF"],  # bad cells
]


def _full(array: pa.Array, values: tuple[str, ...]) -> tuple[list[int], list[bool], list[bool]]:
    """What the general path makes of ``array``: each cell alone (a cell alone never takes the
    shortcut unless it matches exactly, where both paths agree by construction)."""
    codes, missing, bad = [], [], []
    for cell in array.to_pylist():
        # a column of one cell with a space appended where possible never matches exactly
        padded = pa.array([None if cell is None else f"{cell} "], pa.string())
        one = coerce_category(padded, values)
        codes.append(int(one.values[0]))
        missing.append(bool(one.missing[0]))
        bad.append(bool(one.bad[0]))
    return codes, missing, bad


@pytest.mark.parametrize("cells", CATEGORY_CASES)
@pytest.mark.parametrize("kind", [pa.string(), pa.large_string()])
def test_category_shortcut_matches_the_general_path(cells: list[str | None], kind: pa.DataType) -> None:
    values = ("M", "F")
    got = coerce_category(pa.array(cells, kind), values)
    codes, missing, bad = _full(pa.array(cells, pa.string()), values)
    assert got.values.dtype == np.int32
    assert got.values.tolist() == codes
    assert got.missing.tolist() == missing
    assert got.bad.tolist() == bad


def test_category_shortcut_leaves_keys_the_general_path_would_not_match_as_they_are() -> None:
    # a declared text with spaces inside its ends is matched after trimming only: " a" is not a key
    values = (" a", "b")
    got = coerce_category(pa.array([" a", "B", "b"]), values)
    assert got.bad.tolist() == [True, False, False]
    assert got.values.tolist() == [0, 1, 1]


@pytest.mark.parametrize(
    ("array", "kind"),
    [
        (pa.array([1, 2, 3], pa.int64()), "int64"),
        (pa.array([1.5, -0.0, np.inf], pa.float64()), "float64"),
        (pa.chunked_array([[1, 2], [3]], pa.int64()), "int64"),
    ],
)
def test_typed_columns_without_empty_cells_are_taken_as_they_are(array: pa.Array | pa.ChunkedArray, kind: str) -> None:
    rules, _ = term_life_rules()
    column = next(c for c in rules.columns if c.type == kind)
    cells, _ = coerce_column(array, column)
    general = coerce(array, kind)  # type: ignore[arg-type]
    np.testing.assert_array_equal(cells.values, general.values)
    assert cells.values.dtype == general.values.dtype
    assert cells.missing.tolist() == general.missing.tolist()
    assert cells.bad.tolist() == general.bad.tolist()


def _policies(ids: list[int]) -> pa.Table:
    n = len(ids)
    return pa.table(
        {
            "policy_id": pa.array(ids, pa.int64()),
            "age_at_entry": pa.array([40] * n, pa.int64()),
            "sex": pa.array(["M", "F"] * (n // 2) + ["M"] * (n % 2)),
            "policy_term": pa.array([10] * n, pa.int64()),
            "sum_assured": pa.array([1e5] * n),
            "duration_mth": pa.array([0] * n, pa.int64()),
        }
    )


def test_records_are_read_only_and_do_not_share_the_callers_arrays() -> None:
    interface, bounds = term_life_rules()
    records = Records.from_table(_policies([1, 2, 3, 4]), interface, bounds)
    for array in [*records.columns.values(), records.horizons]:
        assert not array.flags.writeable
    mine = np.arange(4, dtype=np.int64)
    copied = Records({"policy_id": mine}, np.zeros(4, np.int64))
    mine[0] = 99
    assert copied.columns["policy_id"][0] == 0


@pytest.mark.parametrize("ids", [[5, 1, 3, 1], [1, 2, 2, 3], [3, 2, 1, 3]])
def test_repeated_keys_are_found_whether_or_not_keys_ascend(ids: list[int]) -> None:
    interface, bounds = term_life_rules()
    with pytest.raises(ModelInputError, match="repeats an earlier row"):
        Records.from_table(_policies(ids), interface, bounds)
    Records.from_table(_policies(sorted(set(ids))), interface, bounds)


def test_pieces_grow_for_few_scenarios_up_to_the_bound() -> None:
    assert piece_blocks_for(8, 1000) == 8
    assert piece_blocks_for(8, 16) == 8
    assert piece_blocks_for(8, 8) == 16
    assert piece_blocks_for(8, 1) == 128
    assert piece_blocks_for(64, 1) == MAX_PIECE_BLOCKS
    assert piece_blocks_for(MAX_PIECE_BLOCKS * 2, 1) == MAX_PIECE_BLOCKS * 2  # never fewer than asked
