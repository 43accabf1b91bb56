"""Inputs of the reference model (`esg → term_life`, see MODEL.md): assumptions, policies, scenarios.

These typed, frozen, validated objects are what every implementation of the reference model
consumes: the numpy reference (`reference.py`), the WASM host that lays them out in shared
memory, and the package builder that writes them as assets. Arrays held by these objects are
read-only copies, so an instance can be shared between threads.

Their asset-file form (``assumptions/*`` in a model package) lives in ``assumption_assets.py``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
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


class ModelInputError(ValueError):
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
        raise ModelInputError(what, violations)


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
            bad.append(Violation("curve", "must be a non-empty vector of annual zero-spot rates"))
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
            bad.append(Violation("inflation", f"must be finite and > -1, got {self.inflation!r}"))
        if not math.isfinite(self.dyn_lapse_beta):
            bad.append(Violation("dyn_lapse_beta", "must be finite"))
        lo, hi = self.dyn_lapse_lo, self.dyn_lapse_hi
        if not (math.isfinite(lo) and math.isfinite(hi) and 0 <= lo <= hi):
            bad.append(Violation("dyn_lapse_lo/hi", f"need 0 ≤ lo ≤ hi, got lo={lo!r}, hi={hi!r}"))
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
        """Raise ModelInputError naming rows whose projection needs ages or years not given.

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
        arrays = {name: _frozen_array(getattr(self, name), dt) for name, dt in dtypes.items()}
        for name, arr in arrays.items():
            object.__setattr__(self, name, arr)
        sizes = {name: arr.shape for name, arr in arrays.items()}
        if any(len(s) != 1 for s in sizes.values()) or len({s[0] for s in sizes.values()}) != 1:
            raise ModelInputError(
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
            raise ModelInputError(
                "policies",
                [Violation(c, "required column is missing") for c in missing],
            )
        n = len(cols["policy_id"])
        bad: list[Violation] = []
        female = _female_flags(cols["sex"], bad)
        ints = {name: _whole_numbers(name, cols[name], bad) for name in ("policy_id", "age_at_entry", "policy_term")}
        duration = (
            _whole_numbers("duration_mth", cols["duration_mth"], bad)
            if "duration_mth" in cols
            else np.zeros(n, np.int64)
        )
        count = _floats("policy_count", cols["policy_count"], bad) if "policy_count" in cols else np.ones(n)
        sa = _floats("sum_assured", cols["sum_assured"], bad)
        prem = _floats("premium_pp", cols["premium_pp"], None) if "premium_pp" in cols else np.full(n, np.nan)
        for name, arr in (
            ("age_at_entry", ints["age_at_entry"]),
            ("policy_term", ints["policy_term"]),
            ("duration_mth", duration),
        ):
            out = (arr < np.iinfo(np.int32).min) | (arr > np.iinfo(np.int32).max)
            bad += [Violation(name, "out of the int32 range", r) for r in _rows_where(out)]
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
            bad += [v for v in _policy_violations(**arrays) if (v.row, v.column) not in seen]
            _raise_if("policies", sorted(bad, key=lambda v: (v.row or 0, v.column)))
        return cls(**arrays)


def _columns_as_numpy(columns: Mapping[str, Any] | Any) -> dict[str, npt.NDArray[Any]]:
    if hasattr(columns, "column_names") and hasattr(columns, "column"):  # pyarrow Table / RecordBatch
        out: dict[str, npt.NDArray[Any]] = {}
        for name in columns.column_names:
            col = columns.column(name)
            out[name] = np.asarray(col.to_numpy(zero_copy_only=False) if hasattr(col, "to_numpy") else col)
        return out
    lengths = {name: len(values) for name, values in columns.items()}
    if len(set(lengths.values())) > 1:
        raise ModelInputError("policies", [Violation("*", f"columns have different lengths: {lengths}")])
    return {name: np.asarray(values) for name, values in columns.items()}


def _female_flags(values: npt.NDArray[Any], bad: list[Violation]) -> I8:
    if values.dtype.kind in "biu":
        flags = values.astype(np.int64)
        bad += [Violation("sex", "flag must be 0 (M) or 1 (F)", r) for r in _rows_where((flags != 0) & (flags != 1))]
        return flags.astype(np.int8)
    text = np.array(
        [str(v).strip().upper() if v is not None else "" for v in values.tolist()],
        dtype=object,
    )
    is_f, is_m = text == "F", text == "M"
    bad += [Violation("sex", f"must be 'M' or 'F', got {values[r]!s:.20}", r) for r in _rows_where(~(is_f | is_m))]
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
        bad += [Violation(name, "must be a finite number", r) for r in _rows_where(~np.isfinite(arr))]
    return arr


def _to_float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _whole_numbers(name: str, values: npt.NDArray[Any], bad: list[Violation]) -> I64:
    if values.dtype.kind in "iu":
        if values.dtype == np.uint64 and values.size and int(values.max()) > np.iinfo(np.int64).max:
            bad.append(Violation(name, "exceeds the int64 range"))
            return np.zeros(values.shape, np.int64)
        return values.astype(np.int64)
    arr = _floats(name, values, None)
    ok = np.isfinite(arr) & (arr == np.floor(arr)) & (np.abs(arr) < 2.0**63)
    bad += [Violation(name, f"must be a whole number, got {values[r]!s:.20}", r) for r in _rows_where(~ok)]
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
        if isinstance(self.count, bool) or not isinstance(self.count, int | np.integer) or self.count < 1:
            bad.append(Violation("count", f"must be an integer ≥ 1, got {self.count!r}"))
        if (
            isinstance(self.seed, bool)
            or not isinstance(self.seed, int | np.integer)
            or not 0 <= int(self.seed) <= U64_MAX
        ):
            bad.append(Violation("seed", f"must be an integer in 0..2^64−1, got {self.seed!r}"))
        if not (math.isfinite(self.a) and self.a > 0):
            bad.append(Violation("a", f"must be finite and > 0, got {self.a!r}"))
        if not (math.isfinite(self.sigma) and self.sigma >= 0):
            bad.append(Violation("sigma", f"must be finite and ≥ 0, got {self.sigma!r}"))
        _raise_if("scenario parameters", bad)
        object.__setattr__(self, "count", int(self.count))
        object.__setattr__(self, "seed", int(self.seed))
        object.__setattr__(self, "a", float(self.a))
        object.__setattr__(self, "sigma", float(self.sigma))
        object.__setattr__(self, "include_base", bool(self.include_base))
