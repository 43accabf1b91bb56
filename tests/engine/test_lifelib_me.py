"""The numpy reference against lifelib basiclife BasicTerm_ME on its own 10,000 model points.

docs/model.md: lifelib's BasicTerm_ME with its own model points — future new business
(duration_mth < 0, issued at t = −duration_mth) and policies maturing at t = 0
(duration_mth = 12·policy_term) among them — on one base scenario: the portfolio pv_net_cf
equals lifelib's. lifelib is run once per module with modelx (about 2 s).

Premiums: BasicTerm_ME reads them from its premium table, round(sum_assured·rate, 2), and
that table was made by an older BasicTerm_M — its rates differ from what BasicTerm_M 0.17.2
computes by up to 3.3e-5 relative, so about 7 % of the rounded premiums differ by a cent or
two from a recomputation. The model points therefore carry lifelib's premium_pp as given
premiums; the premium rule (computed at issue, also for future new business) is checked
against BasicTerm_M itself.

Tolerances. Measured here: portfolio totals agree to 2e-15 relative, each policy's component
PVs to 4e-15; bit equality is out of reach for three reasons, found by rebuilding lifelib's
numbers from ours (which then match all 4 × 10,000 PVs bit for bit): (1) lifelib takes
(1 + z)^(1/12), the DF power and (1 + infl)^(t/12) with scalar libm pow, the reference with
numpy's vectorized power (DF0 differs in 30 of 276 months, by up to 2.4e-14 relative: one ulp
of the twelfth root times t; inflation in 9 months by one ulp); (2) lifelib's pols recursion is
pols − lapses − deaths, docs/model.md's pols − deaths − lapses; (3) lifelib sums months with a BLAS
matrix-vector product of the transposed month-major array, the reference in month order.
Neither (1) nor (2) can change without moving existing results, and (3) depends on the BLAS
build. So: portfolio totals to 1e-12 relative, component PVs to 1e-13 per policy, and a
policy's pv_net_cf, a difference of those, to 1e-13 of the sum of its components' magnitudes.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pytest

from services.engine import reference as ref
from services.engine.assumption_assets import lifelib_model_dir, lifelib_sample_assumptions
from services.valuation.assumptions import Assumptions
from services.valuation.policies import Policies
from services.valuation.scenarios import ScenarioParams

pd = pytest.importorskip("pandas")
mx = pytest.importorskip("modelx")

pytestmark = pytest.mark.timeout(120)

COMPONENTS = ("premiums", "claims", "expenses", "commissions", "net_cf")
PORTFOLIO_RTOL = 1e-12
POLICY_RTOL = 1e-13

Results = dict[str, Any]


@pytest.fixture(scope="module")
def lifelib_me() -> Results:
    """BasicTerm_ME's model points, per-policy PVs, premiums, projection lengths and tables."""
    model = mx.read_model(str(lifelib_model_dir("BasicTerm_ME")))
    try:
        p = model.Projection
        out: Results = {name: np.asarray(getattr(p, f"pv_{name}")(), dtype=np.float64) for name in COMPONENTS}
        out["model_points"] = p.model_point_table.copy()
        out["premium_pp"] = np.asarray(p.premium_pp(), dtype=np.float64)
        out["proj_len"] = np.asarray(p.proj_len(), dtype=np.int64)
        out["result_pv_sum"] = p.result_pv().sum()
        out["disc_rate_ann"] = p.disc_rate_ann.to_numpy(dtype=np.float64)
        mort = p.mort_table
        out["mort_table"] = mort[sorted(mort.columns, key=int)].to_numpy(dtype=np.float64)
        out["scalars"] = (p.expense_acq(), p.expense_maint(), p.inflation_rate(), p.loading_prem())
        out["lapse_rate"] = [float(max(0.1 - 0.02 * y, 0.02)) for y in range(10)]
        return out
    finally:
        model.close()


@pytest.fixture(scope="module")
def assumptions() -> Assumptions:
    return lifelib_sample_assumptions()


def model_point_columns(lifelib_me: Results) -> dict[str, np.ndarray]:
    """BasicTerm_ME's model points as the term-life declaration's columns, in its order, with
    lifelib's premium_pp."""
    mp = lifelib_me["model_points"]
    return {
        "policy_id": mp.index.to_numpy(dtype=np.int64),
        "age_at_entry": mp["age_at_entry"].to_numpy(dtype=np.int64),
        "sex": mp["sex"].to_numpy(dtype=str),
        "policy_term": mp["policy_term"].to_numpy(dtype=np.int64),
        "policy_count": mp["policy_count"].to_numpy(dtype=np.float64),
        "sum_assured": mp["sum_assured"].to_numpy(dtype=np.float64),
        "duration_mth": mp["duration_mth"].to_numpy(dtype=np.int64),
        "premium_pp": lifelib_me["premium_pp"],
    }


@pytest.fixture(scope="module")
def policies(lifelib_me: Results) -> Policies:
    """BasicTerm_ME's model points with its premiums given (BasicTerm_ME ignores sex; so does a
    female multiplier of 1)."""
    return Policies.from_columns(model_point_columns(lifelib_me))


@pytest.fixture(scope="module")
def base_pvs(policies: Policies, assumptions: Assumptions) -> ref.TermLifePVs:
    return ref.term_life(policies, assumptions, ref.esg(ScenarioParams(count=1), policies.horizon_months))


def test_model_points_hold_future_new_business_and_policies_maturing_at_t0(policies: Policies) -> None:
    d, term = policies.duration_mth.astype(np.int64), policies.policy_term.astype(np.int64)
    assert len(policies) == 10_000
    future, matured, new, in_force = d < 0, d == 12 * term, d == 0, (d > 0) & (d < 12 * term)
    print(f"future {future.sum()}, matured {matured.sum()}, new {new.sum()}, in force {in_force.sum()}, min {d.min()}")
    assert future.any() and matured.any() and new.any() and in_force.any()
    assert (future | matured | new | in_force).all()
    assert (policies.policy_count == 0).any()  # policy_count 0 rows too: every PV 0


def test_assumptions_are_the_sample_ones(lifelib_me: Results, assumptions: Assumptions) -> None:
    np.testing.assert_array_equal(lifelib_me["disc_rate_ann"], assumptions.curve)
    np.testing.assert_array_equal(lifelib_me["mort_table"], assumptions.mortality)
    assert lifelib_me["scalars"] == (300, 60, 0.01, 0.5)
    assert (assumptions.expense_acq, assumptions.expense_maint, assumptions.inflation) == (300.0, 60.0, 0.01)
    assert (assumptions.commission_rate, assumptions.premium_loading, assumptions.female_multiplier) == (1.0, 0.5, 1.0)
    carried = assumptions.lapse[np.minimum(np.arange(10), assumptions.lapse.size - 1)]
    np.testing.assert_array_equal(carried, lifelib_me["lapse_rate"])


def test_projection_length_is_lifelibs_without_its_empty_last_month(policies: Policies, lifelib_me: Results) -> None:
    # proj_len = max(12·term − duration_mth + 1, 0); at t = 12·term − duration_mth all matured
    np.testing.assert_array_equal(policies.projection_months + 1, lifelib_me["proj_len"])


def test_portfolio_pvs_equal_lifelib_basic_term_me(base_pvs: ref.TermLifePVs, lifelib_me: Results) -> None:
    """The reference-order portfolio value of each PV against the exactly rounded sum (fsum) of
    lifelib's per-policy PVs, and against lifelib's own result_pv() column sums."""
    lifelib_sums = lifelib_me["result_pv_sum"]
    for name, column in zip(
        COMPONENTS, ("PV Premiums", "PV Claims", "PV Expenses", "PV Commissions", "PV Net Cashflow"), strict=True
    ):
        ours = float(ref.portfolio(getattr(base_pvs, name))[0])
        theirs = math.fsum(lifelib_me[name])
        print(f"portfolio pv_{name}: ours {ours!r}, lifelib {theirs!r}, relative {abs(ours / theirs - 1):.2e}")
        assert ours == pytest.approx(theirs, rel=PORTFOLIO_RTOL, abs=0)
        assert ours == pytest.approx(float(lifelib_sums[column]), rel=PORTFOLIO_RTOL, abs=0)


def test_each_policys_pvs_equal_lifelib_basic_term_me(
    policies: Policies, base_pvs: ref.TermLifePVs, lifelib_me: Results
) -> None:
    magnitude = sum(np.abs(lifelib_me[name]) for name in COMPONENTS[:4])
    for name in COMPONENTS:
        ours, theirs = getattr(base_pvs, name)[:, 0], lifelib_me[name]
        np.testing.assert_array_equal(ours == 0, theirs == 0)  # matured, count 0, no commission year
        if name == "net_cf":
            assert np.all(np.abs(ours - theirs) <= POLICY_RTOL * magnitude), name
        else:
            np.testing.assert_allclose(ours, theirs, rtol=POLICY_RTOL, atol=0, err_msg=name)
    matured = policies.duration_mth == 12 * policies.policy_term
    assert np.all(base_pvs.net_cf[matured] == 0.0)


def test_base_scenario_among_stochastic_ones_is_lifelibs(
    policies: Policies, assumptions: Assumptions, base_pvs: ref.TermLifePVs
) -> None:
    shocks = ref.esg(ScenarioParams(count=3, seed=5, sigma=0.02), policies.horizon_months)
    pvs = ref.term_life(policies, assumptions, shocks)
    np.testing.assert_array_equal(pvs.net_cf[:, 0], base_pvs.net_cf[:, 0])
    assert not np.allclose(ref.portfolio(pvs.net_cf)[1], ref.portfolio(pvs.net_cf)[0], rtol=1e-6)


def test_computed_premiums_of_new_and_future_business_are_basic_term_ms(
    policies: Policies, assumptions: Assumptions, lifelib_me: Results
) -> None:
    """Left to compute, the premium of each model point as new business now (duration_mth 0) or
    later (< 0) is BasicTerm_M's premium_pp, round((1 + loading)·pv_claims/pv_pols_if, 2), of
    the same policy issued at t = 0."""
    model = mx.read_model(str(lifelib_model_dir("BasicTerm_M")))
    try:
        projection = model.Projection
        projection.model_point_table = lifelib_me["model_points"][list(projection.model_point_table.columns)]
        basic_term_m = np.asarray(projection.premium_pp(), dtype=np.float64)
    finally:
        model.close()
    d = policies.duration_mth
    as_new = dataclasses.replace(policies, duration_mth=np.minimum(d, 0), premium_pp=np.full(len(policies), np.nan))
    computed = ref.premium_pp(as_new, assumptions)
    np.testing.assert_array_equal(computed, basic_term_m)
    # BasicTerm_ME's own premiums come from its older premium table: equal to a cent or two
    given = lifelib_me["premium_pp"]
    assert np.abs(given - computed).max() <= 0.02 + 1e-9
    assert 0.9 < np.mean(given == computed) < 1.0
