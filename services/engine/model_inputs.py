"""Inputs of the reference model (`esg → term_life`, see MODEL.md): assumptions, policies, scenarios.

These typed, frozen, validated objects are what every implementation of the reference model
consumes: the numpy reference (`reference.py`), the WASM host that lays them out in shared
memory, and the package builder that writes them as assets. Arrays held by these objects are
read-only copies, so an instance can be shared between threads.

Asset format (files under ``assumptions/`` in a model package; UTF-8, ``\\n`` line ends;
floats are written with Python's ``repr`` so they round-trip exactly):

``mortality.csv``
    header ``age,0,1,…,S``; one row per attained age, ages consecutive and ascending; the
    columns are annual q by select duration 0..S, the last column is ultimate.
``lapse.csv``
    header ``year,rate``; years 0, 1, … consecutive; annual lapse rate; the last rate is
    carried forward.
``curve.csv``
    header ``year,rate``; years 0, 1, … consecutive; annual zero-spot rate z[k].
``expenses.json``
    ``{"acquisition": 300, "maintenance": 60, "inflation": 0.01, "commission_rate": 1.0,
    "premium_loading": 0.5}`` — acquisition per new policy, maintenance per policy per year,
    annual expense inflation, commission rate on year-0 premiums, premium loading.
``options.json`` (optional)
    ``{"female_multiplier": 1.0, "dynamic_lapse": {"beta": 0.0, "lo": 0.5, "hi": 2.0}}``;
    missing keys take these defaults.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
I32 = npt.NDArray[np.int32]
I8 = npt.NDArray[np.int8]

MAX_AGE: Final = 120
"""Oldest attained age a policy may reach (age_at_entry + policy_term ≤ MAX_AGE + 1)."""

MAX_VIOLATIONS_IN_MESSAGE: Final = 20
"""How many violations an error message lists before it summarises the rest."""

ASSET_FILES: Final = (
    "mortality.csv",
    "lapse.csv",
    "curve.csv",
    "expenses.json",
    "options.json",
)
"""The asset file names, relative to the package's ``assumptions/`` folder."""

U64_MAX: Final = (1 << 64) - 1


# ---------------------------------------------------------------------------
# Errors


@dataclass(frozen=True)
class Violation:
    """One broken input rule: ``row`` is the 0-based dataset row (None for a whole-input rule)."""

    column: str
    message: str
    row: int | None = None

    def __str__(self) -> str:
        where = f"row {self.row}: " if self.row is not None else ""
        return f"{where}{self.column}: {self.message}"


class InvalidModelInput(ValueError):
    """Model inputs break the rules of MODEL.md; ``violations`` lists each broken rule."""

    def __init__(self, what: str, violations: Iterable[Violation]) -> None:
        self.what = what
        self.violations: tuple[Violation, ...] = tuple(violations)
        shown = "; ".join(str(v) for v in self.violations[:MAX_VIOLATIONS_IN_MESSAGE])
        more = len(self.violations) - MAX_VIOLATIONS_IN_MESSAGE
        suffix = f"; … and {more} more" if more > 0 else ""
        super().__init__(f"invalid {what}: {shown}{suffix}")


def _raise_if(what: str, violations: list[Violation]) -> None:
    if violations:
        raise InvalidModelInput(what, violations)


def _frozen_array(values: Any, dtype: npt.DTypeLike) -> Any:
    """A read-only, C-contiguous copy of ``values`` with ``dtype``."""
    arr = np.array(values, dtype=dtype, copy=True, order="C")
    arr.setflags(write=False)
    return arr


def _rows_where(mask: npt.NDArray[np.bool_]) -> list[int]:
    return [int(i) for i in np.flatnonzero(mask)]


# ---------------------------------------------------------------------------
# Assumptions


# eq=False: arrays have no truth value, so compare fields explicitly
@dataclass(frozen=True, eq=False)
class Assumptions:
    """The term-life assumptions (MODEL.md "Inputs").

    ``mortality[i, d]`` is the annual q at attained age ``mortality_min_age + i`` and select
    duration ``d`` (0..S, the last column ultimate); ``lapse[y]`` the annual lapse rate in
    policy year y (last carried forward); ``curve[k]`` the annual zero-spot rate z[k] for year k.
    """

    mortality: F64
    mortality_min_age: int
    lapse: F64
    expense_acq: float
    expense_maint: float
    inflation: float
    commission_rate: float
    premium_loading: float
    curve: F64
    female_multiplier: float = 1.0
    dyn_lapse_beta: float = 0.0
    dyn_lapse_lo: float = 0.5
    dyn_lapse_hi: float = 2.0

    def __post_init__(self) -> None:
        mort = _frozen_array(self.mortality, np.float64)
        lapse = _frozen_array(self.lapse, np.float64)
        curve = _frozen_array(self.curve, np.float64)
        object.__setattr__(self, "mortality", mort)
        object.__setattr__(self, "lapse", lapse)
        object.__setattr__(self, "curve", curve)
        for name in (
            "expense_acq",
            "expense_maint",
            "inflation",
            "commission_rate",
            "premium_loading",
            "female_multiplier",
            "dyn_lapse_beta",
            "dyn_lapse_lo",
            "dyn_lapse_hi",
        ):
            object.__setattr__(self, name, float(getattr(self, name)))
        object.__setattr__(self, "mortality_min_age", int(self.mortality_min_age))
        bad: list[Violation] = []
        if mort.ndim != 2 or mort.shape[0] < 1 or mort.shape[1] < 1:
            bad.append(
                Violation(
                    "mortality",
                    f"must be a non-empty ages × durations table, got shape {mort.shape}",
                )
            )
        elif not (np.all(np.isfinite(mort)) and np.all((mort >= 0) & (mort <= 1))):
            bad.append(Violation("mortality", "every q must be in [0, 1]"))
        if not 0 <= self.mortality_min_age <= MAX_AGE:
            bad.append(Violation("mortality_min_age", f"must be in 0..{MAX_AGE}"))
        if lapse.ndim != 1 or lapse.size < 1:
            bad.append(Violation("lapse", "must be a non-empty vector of annual rates"))
        elif not (np.all(np.isfinite(lapse)) and np.all((lapse >= 0) & (lapse <= 1))):
            bad.append(Violation("lapse", "every rate must be in [0, 1]"))
        if curve.ndim != 1 or curve.size < 1:
            bad.append(
                Violation(
                    "curve", "must be a non-empty vector of annual zero-spot rates"
                )
            )
        elif not (np.all(np.isfinite(curve)) and np.all(curve > -1)):
            bad.append(Violation("curve", "every rate must be finite and > -1"))
        for name in (
            "expense_acq",
            "expense_maint",
            "commission_rate",
            "premium_loading",
            "female_multiplier",
        ):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                bad.append(Violation(name, f"must be finite and ≥ 0, got {v!r}"))
        if not (math.isfinite(self.inflation) and self.inflation > -1):
            bad.append(
                Violation(
                    "inflation", f"must be finite and > -1, got {self.inflation!r}"
                )
            )
        if not math.isfinite(self.dyn_lapse_beta):
            bad.append(Violation("dyn_lapse_beta", "must be finite"))
        lo, hi = self.dyn_lapse_lo, self.dyn_lapse_hi
        if not (math.isfinite(lo) and math.isfinite(hi) and 0 <= lo <= hi):
            bad.append(
                Violation(
                    "dyn_lapse_lo/hi", f"need 0 ≤ lo ≤ hi, got lo={lo!r}, hi={hi!r}"
                )
            )
        _raise_if("assumptions", bad)

    @property
    def select_period(self) -> int:
        """S: the last select duration column (ultimate)."""
        return int(self.mortality.shape[1]) - 1

    @property
    def mortality_max_age(self) -> int:
        """The oldest attained age the mortality table covers."""
        return self.mortality_min_age + int(self.mortality.shape[0]) - 1

    def check_covers(self, policies: Policies) -> None:
        """Raise InvalidModelInput naming rows whose projection needs ages or years not given.

        A policy needs mortality for ages age_at_entry … age_at_entry + policy_term − 1 and the
        curve for years 0 … policy_term − 1 (z[⌊t/12⌋] with t < 12·policy_term).
        """
        last_age = policies.age_at_entry.astype(np.int64) + policies.policy_term - 1
        first_age = policies.age_at_entry.astype(np.int64) + policies.duration_mth // 12
        bad = [
            Violation(
                "age_at_entry",
                f"attained ages below the mortality table's {self.mortality_min_age}",
                r,
            )
            for r in _rows_where(first_age < self.mortality_min_age)
        ]
        bad += [
            Violation(
                "policy_term",
                f"attained ages beyond the mortality table's {self.mortality_max_age}",
                r,
            )
            for r in _rows_where(last_age > self.mortality_max_age)
        ]
        bad += [
            Violation(
                "policy_term",
                f"longer than the discount curve ({self.curve.size} years)",
                r,
            )
            for r in _rows_where(policies.policy_term > self.curve.size)
        ]
        _raise_if(
            "policies for these assumptions",
            sorted(bad, key=lambda v: (v.row or 0, v.column)),
        )


# ---------------------------------------------------------------------------
# Policies

POLICY_COLUMNS: Final = (
    "policy_id",
    "age_at_entry",
    "sex",
    "policy_term",
    "policy_count",
    "sum_assured",
    "duration_mth",
    "premium_pp",
)
"""Dataset columns of a policy record; the last three (and policy_count) are optional."""

REQUIRED_POLICY_COLUMNS: Final = (
    "policy_id",
    "age_at_entry",
    "sex",
    "policy_term",
    "sum_assured",
)


@dataclass(frozen=True, eq=False)
class Policies:
    """Policy records as column arrays (MODEL.md "Inputs"), validated on construction.

    ``female`` is 1 for "F" and 0 for "M". ``premium_pp`` is the monthly premium per policy;
    NaN or ≤ 0 means "compute it" (allowed only for new business, duration_mth = 0).
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
        arrays = {
            name: _frozen_array(getattr(self, name), dt) for name, dt in dtypes.items()
        }
        for name, arr in arrays.items():
            object.__setattr__(self, name, arr)
        sizes = {name: arr.shape for name, arr in arrays.items()}
        if (
            any(len(s) != 1 for s in sizes.values())
            or len({s[0] for s in sizes.values()}) != 1
        ):
            raise InvalidModelInput(
                "policies",
                [Violation("*", f"columns must be 1-d and equally long, got {sizes}")],
            )
        _raise_if("policies", _policy_violations(**arrays))

    def __len__(self) -> int:
        return int(self.policy_id.size)

    @property
    def computes_premium(self) -> npt.NDArray[np.bool_]:
        """Rows whose premium is computed: premium_pp absent (NaN) or ≤ 0."""
        return ~(self.premium_pp > 0)

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
    def from_columns(cls, columns: Mapping[str, Any] | Any) -> Policies:
        """Build from a mapping of column name → array-like, or a pyarrow Table / RecordBatch.

        ``sex`` holds "M"/"F" strings (any case) or a female flag (bool / 0-1 integers).
        Missing optional columns default to policy_count 1, duration_mth 0, premium_pp absent.
        Numeric columns must hold whole numbers where the type is an integer; nulls are allowed
        only in premium_pp (meaning absent).
        """
        cols = _columns_as_numpy(columns)
        missing = [c for c in REQUIRED_POLICY_COLUMNS if c not in cols]
        if missing:
            raise InvalidModelInput(
                "policies",
                [Violation(c, "required column is missing") for c in missing],
            )
        n = len(cols["policy_id"])
        bad: list[Violation] = []
        female = _female_flags(cols["sex"], bad)
        ints = {
            name: _whole_numbers(name, cols[name], bad)
            for name in ("policy_id", "age_at_entry", "policy_term")
        }
        duration = (
            _whole_numbers("duration_mth", cols["duration_mth"], bad)
            if "duration_mth" in cols
            else np.zeros(n, np.int64)
        )
        count = (
            _floats("policy_count", cols["policy_count"], bad)
            if "policy_count" in cols
            else np.ones(n)
        )
        sa = _floats("sum_assured", cols["sum_assured"], bad)
        prem = (
            _floats("premium_pp", cols["premium_pp"], None)
            if "premium_pp" in cols
            else np.full(n, np.nan)
        )
        for name, arr in (
            ("age_at_entry", ints["age_at_entry"]),
            ("policy_term", ints["policy_term"]),
            ("duration_mth", duration),
        ):
            out = (arr < np.iinfo(np.int32).min) | (arr > np.iinfo(np.int32).max)
            bad += [
                Violation(name, "out of the int32 range", r) for r in _rows_where(out)
            ]
            arr[out] = 0
        arrays: dict[str, npt.NDArray[Any]] = {
            "policy_id": ints["policy_id"],
            "age_at_entry": ints["age_at_entry"].astype(np.int32),
            "female": female,
            "policy_term": ints["policy_term"].astype(np.int32),
            "policy_count": count,
            "sum_assured": sa,
            "duration_mth": duration.astype(np.int32),
            "premium_pp": prem,
        }
        if bad:  # report the rule violations of the other cells too, in one error
            seen = {(v.row, v.column) for v in bad}
            bad += [
                v for v in _policy_violations(**arrays) if (v.row, v.column) not in seen
            ]
            _raise_if("policies", sorted(bad, key=lambda v: (v.row or 0, v.column)))
        return cls(**arrays)


def _columns_as_numpy(columns: Mapping[str, Any] | Any) -> dict[str, npt.NDArray[Any]]:
    if hasattr(columns, "column_names") and hasattr(
        columns, "column"
    ):  # pyarrow Table / RecordBatch
        out: dict[str, npt.NDArray[Any]] = {}
        for name in columns.column_names:
            col = columns.column(name)
            out[name] = np.asarray(
                col.to_numpy(zero_copy_only=False) if hasattr(col, "to_numpy") else col
            )
        return out
    lengths = {name: len(values) for name, values in columns.items()}
    if len(set(lengths.values())) > 1:
        raise InvalidModelInput(
            "policies", [Violation("*", f"columns have different lengths: {lengths}")]
        )
    return {name: np.asarray(values) for name, values in columns.items()}


def _female_flags(values: npt.NDArray[Any], bad: list[Violation]) -> I8:
    if values.dtype.kind in "biu":
        flags = values.astype(np.int64)
        bad += [
            Violation("sex", "flag must be 0 (M) or 1 (F)", r)
            for r in _rows_where((flags != 0) & (flags != 1))
        ]
        return flags.astype(np.int8)
    text = np.array(
        [str(v).strip().upper() if v is not None else "" for v in values.tolist()],
        dtype=object,
    )
    is_f, is_m = text == "F", text == "M"
    bad += [
        Violation("sex", f"must be 'M' or 'F', got {values[r]!s:.20}", r)
        for r in _rows_where(~(is_f | is_m))
    ]
    female: I8 = is_f.astype(np.int8)
    return female


def _floats(name: str, values: npt.NDArray[Any], bad: list[Violation] | None) -> F64:
    """Column as float64; None/null becomes NaN (reported unless ``bad`` is None)."""
    try:
        arr = values.astype(np.float64)
    except (TypeError, ValueError):
        arr = np.array(
            [np.nan if v is None else _to_float(v) for v in values.tolist()],
            dtype=np.float64,
        )
    if bad is not None:
        bad += [
            Violation(name, "must be a finite number", r)
            for r in _rows_where(~np.isfinite(arr))
        ]
    return arr


def _to_float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _whole_numbers(name: str, values: npt.NDArray[Any], bad: list[Violation]) -> I64:
    if values.dtype.kind in "iu":
        if (
            values.dtype == np.uint64
            and values.size
            and int(values.max()) > np.iinfo(np.int64).max
        ):
            bad.append(Violation(name, "exceeds the int64 range"))
            return np.zeros(values.shape, np.int64)
        return values.astype(np.int64)
    arr = _floats(name, values, None)
    ok = np.isfinite(arr) & (arr == np.floor(arr)) & (np.abs(arr) < 2.0**63)
    bad += [
        Violation(name, f"must be a whole number, got {values[r]!s:.20}", r)
        for r in _rows_where(~ok)
    ]
    return np.where(ok, arr, 0).astype(np.int64)


def _policy_violations(
    *,
    policy_id: I64,
    age_at_entry: npt.NDArray[Any],
    female: npt.NDArray[Any],
    policy_term: npt.NDArray[Any],
    policy_count: F64,
    sum_assured: F64,
    duration_mth: npt.NDArray[Any],
    premium_pp: F64,
) -> list[Violation]:
    """Every broken row rule of MODEL.md's policy table, sorted by row."""
    bad: list[Violation] = []

    def rule(column: str, broken: npt.NDArray[np.bool_], message: str) -> None:
        bad.extend(Violation(column, message, r) for r in _rows_where(broken))

    ids = policy_id
    if ids.size:
        order = np.argsort(ids, kind="stable")
        dup = np.zeros(ids.size, dtype=bool)
        dup[order[1:]] = ids[order[1:]] == ids[order[:-1]]
        rule("policy_id", dup, "duplicates an earlier policy_id")
    age, term, dur = (
        age_at_entry.astype(np.int64),
        policy_term.astype(np.int64),
        duration_mth.astype(np.int64),
    )
    rule("age_at_entry", (age < 0) | (age > MAX_AGE), f"must be in 0..{MAX_AGE}")
    rule("female", (female != 0) & (female != 1), "must be 0 (M) or 1 (F)")
    rule("policy_term", term < 1, "must be ≥ 1 year")
    rule(
        "policy_term",
        (term >= 1) & (age + term > MAX_AGE + 1),
        f"age_at_entry + policy_term must be ≤ {MAX_AGE + 1}",
    )
    rule(
        "policy_count",
        ~(np.isfinite(policy_count) & (policy_count >= 0)),
        "must be finite and ≥ 0",
    )
    rule(
        "sum_assured",
        ~(np.isfinite(sum_assured) & (sum_assured > 0)),
        "must be finite and > 0",
    )
    rule("duration_mth", dur < 0, "must be ≥ 0")
    rule(
        "duration_mth",
        (dur >= 0) & (term >= 1) & (dur >= 12 * term),
        "must be < 12·policy_term",
    )
    rule("premium_pp", np.isinf(premium_pp), "must be finite (or absent)")
    rule(
        "premium_pp",
        ~(premium_pp > 0) & (dur != 0),
        "is needed when duration_mth > 0 (it is computed only for new business)",
    )
    return sorted(bad, key=lambda v: (v.row or 0, v.column))


# ---------------------------------------------------------------------------
# Scenarios


@dataclass(frozen=True)
class ScenarioParams:
    """Parameters of the scenario generator (MODEL.md "Scenario generator").

    ``count`` scenarios s = 0 … count−1; with ``include_base`` scenario 0 is the base curve
    (r ≡ 0). ``a`` is the Ornstein–Uhlenbeck mean reversion per year, ``sigma`` the annual
    volatility of the short-rate shock, ``seed`` an unsigned 64-bit integer.
    """

    count: int
    seed: int = 0
    a: float = 0.1
    sigma: float = 0.01
    include_base: bool = True

    def __post_init__(self) -> None:
        bad: list[Violation] = []
        if (
            isinstance(self.count, bool)
            or not isinstance(self.count, int | np.integer)
            or self.count < 1
        ):
            bad.append(
                Violation("count", f"must be an integer ≥ 1, got {self.count!r}")
            )
        if (
            isinstance(self.seed, bool)
            or not isinstance(self.seed, int | np.integer)
            or not 0 <= int(self.seed) <= U64_MAX
        ):
            bad.append(
                Violation("seed", f"must be an integer in 0..2^64−1, got {self.seed!r}")
            )
        if not (math.isfinite(self.a) and self.a > 0):
            bad.append(Violation("a", f"must be finite and > 0, got {self.a!r}"))
        if not (math.isfinite(self.sigma) and self.sigma >= 0):
            bad.append(
                Violation("sigma", f"must be finite and ≥ 0, got {self.sigma!r}")
            )
        _raise_if("scenario parameters", bad)
        object.__setattr__(self, "count", int(self.count))
        object.__setattr__(self, "seed", int(self.seed))
        object.__setattr__(self, "a", float(self.a))
        object.__setattr__(self, "sigma", float(self.sigma))
        object.__setattr__(self, "include_base", bool(self.include_base))


# ---------------------------------------------------------------------------
# Asset files


@dataclass(frozen=True)
class _Table:
    header: list[str]
    rows: list[list[str]] = field(default_factory=list)


def _read_csv(name: str, data: bytes) -> _Table:
    reader = csv.reader(io.StringIO(data.decode("utf-8")))
    lines = [row for row in reader if row and any(cell.strip() for cell in row)]
    if not lines:
        raise InvalidModelInput("assumption files", [Violation(name, "is empty")])
    return _Table(
        [c.strip() for c in lines[0]], [[c.strip() for c in row] for row in lines[1:]]
    )


def _csv_floats(
    name: str, table: _Table, first_key: int | None
) -> tuple[list[int], F64]:
    """Parse rows "key,v0,v1,…"; keys must be consecutive integers (from ``first_key`` if given)."""
    keys: list[int] = []
    values: list[list[float]] = []
    width = len(table.header)
    for i, row in enumerate(table.rows, start=2):
        if len(row) != width:
            raise InvalidModelInput(
                "assumption files",
                [Violation(name, f"line {i} has {len(row)} fields, expected {width}")],
            )
        try:
            keys.append(int(row[0]))
            values.append([float(c) for c in row[1:]])
        except ValueError as exc:
            raise InvalidModelInput(
                "assumption files", [Violation(name, f"line {i}: {exc}")]
            ) from None
    if not keys:
        raise InvalidModelInput(
            "assumption files", [Violation(name, "has no data rows")]
        )
    start = keys[0] if first_key is None else first_key
    if keys != list(range(start, start + len(keys))):
        raise InvalidModelInput(
            "assumption files",
            [Violation(name, f"keys must be consecutive from {start}")],
        )
    return keys, np.array(values, dtype=np.float64)


def _write_csv(header: list[str], rows: Iterable[list[Any]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(
            [repr(float(v)) if isinstance(v, float | np.floating) else v for v in row]
        )
    return out.getvalue().encode("utf-8")


def assumption_files(assumptions: Assumptions) -> dict[str, bytes]:
    """The assumptions as asset files (name under ``assumptions/`` → bytes); see the module docstring."""
    a = assumptions
    ages = range(a.mortality_min_age, a.mortality_max_age + 1)
    mortality = _write_csv(
        ["age", *(str(d) for d in range(a.select_period + 1))],
        (
            [age, *(float(q) for q in row)]
            for age, row in zip(ages, a.mortality, strict=True)
        ),
    )
    lapse = _write_csv(["year", "rate"], ([y, float(r)] for y, r in enumerate(a.lapse)))
    curve = _write_csv(["year", "rate"], ([k, float(z)] for k, z in enumerate(a.curve)))
    expenses = {
        "acquisition": a.expense_acq,
        "maintenance": a.expense_maint,
        "inflation": a.inflation,
        "commission_rate": a.commission_rate,
        "premium_loading": a.premium_loading,
    }
    options = {
        "female_multiplier": a.female_multiplier,
        "dynamic_lapse": {
            "beta": a.dyn_lapse_beta,
            "lo": a.dyn_lapse_lo,
            "hi": a.dyn_lapse_hi,
        },
    }
    return {
        "mortality.csv": mortality,
        "lapse.csv": lapse,
        "curve.csv": curve,
        "expenses.json": (json.dumps(expenses, indent=2) + "\n").encode("utf-8"),
        "options.json": (json.dumps(options, indent=2) + "\n").encode("utf-8"),
    }


def assumptions_from_files(files: Mapping[str, bytes]) -> Assumptions:
    """Parse asset files (name under ``assumptions/`` → bytes); ``options.json`` is optional."""
    missing = [n for n in ASSET_FILES[:4] if n not in files]
    if missing:
        raise InvalidModelInput(
            "assumption files", [Violation(n, "is missing") for n in missing]
        )
    mort_table = _read_csv("mortality.csv", files["mortality.csv"])
    if mort_table.header[0] != "age" or mort_table.header[1:] != [
        str(d) for d in range(len(mort_table.header) - 1)
    ]:
        raise InvalidModelInput(
            "assumption files",
            [Violation("mortality.csv", "header must be age,0,1,…,S")],
        )
    ages, mortality = _csv_floats("mortality.csv", mort_table, None)
    for name in ("lapse.csv", "curve.csv"):
        if _read_csv(name, files[name]).header != ["year", "rate"]:
            raise InvalidModelInput(
                "assumption files", [Violation(name, "header must be year,rate")]
            )
    _, lapse = _csv_floats("lapse.csv", _read_csv("lapse.csv", files["lapse.csv"]), 0)
    _, curve = _csv_floats("curve.csv", _read_csv("curve.csv", files["curve.csv"]), 0)
    expenses = _read_json("expenses.json", files["expenses.json"])
    options = (
        _read_json("options.json", files["options.json"])
        if "options.json" in files
        else {}
    )
    dyn = options.get("dynamic_lapse", {})
    try:
        return Assumptions(
            mortality=mortality,
            mortality_min_age=ages[0],
            lapse=lapse[:, 0],
            curve=curve[:, 0],
            expense_acq=float(expenses["acquisition"]),
            expense_maint=float(expenses["maintenance"]),
            inflation=float(expenses["inflation"]),
            commission_rate=float(expenses["commission_rate"]),
            premium_loading=float(expenses["premium_loading"]),
            female_multiplier=float(options.get("female_multiplier", 1.0)),
            dyn_lapse_beta=float(dyn.get("beta", 0.0)),
            dyn_lapse_lo=float(dyn.get("lo", 0.5)),
            dyn_lapse_hi=float(dyn.get("hi", 2.0)),
        )
    except KeyError as exc:
        raise InvalidModelInput(
            "assumption files", [Violation("expenses.json", f"missing key {exc}")]
        ) from None
    except (TypeError, ValueError, AttributeError) as exc:
        if isinstance(exc, InvalidModelInput):
            raise
        raise InvalidModelInput(
            "assumption files", [Violation("expenses.json/options.json", str(exc))]
        ) from None


def _read_json(name: str, data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidModelInput(
            "assumption files", [Violation(name, f"is not valid JSON: {exc}")]
        ) from None
    if not isinstance(value, dict):
        raise InvalidModelInput(
            "assumption files", [Violation(name, "must hold a JSON object")]
        )
    return value


def write_assumptions(assumptions: Assumptions, directory: Path) -> list[Path]:
    """Write the asset files into ``directory`` (created if needed); returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in assumption_files(assumptions).items():
        path = directory / name
        path.write_bytes(data)
        written.append(path)
    return written


def load_assumptions(directory: Path) -> Assumptions:
    """Read the asset files from ``directory`` (a package's unpacked ``assumptions/`` folder)."""
    files = {
        name: (directory / name).read_bytes()
        for name in ASSET_FILES
        if (directory / name).is_file()
    }
    return assumptions_from_files(files)


# ---------------------------------------------------------------------------
# lifelib's sample assumptions


def lifelib_model_dir(model: str = "BasicTerm_S") -> Path:
    """The installed lifelib's ``libraries/basiclife/<model>`` folder (needs the lifelib package)."""
    import lifelib  # type: ignore[import-untyped]  # lazily: lifelib is a development dependency

    return Path(lifelib.__file__).parent / "libraries" / "basiclife" / model


def lifelib_sample_assumptions() -> Assumptions:
    """lifelib basiclife BasicTerm_S's sample assumptions, read from the installed lifelib.

    Mortality (ages 18..120, S = 5) and the discount curve come from the model's own
    ``mort_table.xlsx`` and ``disc_rate_ann.xlsx``; the scalar assumptions are the model's
    formulas: lapse max(0.1 − 0.02·y, 0.02), acquisition 300, maintenance 60, inflation 0.01,
    commission 100% of year-0 premiums, loading 0.5. Needs lifelib, pandas and openpyxl.
    """
    import pandas as pd  # type: ignore[import-untyped]  # lazily: a development dependency

    folder = lifelib_model_dir("BasicTerm_S")
    mort = pd.read_excel(folder / "mort_table.xlsx", index_col=0)
    ages = [int(a) for a in mort.index]
    if ages != list(range(ages[0], ages[0] + len(ages))):
        raise ValueError("lifelib's mort_table ages are not consecutive")
    mort = mort[sorted(mort.columns, key=lambda c: int(c))]
    disc = pd.read_excel(folder / "disc_rate_ann.xlsx", index_col=0)
    years = [int(y) for y in disc.index]
    if years != list(range(len(years))):
        raise ValueError("lifelib's disc_rate_ann years do not run 0, 1, …")
    # lapse max(0.1 − 0.02·y, 0.02) is 0.02 from year 4 on; the last value is carried forward
    lapse = [max(0.1 - 0.02 * y, 0.02) for y in range(5)]
    return Assumptions(
        mortality=mort.to_numpy(dtype=np.float64),
        mortality_min_age=ages[0],
        lapse=np.array(lapse),
        expense_acq=300.0,
        expense_maint=60.0,
        inflation=0.01,
        commission_rate=1.0,
        premium_loading=0.5,
        curve=disc.iloc[:, 0].to_numpy(dtype=np.float64),
    )
