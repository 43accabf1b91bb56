"""The term-life assumptions (docs/model.md "term_life"): typed, frozen and validated on construction.

Their asset-file form (``assumptions/*`` in a model package) lives in the engine's
``assumption_assets``; the tables here are what every implementation of the model reads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from services.valuation.arrays import F64, rows_where
from services.valuation.errors import Violation, raise_if
from services.valuation.policies import Policies, frozen_array
from services.valuation.policy_schema import MAX_AGE


# eq=False: arrays have no truth value, so compare fields explicitly
@dataclass(frozen=True, eq=False)
class Assumptions:
    """The term-life assumptions (docs/model.md "term_life", Inputs).

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
        mort = frozen_array(self.mortality, np.float64)
        lapse = frozen_array(self.lapse, np.float64)
        curve = frozen_array(self.curve, np.float64)
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
        raise_if("assumptions", bad)

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

        A policy needs mortality for ages age_at_entry + ⌊max(duration_mth, 0)/12⌋ …
        age_at_entry + policy_term − 1 and the curve for years 0 … policy_term − 1, and for
        future new business (duration_mth < 0, issued at t = −duration_mth) years 0 …
        ⌊(12·policy_term − duration_mth − 1)/12⌋ (z[⌊t/12⌋] with t < 12·policy_term − duration_mth).
        """
        duration = policies.duration_mth.astype(np.int64)
        last_age = policies.age_at_entry.astype(np.int64) + policies.policy_term - 1
        first_age = policies.age_at_entry.astype(np.int64) + np.maximum(duration, 0) // 12
        last_year = (policies.projection_months - 1) // 12
        bad = [
            Violation(
                "age_at_entry",
                f"attained ages below the mortality table's {self.mortality_min_age}",
                r,
            )
            for r in rows_where(first_age < self.mortality_min_age)
        ]
        bad += [
            Violation(
                "policy_term",
                f"attained ages beyond the mortality table's {self.mortality_max_age}",
                r,
            )
            for r in rows_where(last_age > self.mortality_max_age)
        ]
        bad += [
            Violation(
                "policy_term",
                f"longer than the discount curve ({self.curve.size} years)",
                r,
            )
            for r in rows_where(policies.policy_term > self.curve.size)
        ]
        bad += [
            Violation(
                "duration_mth",
                f"issued too late for the discount curve ({self.curve.size} years; needs year {int(last_year[r])})",
                r,
            )
            for r in rows_where((policies.policy_term <= self.curve.size) & (last_year >= self.curve.size))
        ]
        raise_if(
            "policies for these assumptions",
            sorted(bad, key=lambda v: (v.row or 0, v.column)),
        )
