"""The numpy reference against the real lifelib basiclife BasicTerm_S, run offline via modelx.

docs/model.md: with one base scenario and lifelib's sample assumptions, each policy's pv_net_cf
equals BasicTerm_S's to 1e-9 relative. BasicTerm_S ignores sex and policy_count (its
pols_if_init is 1), so the model points keep policy_count 1 and the female multiplier is 1.
"""

from __future__ import annotations

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

# age_at_entry, sex, policy_term, sum_assured: young/old, both sexes, short/long terms, small/large
# sums, select and ultimate mortality, and a policy reaching age 120 (the table's last row).
MODEL_POINTS = [
    (18, "M", 1, 50_000.0),
    (20, "M", 10, 100_000.0),
    (25, "F", 40, 1_000_000.0),
    (29, "M", 20, 752_000.0),
    (35, "F", 5, 1_000_000.0),
    (40, "M", 30, 333_333.0),
    (45, "F", 20, 500_000.0),
    (47, "M", 10, 622_000.0),
    (51, "F", 10, 799_000.0),
    (60, "M", 15, 250_000.0),
    (70, "F", 25, 120_000.0),
    (85, "M", 35, 10_000.0),
    (100, "F", 20, 75_000.0),
]

RTOL = 1e-9


@pytest.fixture(scope="module")
def policies() -> Policies:
    age, sex, term, sa = zip(*MODEL_POINTS, strict=True)
    return Policies.from_columns(
        {
            "policy_id": np.arange(1, len(MODEL_POINTS) + 1),
            "age_at_entry": np.array(age),
            "sex": np.array(sex),
            "policy_term": np.array(term),
            "policy_count": np.ones(len(MODEL_POINTS)),
            "sum_assured": np.array(sa),
        }
    )


@pytest.fixture(scope="module")
def assumptions() -> Assumptions:
    return lifelib_sample_assumptions()


@pytest.fixture(scope="module")
def lifelib_results(policies: Policies) -> dict[str, np.ndarray[Any, Any]]:
    """Per model point: BasicTerm_S's PVs, premium_pp and proj_len."""
    model = mx.read_model(str(lifelib_model_dir("BasicTerm_S")))
    try:
        projection = model.Projection
        projection.model_point_table = pd.DataFrame(
            {
                "age_at_entry": policies.age_at_entry.astype(np.int64),
                "sex": np.where(policies.female == 1, "F", "M"),
                "policy_term": policies.policy_term.astype(np.int64),
                "policy_count": np.ones(len(policies), dtype=np.int64),
                "sum_assured": policies.sum_assured,
            },
            index=pd.Index(policies.policy_id, name="point_id"),
        )
        names = ("pv_premiums", "pv_claims", "pv_expenses", "pv_commissions", "pv_net_cf", "premium_pp", "proj_len")
        out = {name: np.array([getattr(projection[int(i)], name)() for i in policies.policy_id]) for name in names}
        lapse = np.array([projection[1].lapse_rate(12 * y) for y in range(10)])
        out["lapse_rate"] = lapse
        out["disc_rate_ann"] = projection.disc_rate_ann.to_numpy(dtype=np.float64)
        mort = projection.mort_table
        out["mort_table"] = mort[sorted(mort.columns, key=int)].to_numpy(dtype=np.float64)
        out["mort_ages"] = mort.index.to_numpy()
        return out
    finally:
        model.close()


def test_pv_net_cf_matches_lifelib_basic_term_s(
    policies: Policies, assumptions: Assumptions, lifelib_results: dict[str, np.ndarray[Any, Any]]
) -> None:
    months = int(policies.projection_months.max())
    shocks = ref.esg(ScenarioParams(count=1, include_base=True), months)
    pvs = ref.term_life(policies, assumptions, shocks)
    assert pvs.net_cf.shape == (len(policies), 1)
    rel = np.abs(pvs.net_cf[:, 0] / lifelib_results["pv_net_cf"] - 1.0)
    print(f"max relative difference of pv_net_cf vs lifelib BasicTerm_S: {rel.max():.3e}")
    np.testing.assert_allclose(pvs.net_cf[:, 0], lifelib_results["pv_net_cf"], rtol=RTOL, atol=0)
    for name in ("premiums", "claims", "expenses", "commissions"):
        np.testing.assert_allclose(getattr(pvs, name)[:, 0], lifelib_results[f"pv_{name}"], rtol=RTOL, atol=0)


def test_computed_premium_equals_lifelib(
    policies: Policies, assumptions: Assumptions, lifelib_results: dict[str, np.ndarray[Any, Any]]
) -> None:
    np.testing.assert_array_equal(ref.premium_pp(policies, assumptions), lifelib_results["premium_pp"])


def test_projection_length_is_lifelibs_without_its_empty_last_month(
    policies: Policies, lifelib_results: dict[str, np.ndarray[Any, Any]]
) -> None:
    # lifelib projects 12·term + 1 months; at t = 12·term every policy has matured (no cash flow)
    np.testing.assert_array_equal(policies.projection_months + 1, lifelib_results["proj_len"])


def test_sample_assumptions_match_lifelib_formulas(
    assumptions: Assumptions, lifelib_results: dict[str, np.ndarray[Any, Any]]
) -> None:
    ages = np.arange(18, 121, dtype=np.float64)[:, None]
    select = np.arange(6, dtype=np.float64)[None, :]
    formula = np.minimum(1.0, 0.0002 * np.exp(0.00025 * ages**2.2) * 1.1**select)
    assert assumptions.mortality_min_age == 18
    assert assumptions.mortality.shape == (103, 6)
    np.testing.assert_array_equal(assumptions.mortality, lifelib_results["mort_table"])
    np.testing.assert_array_equal(lifelib_results["mort_ages"], np.arange(18, 121))
    np.testing.assert_allclose(assumptions.mortality, formula, rtol=1e-12, atol=0)
    carried = assumptions.lapse[np.minimum(np.arange(10), assumptions.lapse.size - 1)]
    np.testing.assert_array_equal(carried, lifelib_results["lapse_rate"])
    np.testing.assert_array_equal(assumptions.curve, lifelib_results["disc_rate_ann"])
    assert assumptions.curve.size == 151
    np.testing.assert_allclose(assumptions.curve[:5], [0.0, 0.00555, 0.00684, 0.00788, 0.00866], rtol=1e-12)
    assert (assumptions.expense_acq, assumptions.expense_maint, assumptions.inflation) == (300.0, 60.0, 0.01)
    assert (assumptions.commission_rate, assumptions.premium_loading) == (1.0, 0.5)
    assert (assumptions.female_multiplier, assumptions.dyn_lapse_beta) == (1.0, 0.0)


def test_base_scenario_among_stochastic_ones_is_lifelibs(
    policies: Policies, assumptions: Assumptions, lifelib_results: dict[str, np.ndarray[Any, Any]]
) -> None:
    months = int(policies.projection_months.max())
    shocks = ref.esg(ScenarioParams(count=8, seed=11, sigma=0.02), months)
    pvs = ref.term_life(policies, assumptions, shocks)
    np.testing.assert_allclose(pvs.net_cf[:, 0], lifelib_results["pv_net_cf"], rtol=RTOL, atol=0)
    assert not np.allclose(pvs.net_cf[:, 1], pvs.net_cf[:, 0], rtol=1e-6)


def test_wasm_pipeline_matches_lifelib_basic_term_s(
    policies: Policies, assumptions: Assumptions, lifelib_results: dict[str, np.ndarray[Any, Any]]
) -> None:
    """The product path: wasm://esg → wasm://term_life, one model point per run, so each
    run's single block partial is that policy's PV."""
    from services.engine.pipeline import PipelineRunner
    from services.engine.reference_inputs import term_life_inputs
    from services.engine.runtime import Runtime
    from services.engine.workers import WasmPool
    from services.valuation.packages.config import REFERENCE_PIPELINE

    base = ScenarioParams(count=1, include_base=True)
    with WasmPool(Runtime(), threads=1) as pool:
        runner = PipelineRunner(pool)
        results = [
            runner.run(list(REFERENCE_PIPELINE), term_life_inputs(policies.take([i]), assumptions, base))
            for i in range(len(policies))
        ]
    values = np.array([r.partials[0, :, 0] for r in results])
    names = results[0].outputs.names
    assert set(names) == {"premiums", "claims", "expenses", "commissions", "net_cf"}
    for k, name in enumerate(names):
        expected = lifelib_results[f"pv_{name}"]
        rel = np.abs(values[:, k] / expected - 1.0).max()
        print(f"wasm vs lifelib BasicTerm_S, pv_{name}: max relative difference {rel:.3e}")
        np.testing.assert_allclose(values[:, k], expected, rtol=RTOL, atol=0)
