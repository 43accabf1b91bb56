"""Policy records as validated column arrays: what every implementation of term_life consumes.

Built from a mapping of columns or an Arrow table (rows read from the data service), judged
by `policy_schema` — the same rules and messages ValidateDataset reports — so a dataset that
validates is a dataset the engine accepts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from services.valuation.arrays import F64, I8, I32, I64, rows_where
from services.valuation.errors import ModelInputError, Violation, raise_if
from services.valuation.policy_schema import (
    COLUMNS,
    DUPLICATE_MESSAGE,
    DUPLICATE_RULE,
    RowCheck,
    check_rows,
    duplicate_rows,
    rule_breaks,
)

_SHOWN_RULES = frozenset({"type", "range", "enum"})
"""Rules whose violation message shows the offending cell."""


def frozen_array(values: Any, dtype: npt.DTypeLike) -> Any:
    """A read-only, C-contiguous copy of ``values`` with ``dtype``."""
    arr = np.array(values, dtype=dtype, copy=True, order="C")
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class Policies:
    """Policy records as column arrays (docs/datasets.md "term_life"), validated on construction.

    ``female`` is 1 for "F" and 0 for "M". ``premium_pp`` is the monthly premium per policy;
    NaN or ≤ 0 means "compute it" (allowed only for new business, duration_mth ≤ 0: issued at
    t = 0 or, negative, at t = −duration_mth). duration_mth = 12·policy_term has matured at
    t = 0 (no month projected). Arrays are read-only copies, so an instance can be shared
    between threads.
    """

    policy_id: I64
    age_at_entry: I32
    female: I8
    policy_term: I32
    policy_count: F64
    sum_assured: F64
    duration_mth: I32
    premium_pp: F64

    def __post_init__(self) -> None:
        dtypes: dict[str, npt.DTypeLike] = {
            "policy_id": np.int64,
            "age_at_entry": np.int32,
            "female": np.int8,
            "policy_term": np.int32,
            "policy_count": np.float64,
            "sum_assured": np.float64,
            "duration_mth": np.int32,
            "premium_pp": np.float64,
        }
        arrays = {name: frozen_array(getattr(self, name), dt) for name, dt in dtypes.items()}
        for name, arr in arrays.items():
            object.__setattr__(self, name, arr)
        sizes = {name: arr.shape for name, arr in arrays.items()}
        if any(len(s) != 1 for s in sizes.values()) or len({s[0] for s in sizes.values()}) != 1:
            raise ModelInputError("policies", [Violation("*", f"columns must be 1-d and equally long, got {sizes}")])
        n = len(self)
        values: dict[str, npt.NDArray[Any]] = {k: v for k, v in arrays.items() if k != "female"}
        female = arrays["female"].astype(np.float64)
        values["sex"] = np.where((female == 0) | (female == 1), female, np.nan)
        valid = {name: np.ones(n, dtype=bool) for name in values}
        valid["premium_pp"] = ~np.isnan(arrays["premium_pp"])  # NaN here means "compute it", not a cell
        bad = [v for b in rule_breaks(n, values, valid) for v in _violations(b.rule, b.column, b.rows, b.message)]
        bad += _violations(DUPLICATE_RULE, "policy_id", duplicate_rows(self.policy_id, valid["policy_id"]), "")
        raise_if("policies", _sorted(bad))

    def __len__(self) -> int:
        return int(self.policy_id.size)

    @property
    def computes_premium(self) -> npt.NDArray[np.bool_]:
        """Rows whose premium is computed: premium_pp absent (NaN) or ≤ 0."""
        return ~(self.premium_pp > 0)

    @property
    def projection_months(self) -> I64:
        """M = 12·policy_term − duration_mth: months projected per policy (in force after that: matured).

        For future new business (duration_mth < 0) M counts the −duration_mth months before issue.
        """
        months: I64 = 12 * self.policy_term.astype(np.int64) - self.duration_mth
        return months

    @property
    def horizon_months(self) -> int:
        """T: the longest projection, max M over the policies (at least 1)."""
        return max(1, int(self.projection_months.max(initial=0)))

    def take(self, rows: npt.ArrayLike) -> Policies:
        """The policies at ``rows`` (a slice of rows, a sample), in the order given."""
        idx = np.asarray(rows)
        return Policies(
            policy_id=self.policy_id[idx],
            age_at_entry=self.age_at_entry[idx],
            female=self.female[idx],
            policy_term=self.policy_term[idx],
            policy_count=self.policy_count[idx],
            sum_assured=self.sum_assured[idx],
            duration_mth=self.duration_mth[idx],
            premium_pp=self.premium_pp[idx],
        )

    @classmethod
    def from_columns(cls, columns: Mapping[str, Any] | pa.Table | pa.RecordBatch) -> Policies:
        """Build from a mapping of column name → array-like, or a pyarrow Table / RecordBatch.

        ``sex`` holds "M"/"F" strings (any case) or a female flag (bool / 0-1 integers).
        Empty cells of optional columns take their defaults (policy_count 1, duration_mth 0,
        premium_pp absent); in a mapping's float arrays NaN is an empty cell, while an Arrow
        NaN is a value, and a non-finite number breaks its column's rule. Every broken rule of
        every row is reported in one error.
        """
        table = _as_table(columns)
        check = check_rows(table)
        if check.missing_columns:
            raise ModelInputError(
                "policies", [Violation(c, "required column is missing", rule="required") for c in check.missing_columns]
            )
        present = set(table.column_names)  # a rule of an absent optional column (premium_pp) shows no cell
        bad = [
            v
            for b in check.breaks
            for v in _violations(
                b.rule, b.column, b.rows, b.message, table.column(b.column) if b.column in present else None
            )
        ]
        ids = check.columns["policy_id"]
        bad += _violations(DUPLICATE_RULE, "policy_id", duplicate_rows(ids.values, ids.valid), "")
        raise_if("policies", _sorted(bad))
        n = check.rows
        sex = check.columns["sex"].values
        return cls(
            policy_id=ids.values,
            age_at_entry=check.columns["age_at_entry"].values.astype(np.int32),
            female=(np.char.upper(sex.astype(str)) == "F").astype(np.int8),
            policy_term=check.columns["policy_term"].values.astype(np.int32),
            policy_count=_with_default(check, "policy_count", n),
            sum_assured=check.columns["sum_assured"].values,
            duration_mth=_with_default(check, "duration_mth", n).astype(np.int32),
            premium_pp=_with_default(check, "premium_pp", n),
        )


def _with_default(check: RowCheck, name: str, n: int) -> F64:
    default = COLUMNS[name].default
    fill = np.nan if default is None else default
    cell = check.columns.get(name)
    if cell is None:
        return np.full(n, fill, dtype=np.float64)
    return np.where(cell.valid, cell.values.astype(np.float64), fill)


def _violations(
    rule: str, column: str, rows: npt.NDArray[np.bool_], message: str, shown: pa.ChunkedArray | None = None
) -> list[Violation]:
    out = []
    for r in rows_where(rows):
        if rule == DUPLICATE_RULE:
            text = DUPLICATE_MESSAGE
        elif shown is not None and rule in _SHOWN_RULES:
            text = f"{message} (got {shown[r].as_py()!r:.40})"
        else:
            text = message
        out.append(Violation(column, text, r, rule))
    return out


def _sorted(violations: list[Violation]) -> list[Violation]:
    return sorted(violations, key=lambda v: (v.row or 0, v.column))


def _as_table(columns: Mapping[str, Any] | pa.Table | pa.RecordBatch) -> pa.Table | pa.RecordBatch:
    if isinstance(columns, pa.Table | pa.RecordBatch):
        return columns
    lengths = {name: len(values) for name, values in columns.items()}
    if len(set(lengths.values())) > 1:
        raise ModelInputError("policies", [Violation("*", f"columns have different lengths: {lengths}")])
    arrays = {name: _as_arrow(name, np.asarray(values)) for name, values in columns.items()}
    return pa.table(arrays) if arrays else pa.table({"policy_id": pa.array([], pa.int64())})


def _as_arrow(name: str, values: npt.NDArray[Any]) -> pa.Array:
    if name == "sex" and values.dtype.kind in "biu":  # a female flag: 0 → M, 1 → F, else shown as is
        return pa.array(["F" if v == 1 else "M" if v == 0 else str(v) for v in values.tolist()], pa.string())
    if values.dtype.kind == "f":  # numpy has no empty cell: NaN is its "absent" (as in pandas)
        return pa.array(values, from_pandas=True)
    if values.dtype.kind in "biuU":
        return pa.array(values)
    try:
        return pa.array(values.tolist())
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
        return pa.array([None if v is None else str(v) for v in values.tolist()], pa.string())
