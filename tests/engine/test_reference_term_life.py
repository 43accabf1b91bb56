"""python://term_life against a scalar transcription of docs/model.md, and its invariances.

The scalar version loops policy by policy, scenario by scenario, month by month with Python
floats; the numpy reference must agree with it on every feature the lifelib oracle cannot
reach: in-force policies, policy counts, a female multiplier and dynamic lapses with clamping,
and with them future new business (duration_mth < 0) and policies maturing at t = 0.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from services.engine import reference as ref
from services.engine.assumption_assets import lifelib_sample_assumptions
from services.valuation.arrays import F64
from services.valuation.assumptions import Assumptions
from services.valuation.errors import ModelInputError
from services.valuation.policies import Policies
from services.valuation.scenarios import ScenarioParams


def _scalar_pvs(p: Policies, i: int, a: Assumptions, r: list[float], premium: float) -> tuple[float, ...]:
    """(PV premiums, claims, expenses, commissions, net) of policy i under shock path r."""
    sexfactor = a.female_multiplier if p.female[i] else 1.0
    dur, age, count = int(p.duration_mth[i]), int(p.age_at_entry[i]), float(p.policy_count[i])
    sa = float(p.sum_assured[i])
    pols, cum_r = (count if dur >= 0 else 0.0), 0.0
    pv = [0.0, 0.0, 0.0, 0.0]
    for t in range(12 * int(p.policy_term[i]) - dur):  # none when dur = 12·term (matured at t = 0)
        dm = dur + t
        if dm < 0:  # future new business before its issue at t = −dur
            cum_r += r[t]
            continue
        if dm == 0:
            pols = count
        y = dm // 12
        x = age + y
        q = float(a.mortality[x - a.mortality_min_age, min(y, a.select_period)])
        q_mth = 1 - (1 - min(1.0, q * sexfactor)) ** (1 / 12)
        l_base = 1 - (1 - float(a.lapse[min(y, a.lapse.size - 1)])) ** (1 / 12)
        dl = min(max(1 + a.dyn_lapse_beta * r[t], a.dyn_lapse_lo), a.dyn_lapse_hi)
        l_mth = min(1.0, l_base * dl)
        deaths = pols * q_mth
        lapses = (pols - deaths) * l_mth
        premiums = premium * pols
        claims = sa * deaths
        expenses = (a.expense_acq * count if dm == 0 else 0.0) + pols * a.expense_maint / 12 * (1 + a.inflation) ** (
            t / 12
        )
        commissions = a.commission_rate * premiums if y == 0 else 0.0
        z = float(a.curve[t // 12])
        df = (1 + ((1 + z) ** (1 / 12) - 1)) ** (-t) * math.exp(-cum_r / 12)
        for k, cf in enumerate((premiums, claims, expenses, commissions)):
            pv[k] += cf * df
        pols = pols - deaths - lapses
        cum_r += r[t]
    return (*pv, pv[0] - pv[1] - pv[2] - pv[3])


@pytest.fixture(scope="module")
def assumptions() -> Assumptions:
    base = lifelib_sample_assumptions()
    return Assumptions(
        mortality=base.mortality,
        mortality_min_age=base.mortality_min_age,
        lapse=base.lapse,
        expense_acq=base.expense_acq,
        expense_maint=base.expense_maint,
        inflation=base.inflation,
        commission_rate=base.commission_rate,
        premium_loading=base.premium_loading,
        curve=base.curve,
        female_multiplier=0.8,
        dyn_lapse_beta=25.0,  # with σ = 0.03 some months hit the clamps at 0.5 and 2.0
        dyn_lapse_lo=0.5,
        dyn_lapse_hi=2.0,
    )


def drawn_policies(
    rng: np.random.Generator,
    first_id: int,
    *,
    age: np.ndarray,
    term: np.ndarray,
    duration: np.ndarray,
    premium: np.ndarray,
) -> Policies:
    """Policies numbered from `first_id` with the given columns; sex, count and sum assured drawn
    from `rng`, in that order (the fixtures' values depend on it)."""
    n = len(term)
    return Policies.from_columns(
        {
            "policy_id": np.arange(first_id, first_id + n),
            "age_at_entry": age,
            "sex": rng.choice(["M", "F"], n),
            "policy_term": term,
            "policy_count": rng.choice([0.0, 1.0, 3.5, 120.0], n),
            "sum_assured": rng.uniform(1e4, 1e6, n).round(),
            "duration_mth": duration,
            "premium_pp": premium,
        }
    )


@pytest.fixture(scope="module")
def policies() -> Policies:
    rng = np.random.default_rng(20240601)
    n = 24
    term = rng.integers(1, 31, n)
    age = rng.integers(18, 80, n)
    duration = np.where(rng.random(n) < 0.5, 0, rng.integers(0, 12 * term))
    premium = np.where(duration > 0, rng.uniform(5, 300, n), np.nan)
    premium[1] = 42.5  # a new-business policy with its premium given
    duration[1] = 0
    return drawn_policies(rng, 100, age=age, term=term, duration=duration, premium=premium)


@pytest.fixture(scope="module")
def shocks(policies: Policies) -> F64:
    months = int(policies.projection_months.max())
    return ref.esg(ScenarioParams(count=5, seed=77, sigma=0.03), months)


def test_term_life_equals_the_scalar_transcription_of_model_md(
    policies: Policies,
    assumptions: Assumptions,
    shocks: F64,
) -> None:
    pvs = ref.term_life(policies, assumptions, shocks)
    dl = ref.dynamic_lapse_factor(assumptions, shocks)
    assert dl.min() == 0.5 and dl.max() == 2.0, "the dynamic lapse clamps are not exercised"
    for i in range(len(policies)):
        for s in range(shocks.shape[0]):
            want = _scalar_pvs(policies, i, assumptions, shocks[s].tolist(), float(pvs.premium_pp[i]))
            got = (pvs.premiums[i, s], pvs.claims[i, s], pvs.expenses[i, s], pvs.commissions[i, s], pvs.net_cf[i, s])
            np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-9 * max(1.0, abs(want[0])))


def test_premiums_given_are_kept_and_missing_ones_computed(policies: Policies, assumptions: Assumptions) -> None:
    prem = ref.premium_pp(policies, assumptions)
    given = policies.premium_pp > 0
    np.testing.assert_array_equal(prem[given], policies.premium_pp[given])
    computed = prem[~given]
    assert np.all(computed > 0)
    np.testing.assert_array_equal(computed, np.round(computed, 2))
    # the premium per policy does not depend on the policy count (0 included)
    unit = ref.premium_pp(policies.take(np.flatnonzero(~given)), assumptions)
    np.testing.assert_array_equal(unit, computed)


def test_computed_premium_is_the_loaded_net_premium_rounded_to_cents(assumptions: Assumptions) -> None:
    policy = Policies.from_columns(
        {"policy_id": [1], "age_at_entry": [40], "sex": ["F"], "policy_term": [20], "sum_assured": [500_000.0]}
    )
    net = float(ref.net_premium_pp(policy, assumptions)[0])
    assert ref.premium_pp(policy, assumptions)[0] == round(100 * (1.5 * net)) / 100


def test_scenarios_and_policies_are_projected_independently(
    policies: Policies,
    assumptions: Assumptions,
    shocks: F64,
) -> None:
    every = ref.term_life(policies, assumptions, shocks)
    one_scenario = ref.term_life(policies, assumptions, shocks[3:4])
    np.testing.assert_array_equal(one_scenario.net_cf[:, 0], every.net_cf[:, 3])
    rows = [5, 0, 17]
    some = ref.term_life(policies.take(rows), assumptions, shocks)
    np.testing.assert_array_equal(some.net_cf, every.net_cf[rows])


def test_policy_count_scales_a_policy_with_a_given_premium(assumptions: Assumptions) -> None:
    def pv(count: float) -> float:
        policy = Policies.from_columns(
            {
                "policy_id": [1],
                "age_at_entry": [30],
                "sex": ["M"],
                "policy_term": [10],
                "policy_count": [count],
                "sum_assured": [100_000.0],
                "duration_mth": [30],
                "premium_pp": [25.0],
            }
        )
        return float(ref.term_life(policy, assumptions, np.zeros((1, 90))).net_cf[0, 0])

    assert pv(7.0) == pytest.approx(7 * pv(1.0), rel=1e-13)
    assert pv(0.0) == 0.0


def test_policies_outside_the_tables_are_refused(assumptions: Assumptions) -> None:
    young = Policies.from_columns(
        {
            "policy_id": [1, 2],
            "age_at_entry": [30, 10],
            "sex": ["M", "F"],
            "policy_term": [5, 5],
            "sum_assured": [1.0, 1.0],
        }
    )
    with pytest.raises(ModelInputError, match="row 1: age_at_entry: attained ages below"):
        ref.term_life(young, assumptions, np.zeros((1, 60)))


def test_too_short_shock_paths_are_refused(policies: Policies, assumptions: Assumptions) -> None:
    with pytest.raises(ModelInputError, match="shocks"):
        ref.term_life(policies, assumptions, np.zeros((2, 3)))


@pytest.fixture(scope="module")
def future_and_matured() -> Policies:
    """Future new business (issued at t = 1 … 60, premiums given or computed) and matured rows."""
    rng = np.random.default_rng(20240602)
    n = 20
    term = rng.integers(1, 31, n)
    age = rng.integers(18, 80, n)
    duration = -rng.integers(1, 61, n)
    duration[[3, 11]] = 12 * term[[3, 11]]  # maturing at t = 0
    duration[7] = -1
    premium = np.where(rng.random(n) < 0.5, rng.uniform(5, 300, n), np.nan)
    premium[[3, 11]] = 20.0
    return drawn_policies(rng, 200, age=age, term=term, duration=duration, premium=premium)


def test_future_new_business_and_matured_rows_equal_the_scalar_transcription(
    future_and_matured: Policies, assumptions: Assumptions
) -> None:
    p = future_and_matured
    shocks = ref.esg(ScenarioParams(count=4, seed=78, sigma=0.03), p.horizon_months)
    pvs = ref.term_life(p, assumptions, shocks)
    for i in range(len(p)):
        for s in range(shocks.shape[0]):
            want = _scalar_pvs(p, i, assumptions, shocks[s].tolist(), float(pvs.premium_pp[i]))
            got = (pvs.premiums[i, s], pvs.claims[i, s], pvs.expenses[i, s], pvs.commissions[i, s], pvs.net_cf[i, s])
            np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-9 * max(1.0, abs(want[0])))
    matured = p.duration_mth == 12 * p.policy_term
    for name in ("premiums", "claims", "expenses", "commissions", "net_cf"):
        assert np.all(getattr(pvs, name)[matured] == 0.0), name
    issued = ~matured & (p.policy_count > 0)
    assert np.all(pvs.premiums[issued] > 0) and np.all(pvs.expenses[issued] > 0)


def test_future_new_business_pays_acquisition_and_commissions_from_its_issue_month(assumptions: Assumptions) -> None:
    """Issued at t = k: PV of acquisition = acq·count·DF0(k); commissions on the premiums of
    months k … k+11; discounting and inflation on the calendar month t."""
    k, term, count, prem = 17, 3, 2.0, 40.0
    columns = {
        "policy_id": [1],
        "age_at_entry": [45],
        "sex": ["M"],
        "policy_term": [term],
        "policy_count": [count],
        "sum_assured": [100_000.0],
        "duration_mth": [-k],
        "premium_pp": [prem],
    }
    policy = Policies.from_columns(columns)
    months = 12 * term + k
    pvs = ref.term_life(policy, assumptions, np.zeros((1, months)))
    df0 = ref.disc_factors_base(assumptions, months)
    no_acq = dataclasses.replace(assumptions, expense_acq=0.0)
    without = ref.term_life(policy, no_acq, np.zeros((1, months)))
    assert pvs.expenses[0, 0] - without.expenses[0, 0] == pytest.approx(300.0 * count * df0[k], rel=1e-12)
    # premiums and commissions month by month: the first-year premiums are exactly the commissions
    first_year = Policies.from_columns({**columns, "policy_term": [1]})
    one = ref.term_life(first_year, assumptions, np.zeros((1, 12 + k)))
    assert one.commissions[0, 0] == pytest.approx(one.premiums[0, 0], rel=1e-15)
    assert pvs.commissions[0, 0] == pytest.approx(one.premiums[0, 0], rel=1e-12)
    # the same policy written now, discounted and inflated k months later, on a flat curve
    flat = dataclasses.replace(assumptions, curve=np.full(assumptions.curve.size, 0.03))
    later = ref.term_life(policy, flat, np.zeros((1, months)))
    now = ref.term_life(Policies.from_columns({**columns, "duration_mth": [0]}), flat, np.zeros((1, months)))
    v_k = float(ref.disc_factors_base(flat, k + 1)[k])
    for name in ("premiums", "claims", "commissions"):
        assert getattr(later, name)[0, 0] == pytest.approx(getattr(now, name)[0, 0] * v_k, rel=1e-12), name
    maint = dataclasses.replace(flat, expense_acq=0.0)
    infl_k = (1.0 + assumptions.inflation) ** (k / 12)
    later_maint = ref.term_life(policy, maint, np.zeros((1, months))).expenses[0, 0]
    now_maint = ref.term_life(Policies.from_columns({**columns, "duration_mth": [0]}), maint, np.zeros((1, months)))
    assert later_maint == pytest.approx(now_maint.expenses[0, 0] * v_k * infl_k, rel=1e-12)


def test_future_new_business_computes_the_premium_at_issue(assumptions: Assumptions) -> None:
    """The premium of a policy issued at t = k is that of the same policy issued at t = 0 (policy
    time and the curve from year 0: lifelib BasicTerm_ME's premium table is BasicTerm_M's)."""
    columns = {
        "policy_id": [1, 2, 3],
        "age_at_entry": [40, 40, 40],
        "sex": ["F", "F", "F"],
        "policy_term": [20, 20, 20],
        "sum_assured": [500_000.0] * 3,
        "duration_mth": [0, -1, -36],
    }
    prem = ref.premium_pp(Policies.from_columns(columns), assumptions)
    assert prem[0] > 0 and prem[1] == prem[0] and prem[2] == prem[0]
