"""Policy records judged by a declaration: the data service's ValidateDataset and the engine's
inputs apply the same checks here, for any model.

`check_rows` coerces the declared columns of an Arrow batch (`policy_schema.coerce`: text,
integers and floats alike) and finds every broken rule: ``type`` (a cell not of its column's
type), ``required`` (an empty required cell), ``range`` (a value outside its column's bounds;
float64 values must be finite), ``enum`` (a category cell that is none of its texts or codes),
each declared rule under its own name, and ``horizon`` (a row whose ``horizon_months`` is
negative). A declared rule judges only rows whose cells it reads are present and of their type
(absent optional cells take their defaults; an optional float64 without one is NaN), so one bad
cell is reported once. Duplicate keys (``duplicate_<key>``) span batches: callers find them
(`duplicate_rows`), since only they see the whole dataset. `Records` is a checked batch laid out
as the model reads it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from services.valuation.arrays import F64, I64, Mask, rows_where
from services.valuation.errors import ModelInputError, Violation, raise_if
from services.valuation.interface.declaration import INT32_RANGE, Column, ModelInterface
from services.valuation.interface.expressions import Expression, Value
from services.valuation.interface.parser import interface_of
from services.valuation.interface.tables import BoundKey, Read, load_assets
from services.valuation.policy_schema import Coerced, RuleBreak, coerce, duplicate_rows

SHOWN_RULES: Final = frozenset({"type", "range", "enum"})
"""Rules whose violation message shows the offending cell."""
DUPLICATE_MESSAGE: Final = "repeats an earlier row"
HORIZON_RULE: Final = "horizon"
HORIZON_COLUMN: Final = "horizon_months"
"""Where a broken horizon is reported (it is no one column's)."""
MAX_HORIZON: Final = INT32_RANGE[1]
"""Longest horizon a row may have, in months (the context's n_months is a u32)."""


def duplicate_rule(interface: ModelInterface) -> str:
    """The rule name of a repeated key: ``duplicate_policy_id`` for term life."""
    return f"duplicate_{interface.key}"


def rule_bounds(interface: ModelInterface) -> frozenset[BoundKey]:
    """The table bounds the declared rules and the horizon read."""
    out = set(interface.horizon_months.bounds)
    for rule in interface.rules:
        out |= rule.bounds
    return frozenset(out)


def resolve_bounds(interface: ModelInterface, given: Mapping[BoundKey, float]) -> dict[BoundKey, float]:
    """The bounds the rules read, from ``given`` else the declaration; ValueError names any missing."""
    known = {**interface.declared_bounds(), **given}
    needed = rule_bounds(interface)
    missing = sorted(needed - known.keys())
    if missing:
        raise ValueError("the rules read table bounds not given: " + ", ".join(".".join(k) for k in missing))
    return {k: float(known[k]) for k in sorted(needed)}


def term_life_rules() -> tuple[ModelInterface, dict[BoundKey, float]]:
    """The shipped term-life declaration and the bounds of the shipped tables its rules read: what a
    package without a declaration (and a request naming only ``term_life``) is judged by."""
    from services.valuation.reference_model import (  # noqa: PLC0415  # package data, read when needed
        shipped_assumption_files,
        term_life_declaration,
    )

    def read(path: str) -> bytes | None:
        return shipped_assumption_files().get(path.removeprefix("assumptions/"))

    return package_rules({"interface": term_life_declaration()}, read)


def package_rules(config: Mapping[str, Any], read: Read) -> tuple[ModelInterface, dict[BoundKey, float]]:
    """The declaration a package's datasets are judged by and the bounds its rules read (from its
    tables); term life's for a config without ``interface``. ValueError or `PackageInvalid` when
    the declaration or its tables are broken."""
    if "interface" not in config:
        return term_life_rules()
    interface = interface_of(config)
    needed = rule_bounds(interface)
    if needed <= interface.declared_bounds().keys():
        return interface, resolve_bounds(interface, {})
    return interface, resolve_bounds(interface, load_assets(interface, read).bounds)


# ---------------------------------------------------------------------------
# coercion


def category_message(column: Column) -> str:
    """``must be 'M' or 'F'``, ``must be one of 'A', 'B', 'C'``."""
    texts = [repr(v) for v in column.values]
    if len(texts) == 2:
        return f"must be {texts[0]} or {texts[1]}"
    return f"must be one of {', '.join(texts)}" if len(texts) > 1 else f"must be {texts[0]}"


def coerce_category(array: pa.Array | pa.ChunkedArray, values: tuple[str, ...]) -> Coerced:
    """A category column as int32 codes: its texts (trimmed, any case) or the codes 0..n-1 themselves
    (numbers, or their text); ``bad`` cells are neither."""
    arr = array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if pa.types.is_boolean(arr.type):
        arr = arr.cast(pa.int8())
    n = len(arr)
    if pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type) or pa.types.is_null(arr.type):
        number = coerce(arr, "float64")
        f = number.values
        with np.errstate(invalid="ignore"):
            ok = np.isfinite(f) & (f == np.floor(f)) & (f >= 0) & (f < len(values))
        return Coerced(np.where(ok, f, 0).astype(np.int32), number.missing, ~number.missing & ~ok)
    keys: dict[str, int] = {}
    for code, value in enumerate(values):
        keys.setdefault(value.upper(), code)
    for code in range(len(values)):
        keys.setdefault(str(code), code)
    exact = _exact_codes(arr, keys)
    if exact is not None:
        return exact
    try:
        text = pc.utf8_trim_whitespace(pc.cast(arr, pa.string()))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        present = np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
        return Coerced(np.zeros(n, np.int32), ~present, present)
    missing = np.asarray(pc.fill_null(pc.equal(text, ""), True).to_numpy(zero_copy_only=False), dtype=bool)
    index = pc.index_in(pc.utf8_upper(text), value_set=pa.array(list(keys), pa.string()))
    found = np.asarray(index.fill_null(-1).to_numpy(zero_copy_only=False), dtype=np.int64)
    codes = np.array(list(keys.values()), dtype=np.int32)
    bad = ~missing & (found < 0)
    return Coerced(np.where(found >= 0, codes[np.maximum(found, 0)], 0).astype(np.int32), missing, bad)


def _exact_codes(arr: pa.Array, keys: Mapping[str, int]) -> Coerced | None:
    """The codes of a text column whose every cell is exactly a key (the usual case: one pass, no
    trimming or case folding); None when a cell is anything else. Only keys that trimming and
    upper-casing leave as they are take part, so a match means what the full path would find."""
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)) or arr.null_count:
        return None
    same = {k: code for k, code in keys.items() if k.isascii() and k == k.strip() and k == k.upper()}
    if not same:
        return None
    index = pc.index_in(arr, value_set=pa.array(list(same), arr.type))
    if index.null_count:
        return None
    codes = np.array(list(same.values()), dtype=np.int32)
    n = len(arr)
    return Coerced(codes[index.to_numpy(zero_copy_only=False)], np.zeros(n, bool), np.zeros(n, bool))


def _plain(array: pa.Array | pa.ChunkedArray, kind: str) -> Coerced | None:
    """An int64 or float64 column already of that type with no empty cell, as it is (the usual
    case, and what `coerce` would make of it); None otherwise."""
    wanted = pa.int64() if kind == "int64" else pa.float64()
    if array.type != wanted or array.null_count:
        return None
    arr = array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array
    n = len(arr)
    return Coerced(arr.to_numpy(zero_copy_only=False), np.zeros(n, bool), np.zeros(n, bool))


def coerce_column(array: pa.Array | pa.ChunkedArray, column: Column) -> tuple[Coerced, list[tuple[Mask, str, str]]]:
    """One declared column's cells and the (rows, rule, message) of its bad cells."""
    if column.type == "category":
        cells = coerce_category(array, column.values)
        return cells, [(cells.bad, "enum", category_message(column))]
    if column.type == "float64":
        cells = _plain(array, "float64") or coerce(array, "float64")
        return cells, [(cells.bad, "type", "must be float")]
    cells = _plain(array, "int64") or coerce(array, "int64")
    found = [(cells.bad, "type", "must be int")]
    if column.type == "int32":
        v = cells.values
        wide = cells.valid & ((v < INT32_RANGE[0]) | (v > INT32_RANGE[1]))
        if wide.any():
            cells = Coerced(np.where(wide, 0, v), cells.missing, cells.bad | wide)
            found.append((wide, "type", "must be a 32-bit integer"))
    return cells, found


def range_message(column: Column) -> str:
    """``must be ≥ 0 and ≤ 120``; float64 values must also be finite."""
    text = column.bounds.describe()
    if column.type != "float64":
        return text
    return "must be finite" + (f" and {text.removeprefix('must be ')}" if text else "")


# ---------------------------------------------------------------------------
# row checks


@dataclass(frozen=True)
class RowCheck:
    """A batch judged against a declaration: every broken rule but duplicate keys.

    ``cells``: the declared columns present in the batch, coerced. ``values``: every declared
    column in its dtype (categories as int32 codes), empty cells and absent columns filled with
    their defaults (NaN for an optional float64 without one; 0 where a cell is bad).
    ``usable``: the cells rules read. ``horizons``: months each row is projected (0 where unknown).
    """

    rows: int
    cells: Mapping[str, Coerced]
    values: Mapping[str, npt.NDArray[Any]]
    usable: Mapping[str, Mask]
    breaks: list[RuleBreak]
    missing_columns: tuple[str, ...]
    horizons: I64

    def key(self, interface: ModelInterface) -> tuple[I64, Mask] | None:
        """The key column's values and where they are valid (None: no key, or not in the batch)."""
        cells = self.cells.get(interface.key or "")
        if cells is None:
            return None
        return np.asarray(cells.values, dtype=np.int64), cells.valid


def _truth(value: Value, n: int) -> Mask:
    """An expression's value as a row mask (a number is true when non-zero; NaN is false)."""
    arr = np.broadcast_to(np.asarray(value), (n,))
    if arr.dtype == np.bool_:
        return np.asarray(arr, dtype=bool)
    f = arr.astype(np.float64)
    return np.asarray((f != 0) & ~np.isnan(f), dtype=bool)


def _evaluate(expr: Expression, floats: Mapping[str, F64], bounds: Mapping[BoundKey, float], n: int) -> F64:
    with np.errstate(all="ignore"):
        return np.broadcast_to(np.asarray(expr.evaluate(floats, bounds), dtype=np.float64), (n,))


def check_rows(
    table: pa.Table | pa.RecordBatch, interface: ModelInterface, bounds: Mapping[BoundKey, float]
) -> RowCheck:
    """Coerce the declared columns of ``table`` and apply every row rule (see the module docstring).

    ``bounds`` must hold every table bound the rules and the horizon read (`resolve_bounds`).
    """
    n = table.num_rows
    names = set(table.column_names)
    cells: dict[str, Coerced] = {}
    values: dict[str, npt.NDArray[Any]] = {}
    usable: dict[str, Mask] = {}
    breaks: list[RuleBreak] = []
    as_float: dict[str, F64] = {}  # a column's values as float64, where already made

    def hit(rule: str, column: str, rows: Mask, message: str) -> None:
        if rows.any():
            breaks.append(RuleBreak(rule, column, rows, message))

    for column in interface.columns:
        fill = column.default if column.default is not None else (np.nan if column.type == "float64" else 0)
        if column.name not in names:
            values[column.name] = np.full(n, fill, dtype=column.dtype)
            usable[column.name] = np.full(n, not column.required, dtype=bool)
            continue
        coerced, bad = coerce_column(table.column(column.name), column)
        cells[column.name] = coerced
        for rows, kind, message in bad:
            hit(kind, column.name, rows, message)
        if column.required:
            hit("required", column.name, coerced.missing, "is required")
        valid = coerced.valid
        every = bool(valid.all())
        # in the column's dtype throughout: an int64 beyond 2^53 must not pass through float64
        if every:
            typed = np.array(coerced.values, dtype=column.dtype)
        else:
            typed = np.where(valid, coerced.values, np.nan if column.type == "float64" else 0).astype(column.dtype)
            typed[coerced.missing] = np.asarray(fill).astype(column.dtype)
        values[column.name] = typed
        if column.type in ("int32", "int64", "float64"):
            f = coerced.values.astype(np.float64, copy=False)
            if every:
                as_float[column.name] = f  # the column's values are its cells as they are
            out = column.bounds.breaks(f) | (~np.isfinite(f) if column.type == "float64" else False)
            hit("range", column.name, valid & out, range_message(column))
            if column.type == "float64":
                valid = valid & np.isfinite(f)  # a NaN or inf cell is reported once, by its range
        usable[column.name] = valid | (coerced.missing & (not column.required))

    read = set(interface.horizon_months.columns).union(*(r.columns for r in interface.rules))
    floats = {
        name: as_float[name] if name in as_float else values[name].astype(np.float64, copy=False) for name in read
    }
    for declared in interface.rules:
        rows = np.ones(n, dtype=bool)
        for name in declared.columns:
            rows &= usable[name]
        if not rows.any():
            continue
        broken = rows & ~_truth(_evaluate(declared.check, floats, bounds, n), n)
        if declared.when is not None:
            broken &= _truth(_evaluate(declared.when, floats, bounds, n), n)
        hit(declared.rule, declared.column, broken, declared.message)

    horizons = np.zeros(n, dtype=np.int64)
    rows = np.ones(n, dtype=bool)
    for name in interface.horizon_months.columns:
        rows &= usable[name]
    if rows.any():
        h = _evaluate(interface.horizon_months, floats, bounds, n)
        text = interface.horizon_months.text
        hit(HORIZON_RULE, HORIZON_COLUMN, rows & ~np.isfinite(h), f"({text}) must be a finite number")
        hit(HORIZON_RULE, HORIZON_COLUMN, rows & (h < 0), f"({text}) must be ≥ 0")
        hit(HORIZON_RULE, HORIZON_COLUMN, rows & (h > MAX_HORIZON), f"({text}) must be ≤ {MAX_HORIZON}")
        good = rows & np.isfinite(h) & (h >= 0) & (h <= MAX_HORIZON)
        horizons = np.where(good, np.ceil(np.where(good, h, 0)), 0).astype(np.int64)

    missing = tuple(c.name for c in interface.columns if c.required and c.name not in names)
    return RowCheck(n, cells, values, usable, breaks, missing, horizons)


# ---------------------------------------------------------------------------
# records


def frozen(values: npt.ArrayLike, dtype: npt.DTypeLike) -> npt.NDArray[Any]:
    """A read-only, C-contiguous copy of ``values`` with ``dtype``; ``values`` itself when it is
    already that: an array that owns its memory and was made read-only (`_freeze`) gave up writing."""
    if (
        isinstance(values, np.ndarray)
        and values.base is None
        and not values.flags.writeable
        and values.flags.c_contiguous
        and values.dtype == np.dtype(dtype)
    ):
        return values
    arr = np.array(values, dtype=dtype, copy=True, order="C")
    arr.setflags(write=False)
    return arr


def _freeze(arr: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """``arr`` made read-only in place (it must be a fresh array nobody else writes)."""
    arr.setflags(write=False)
    return arr


def violations(
    rule: str, column: str, rows: Mask, message: str, shown: pa.ChunkedArray | pa.Array | None = None
) -> list[Violation]:
    """One `Violation` per row of ``rows`` (batch rows), the cell shown for the rules that show one."""
    out = []
    for r in rows_where(rows):
        text = message
        if shown is not None and rule in SHOWN_RULES:
            text = f"{message} (got {shown[r].as_py()!r:.40})"
        out.append(Violation(column, text, r, rule))
    return out


@dataclass(frozen=True, eq=False)
class Records:
    """Checked policy records as the model reads them: the declared columns in declaration order,
    each a read-only array of its dtype (int32, int64, float64; categories as int32 codes; empty
    cells with their defaults), and each row's horizon. Shareable between threads."""

    columns: Mapping[str, npt.NDArray[Any]]
    horizons: I64

    def __post_init__(self) -> None:
        arrays = {name: frozen(v, np.asarray(v).dtype) for name, v in self.columns.items()}
        object.__setattr__(self, "columns", MappingProxyType(arrays))
        object.__setattr__(self, "horizons", frozen(self.horizons, np.int64))
        sizes = {name: a.shape for name, a in arrays.items()} | {HORIZON_COLUMN: self.horizons.shape}
        if len(set(sizes.values())) > 1 or any(len(s) != 1 for s in sizes.values()):
            raise ModelInputError("policies", [Violation("*", f"columns must be 1-d and equally long, got {sizes}")])

    @property
    def n_rows(self) -> int:
        return int(self.horizons.size)

    def __len__(self) -> int:
        return self.n_rows

    @property
    def horizon_months(self) -> int:
        """T: the longest horizon of the rows (0 when there are none)."""
        return int(self.horizons.max(initial=0))

    def take(self, rows: npt.ArrayLike | slice) -> Records:
        """The records at ``rows`` (indices, a mask or a slice), in the order given."""
        idx = rows if isinstance(rows, slice) else np.asarray(rows)
        if isinstance(idx, np.ndarray) and idx.dtype != np.bool_:
            idx = idx.astype(np.intp)  # [] is float64 to numpy
        return Records({name: a[idx] for name, a in self.columns.items()}, self.horizons[idx])

    @classmethod
    def from_table(
        cls,
        table: pa.Table | pa.RecordBatch,
        interface: ModelInterface,
        bounds: Mapping[BoundKey, float],
        row_of: Callable[[int], int] | None = None,
    ) -> Records:
        """The checked records of ``table``; `ModelInputError` lists every broken rule of every row
        (rows named by ``row_of``, the dataset row of a batch row; the batch row by default)."""
        check = check_rows(table, interface, bounds)
        if check.missing_columns:
            raise ModelInputError(
                "policies", [Violation(c, "required column is missing", rule="required") for c in check.missing_columns]
            )
        present = set(table.column_names)
        bad = [
            v
            for b in check.breaks
            for v in violations(
                b.rule, b.column, b.rows, b.message, table.column(b.column) if b.column in present else None
            )
        ]
        key = check.key(interface)
        if key is not None and interface.key is not None and not _ascending(*key):
            bad += violations(duplicate_rule(interface), interface.key, duplicate_rows(*key), DUPLICATE_MESSAGE)
        raise_if("policies", _renumbered(sorted(bad, key=lambda v: (v.row or 0, v.column)), row_of))
        # check_rows made these arrays for this call alone: frozen in place, not copied again
        return cls({c.name: _freeze(check.values[c.name]) for c in interface.columns}, _freeze(check.horizons))


def _ascending(ids: I64, valid: Mask) -> bool:
    """Every key present and each greater than the one before: no key repeats (the usual case,
    told without sorting)."""
    return bool(valid.all()) and (ids.size < 2 or bool(np.all(ids[1:] > ids[:-1])))


def _renumbered(found: Iterable[Violation], row_of: Callable[[int], int] | None) -> list[Violation]:
    if row_of is None:
        return list(found)
    return [Violation(v.column, v.message, None if v.row is None else row_of(v.row), v.rule) for v in found]
