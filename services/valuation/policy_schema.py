"""The term_life policy record and its rules (docs/datasets.md "term_life"), defined once.

The data service's ValidateDataset and the engine's `Policies` both judge rows here: the
same coercion of raw cells (text, integers, floats as Arrow arrays), the same rule names
and the same messages. Coercion turns one column into typed values plus two masks (missing
cells, cells of the wrong type); `rule_breaks` then applies the row rules to typed values,
only where a cell is present and of the right type, so one bad cell is reported once.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from services.valuation.arrays import F64, I64, Mask

ColumnKind = Literal["int64", "float64", "string"]

MAX_AGE: Final = 120
"""Oldest attained age a policy may reach (age_at_entry + policy_term ≤ MAX_AGE + 1)."""

MIN_DURATION_MTH: Final = -12 * (MAX_AGE + 1)
"""Earliest duration_mth: future new business is issued at most 12·121 = 1,452 months ahead
(t = −duration_mth), which keeps a horizon 12·policy_term − duration_mth ≤ 2,904 months and
any duration an int32. Its months before issue have no cash flow."""

MAX_POLICY_COUNT: Final = 1e9
"""Largest policy_count of one row (a model point standing for a billion policies)."""

MAX_AMOUNT: Final = 1e15
"""Largest sum_assured and premium_pp of one row, in currency units.

With these bounds every cash flow of a row stays below 1e24 a month, so a block of 1,024
rows over 1,452 months sums to under 2e30: a present value can only be non-finite when the
inputs broke a rule (1e300 passed as "finite" and made a job's statistics inf and NaN)."""


@dataclass(frozen=True)
class PolicyColumn:
    """One column of the policy record: its kind, whether it is required, the default of an empty cell."""

    name: str
    kind: ColumnKind
    required: bool
    default: float | None = None
    """Value of an empty cell of an optional column (None: stays absent, NaN)."""


TERM_LIFE: Final[tuple[PolicyColumn, ...]] = (
    PolicyColumn("policy_id", "int64", True),
    PolicyColumn("age_at_entry", "int64", True),
    PolicyColumn("sex", "string", True),
    PolicyColumn("policy_term", "int64", True),
    PolicyColumn("policy_count", "float64", False, 1.0),
    PolicyColumn("sum_assured", "float64", True),
    PolicyColumn("duration_mth", "int64", False, 0.0),
    PolicyColumn("premium_pp", "float64", False),
)
"""The term-life policy record (docs/datasets.md), in its order."""

MODELS: Final[Mapping[str, tuple[PolicyColumn, ...]]] = {"term_life": TERM_LIFE}
"""Policy schemas by model name."""

POLICY_COLUMNS: Final = tuple(c.name for c in TERM_LIFE)
REQUIRED_POLICY_COLUMNS: Final = tuple(c.name for c in TERM_LIFE if c.required)
COLUMNS: Final[Mapping[str, PolicyColumn]] = {c.name: c for c in TERM_LIFE}

_INT64_MIN: Final = int(np.iinfo(np.int64).min)
_INT64_MAX: Final = int(np.iinfo(np.int64).max)

DUPLICATE_RULE: Final = "duplicate_policy_id"
DUPLICATE_MESSAGE: Final = "repeats an earlier row"

_TEXT_PATTERNS: Final[Mapping[ColumnKind, str]] = {
    "int64": re.compile(r"^\s*[+-]?\d+\s*$").pattern,
    "float64": re.compile(r"^\s*[+-]?((\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[Nn]a[Nn]|[Ii]nf(inity)?)\s*$").pattern,
}


@dataclass(frozen=True)
class Coerced:
    """One column as its kind: int64 (0 where not valid), float64 (NaN where not valid) or text.

    ``missing``: empty cells; ``bad``: cells that are not of the kind (text in a number
    column, 2.5 in an integer column). ``valid`` = neither.
    """

    values: npt.NDArray[Any]
    missing: Mask
    bad: Mask

    @property
    def valid(self) -> Mask:
        return ~self.missing & ~self.bad


def _mask(values: pa.Array | pa.ChunkedArray) -> Mask:
    return np.asarray(values.to_numpy(zero_copy_only=False), dtype=bool)


def type_mismatches(text: pa.Array, kind: ColumnKind) -> Mask:
    """Cells of a text column that do not parse as ``kind`` (empty cells are missing, not bad)."""
    pattern = _TEXT_PATTERNS.get(kind)
    if pattern is None:
        return np.zeros(len(text), dtype=bool)
    ok = pc.or_(pc.equal(text, ""), pc.match_substring_regex(text, pattern))
    return _mask(pc.fill_null(pc.invert(ok), False))


def coerce(array: pa.Array | pa.ChunkedArray, kind: ColumnKind) -> Coerced:
    """Cells of one column as ``kind``; see `Coerced`."""
    arr = array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    n = len(arr)
    if kind == "string":
        text = pc.utf8_trim_whitespace(pc.cast(arr, pa.string()))
        missing = _mask(pc.fill_null(pc.equal(text, ""), True))
        return Coerced(np.asarray(text.to_numpy(zero_copy_only=False), dtype=object), missing, np.zeros(n, bool))
    bad = np.zeros(n, dtype=bool)
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        text = pc.utf8_trim_whitespace(arr.cast(pa.string()))
        bad = type_mismatches(text, kind)
        empty = _mask(pc.fill_null(pc.equal(text, ""), True))
        arr = pc.if_else(pa.array(bad | empty), pa.scalar(None, pa.string()), text)
    elif not (pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type) or pa.types.is_null(arr.type)):
        bad = _mask(arr.is_valid())
        arr = pa.nulls(n, pa.string())
    missing = _mask(arr.is_null()) & ~bad
    if kind == "int64" and pa.types.is_integer(arr.type):
        if pa.types.is_uint64(arr.type):
            too_big = _mask(pc.fill_null(pc.greater(arr, pa.scalar(np.iinfo(np.int64).max, pa.uint64())), False))
            bad |= too_big
            arr = pc.if_else(pa.array(too_big), pa.scalar(None, arr.type), arr)
        ints: I64 = np.asarray(arr.cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False), dtype=np.int64)
        return Coerced(ints, missing, bad)
    if kind == "int64" and pa.types.is_string(arr.type):
        # text integers one by one (a rare path: typed readers give int64 columns), so an id
        # beyond 2^53 stays exact and one beyond int64 is a bad cell, not a wrapped number
        ints = np.zeros(n, dtype=np.int64)
        for i, cell in enumerate(arr.to_pylist()):
            if cell is None:
                continue
            whole = int(cell)
            if _INT64_MIN <= whole <= _INT64_MAX:
                ints[i] = whole
            else:
                bad[i] = True
        return Coerced(ints, missing & ~bad, bad)
    floats: F64 = np.asarray(
        pc.cast(arr, pa.float64()).fill_null(np.nan).to_numpy(zero_copy_only=False), dtype=np.float64
    )
    if kind == "int64":
        whole = np.isfinite(floats) & (floats == np.floor(floats)) & (np.abs(floats) < 2.0**63)
        bad |= ~missing & ~bad & ~whole
        return Coerced(np.where(missing | bad, 0, floats).astype(np.int64), missing, bad)
    return Coerced(np.where(bad, np.nan, floats), missing, bad)


def female_flags(sex: npt.NDArray[Any]) -> F64:
    """1.0 for "F", 0.0 for "M" (any case, trimmed), NaN for anything else; integer flags 0/1 pass through."""
    if sex.dtype.kind in "biuf":
        flags = sex.astype(np.float64)
        return np.where((flags == 0) | (flags == 1), flags, np.nan)
    text = np.array([str(v).strip().upper() if v is not None else "" for v in sex.tolist()], dtype=object)
    return np.where(text == "F", 1.0, np.where(text == "M", 0.0, np.nan))


@dataclass(frozen=True)
class RuleBreak:
    """Rows of a batch that break one rule; ``message`` follows the column name (``age_at_entry must …``)."""

    rule: str
    column: str
    rows: Mask
    message: str


def rule_breaks(n: int, values: Mapping[str, npt.NDArray[Any]], valid: Mapping[str, Mask]) -> list[RuleBreak]:
    """The row rules of the term-life policy record (docs/datasets.md) over typed column values.

    ``values`` holds the present columns (``sex`` as `female_flags`, numbers as numbers),
    ``valid`` where each cell is present and of its kind; a rule judges only valid cells.
    Absent optional columns take their defaults (duration_mth 0, premium_pp absent).
    """
    out: list[RuleBreak] = []

    def num(name: str) -> F64:
        return np.asarray(values[name], dtype=np.float64) if name in values else np.full(n, np.nan)

    def ok(name: str) -> Mask:
        return np.asarray(valid[name], dtype=bool) if name in valid else np.zeros(n, dtype=bool)

    def rule(rule: str, column: str, rows: Mask, message: str) -> None:
        if rows.any():
            out.append(RuleBreak(rule, column, rows, message))

    age, term = num("age_at_entry"), num("policy_term")
    rule("range", "age_at_entry", ok("age_at_entry") & ((age < 0) | (age > MAX_AGE)), f"must be in 0..{MAX_AGE}")
    if "sex" in values:
        rule("enum", "sex", ok("sex") & np.isnan(num("sex")), "must be 'M' or 'F'")
    rule("range", "policy_term", ok("policy_term") & (term < 1), "must be ≥ 1 year")
    both = ok("policy_term") & ok("age_at_entry") & (term >= 1)
    rule("range", "policy_term", both & (age + term > MAX_AGE + 1), f"plus age_at_entry must be ≤ {MAX_AGE + 1}")
    count = num("policy_count")
    rule("range", "policy_count", ok("policy_count") & ~(np.isfinite(count) & (count >= 0)), "must be finite and ≥ 0")
    too_many = ok("policy_count") & np.isfinite(count) & (count > MAX_POLICY_COUNT)
    rule("range", "policy_count", too_many, f"must be ≤ {MAX_POLICY_COUNT:.0e}")
    sa = num("sum_assured")
    rule("range", "sum_assured", ok("sum_assured") & ~(np.isfinite(sa) & (sa > 0)), "must be finite and > 0")
    rule("range", "sum_assured", ok("sum_assured") & np.isfinite(sa) & (sa > MAX_AMOUNT), f"must be ≤ {MAX_AMOUNT:.0e}")
    has_duration = ok("duration_mth")
    duration = np.where(has_duration, num("duration_mth"), 0.0)
    # negative: future new business issued at t = −duration_mth; 12·policy_term: matured at t = 0
    rule("range", "duration_mth", has_duration & (duration < MIN_DURATION_MTH), f"must be ≥ {MIN_DURATION_MTH}")
    in_term = has_duration & ok("policy_term") & (duration >= MIN_DURATION_MTH) & (term >= 1)
    rule("range", "duration_mth", in_term & (duration > 12 * term), "must be ≤ 12·policy_term")
    # a present premium cell must be a number; NaN and inf are not "empty" (an empty cell is)
    premium = np.where(ok("premium_pp"), num("premium_pp"), np.nan)
    not_finite = ok("premium_pp") & ~np.isfinite(num("premium_pp"))
    rule("range", "premium_pp", not_finite, "must be finite (or empty)")
    rule("range", "premium_pp", np.isfinite(premium) & (premium > MAX_AMOUNT), f"must be ≤ {MAX_AMOUNT:.0e}")
    rule(
        "premium_required",
        "premium_pp",
        ~(premium > 0) & (duration > 0) & ~not_finite,
        "is required when duration_mth > 0 (the premium is computed only for new business)",
    )
    return out


@dataclass(frozen=True)
class RowCheck:
    """A batch judged against a policy schema: typed columns and every broken rule but duplicates."""

    rows: int
    columns: Mapping[str, Coerced]
    breaks: list[RuleBreak]
    missing_columns: tuple[str, ...]


def check_rows(table: pa.Table | pa.RecordBatch, schema: tuple[PolicyColumn, ...] = TERM_LIFE) -> RowCheck:
    """Coerce the schema's columns of ``table`` and apply every row rule (types, required, ranges)."""
    n = table.num_rows
    names = set(table.column_names)
    columns = {c.name: coerce(table.column(c.name), c.kind) for c in schema if c.name in names}
    breaks: list[RuleBreak] = []
    for spec in schema:
        cell = columns.get(spec.name)
        if cell is None:
            continue
        if cell.bad.any():
            breaks.append(RuleBreak("type", spec.name, cell.bad, f"must be {spec.kind.removesuffix('64')}"))
        if spec.required and cell.missing.any():
            breaks.append(RuleBreak("required", spec.name, cell.missing, "is required"))
    values: dict[str, npt.NDArray[Any]] = {name: c.values for name, c in columns.items()}
    valid = {name: c.valid for name, c in columns.items()}
    if "sex" in values:
        values["sex"] = female_flags(values["sex"])
    breaks += rule_breaks(n, values, valid)
    missing = tuple(c.name for c in schema if c.required and c.name not in names)
    return RowCheck(n, columns, breaks, missing)


def duplicate_rows(ids: I64, valid: Mask) -> Mask:
    """Rows whose valid policy_id repeats one of an earlier row (the first occurrence is not flagged)."""
    dup = np.zeros(ids.size, dtype=bool)
    rows = np.flatnonzero(valid)
    if rows.size < 2:
        return dup
    order = rows[np.argsort(ids[rows], kind="stable")]  # rows ascend within an id
    same = ids[order[1:]] == ids[order[:-1]]
    dup[order[1:][same]] = True
    return dup
