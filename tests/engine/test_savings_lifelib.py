"""The savings model against lifelib savings CashValue_ME itself, per model point and scenario.

lifelib is run in-process with modelx, once per session: CashValue_ME values one scenario per run
(``scen_id``, about 10 s for its 4 sample points here), so the oracle crosses model points with
scenarios as lifelib's own CashValue_ME_EX1 does — ``model_point()`` repeats each point per
``scen_id`` and ``inv_return_mth(t)`` reads every scenario's return, two formulas changed and no
other — and `test_crossing_scenarios_is_lifelib_unchanged` shows that this gives unchanged
CashValue_ME's numbers bit for bit. Compared (every result_pv column, each point under each
scenario, relative difference ≤ 1e-9):

(a) lifelib's 4 sample model points × its 10 scenarios (its ``std_norm_rand``, given to the run
    as the ``std_norm`` scenario data in place of the generator);
(b) 240 generated model points of six products (tests/engine/savings_points.py), new business
    and in force, × 20 scenarios of our draws, set as lifelib's model points, product table and
    ``std_norm_rand``.

The WASM model's per-point values are read exactly from block partials (`savings_points.padded`);
the numpy twin's directly. The measured maxima are printed (-s).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from services.engine.pipeline import PipelineRunner
from services.engine.reference_savings import OUTPUTS, savings, savings_arguments, savings_inputs
from services.engine.runtime import Runtime
from services.engine.savings_assets import (
    lifelib_sample_rows,
    lifelib_savings_dir,
    model_point_rows,
    savings_asset_files,
)
from services.engine.workers import WasmPool
from services.valuation.arrays import F64
from services.valuation.reference_model import savings_assumption_files
from tests.engine.savings_points import PRODUCTS, draws, generated_model_points, per_policy

pd = pytest.importorskip("pandas")
mx = pytest.importorskip("modelx")

pytestmark = pytest.mark.timeout(240)

RTOL = 1e-9
COLUMNS = (
    "Premiums", "Death", "Surrender", "Maturity", "Expenses", "Commissions", "Investment Income", "Change in AV",
    "Net Cashflow",
)  # fmt: skip
"""lifelib's result_pv columns, in the order of the declared outputs."""
POINTS, SCENARIOS = 240, 20

Results = dict[str, Any]


CROSSED_MODEL_POINT = """
def model_point():
    mps = model_point_table_ext()
    scen = std_norm_rand.index.get_level_values("scen_id").unique()
    idx = pd.MultiIndex.from_product([mps.index, scen], names=mps.index.names + ["scen_id"])
    res = pd.DataFrame(np.repeat(mps.values, len(scen), axis=0), index=idx, columns=mps.columns)
    return res.astype(mps.dtypes)
"""
"""CashValue_ME_EX1's model_point(): each model point once per scen_id of std_norm_rand."""
CROSSED_INV_RETURN_MTH = """
def inv_return_mth(t):
    return inv_return_table()[:, t]
"""
"""CashValue_ME_EX1's inv_return_mth(t): every scenario's return of month t."""


CASH_FLOWS = (
    ("premiums",), ("claims", "DEATH"), ("claims", "LAPSE"), ("claims", "MATURITY"), ("expenses",), ("commissions",),
    ("inv_income",), ("av_change",),
)  # fmt: skip
"""The cells whose discounted sums are result_pv's columns (Net Cashflow combines them)."""


def cash_flows(projection: Any, months: int) -> F64:
    """The monthly cash flows of `CASH_FLOWS`, [cash flow][t][row]."""
    return np.array(
        [[np.asarray(getattr(projection, cell)(t, *kind), dtype=np.float64) for t in range(months)]
         for cell, *kind in CASH_FLOWS]
    )  # fmt: skip


def result_pv(projection: Any, points: int, scenarios: int) -> F64:
    """The crossed result_pv as [output][point][scenario]."""
    table = projection.result_pv()
    assert list(table.index.get_level_values("scen_id")[:scenarios]) == list(range(1, scenarios + 1))
    values = table[list(COLUMNS)].to_numpy(dtype=np.float64).reshape(points, scenarios, len(COLUMNS))
    return np.ascontiguousarray(values.transpose(2, 0, 1))


def std_norm_series(z: F64) -> Any:
    index = pd.MultiIndex.from_product([range(1, z.shape[0] + 1), range(z.shape[1])], names=["scen_id", "t"])
    return pd.Series(z.ravel(), index=index, name="std_norm_rand")


@pytest.fixture(scope="session")
def lifelib() -> Results:
    """CashValue_ME: unchanged on two sample points for scenario 10, then crossed with scenarios on
    (a) its sample points and draws and (b) the generated points under our draws."""
    model = mx.read_model(str(lifelib_savings_dir()))
    try:
        p = model.Projection
        out: Results = {"samples": p.model_point_table.copy(), "products": p.product_spec_table.copy()}
        draws_a = p.std_norm_rand.unstack("t").sort_index()
        assert list(draws_a.index) == list(range(1, 11))
        out["std_norm_a"] = draws_a.to_numpy(dtype=np.float64)
        out["mort_table"], out["surr_charge_table"] = p.mort_table.copy(), p.surr_charge_table.copy()
        out["disc_rate_ann"], out["last_age"] = p.disc_rate_ann.copy(), int(p.mort_table_last_age())
        out["scalars"] = (p.maint_fee_rate(), p.expense_acq(), p.expense_maint(), p.inflation_rate())
        # unchanged CashValue_ME, one scenario, two short points
        p.model_point_table = out["samples"].loc[[1, 2]]
        p.scen_id = 10
        out["unchanged"] = p.result_pv()[list(COLUMNS)].to_numpy(dtype=np.float64).T
        out["unchanged_cf"] = cash_flows(p, int(p.max_proj_len()))
        p.model_point_table, p.scen_id = out["samples"], 1
        p.model_point.formula = CROSSED_MODEL_POINT
        p.inv_return_mth.formula = CROSSED_INV_RETURN_MTH
        out["a"] = result_pv(p, 4, 10)
        out["crossed_cf"] = cash_flows(p, out["unchanged_cf"].shape[1])[:, :, [9, 19]]  # points 1, 2 in scenario 10
        points = generated_model_points(POINTS, seed=5)
        years = np.where(PRODUCTS.loc[points["spec_id"], "is_wl"], out["last_age"] - points["age_at_entry"],
                         points["policy_term"])  # fmt: skip
        months = int((12 * years - points["duration_mth"]).max())
        out["points_b"], out["std_norm_b"] = points, draws(SCENARIOS, months + 1, seed=9)  # lifelib reads t = M too
        p.model_point_table, p.product_spec_table = points, PRODUCTS
        p.std_norm_rand = std_norm_series(out["std_norm_b"])
        out["b"] = result_pv(p, POINTS, SCENARIOS)
        return out
    finally:
        model.close()


@pytest.fixture(scope="module")
def host() -> Iterator[PipelineRunner]:
    with WasmPool(Runtime(), threads=2) as pool:
        yield PipelineRunner(pool)


def relative(actual: F64, expected: F64) -> F64:
    """|actual − expected| / |expected|, 0 where both are 0 (inf where only expected is)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        rel: F64 = np.where(actual == expected, 0.0, np.abs(actual - expected) / np.abs(expected))
    return rel


def assert_matches(ours: F64, theirs: F64, what: str) -> None:
    """Every output of every point under every scenario to RTOL (ours and theirs: [output][point][scenario])."""
    for k, name in enumerate(OUTPUTS):
        rel = relative(ours[k], theirs[k])
        point, scen = np.unravel_index(int(np.argmax(rel)), rel.shape)
        print(f"{what} {name}: max relative difference {rel.max():.2e} (point {point}, scenario {scen})")
        assert rel.max() <= RTOL, f"{what} {name}: {rel.max():.3g} at point {point}, scenario {scen}"


def twin(rows: pa.Table, z: F64) -> F64:
    run = savings_inputs(rows, z)
    pvs = savings(*savings_arguments(run.records, run.assets, run.interface), z)
    return np.stack([getattr(pvs, name) for name in OUTPUTS])


def test_crossing_scenarios_is_lifelib_unchanged(lifelib: Results) -> None:
    """The crossed model's scenario 10 of sample points 1 and 2 is unchanged CashValue_ME's: every
    monthly cash flow bit for bit; the PVs to a few ulp (lifelib sums months with a BLAS
    matrix-vector product, whose order depends on the matrix: 2 × 241 here, 40 × 1141 crossed)."""
    assert lifelib["unchanged_cf"].shape == (len(CASH_FLOWS), 241, 2)
    assert lifelib["crossed_cf"].tobytes() == lifelib["unchanged_cf"].tobytes()
    assert relative(lifelib["a"][:, :2, 9], lifelib["unchanged"]).max() <= 1e-14


def test_shipped_assumptions_are_lifelibs(lifelib: Results) -> None:
    """The shipped files are what savings_assets makes from lifelib now, and hold CashValue_ME's tables."""
    assert savings_asset_files() == savings_assumption_files(), "run python -m services.engine.savings_assets"
    run = savings_inputs(lifelib_sample_rows(), lifelib["std_norm_a"])
    tables = {t.name: t for t in run.assets.tables}
    mort = lifelib["mort_table"]
    assert tables["mortality"].origin == (int(mort.index[0]), 0)
    assert tables["mortality"].values.shape[0] == lifelib["last_age"] - mort.index[0] + 1  # to ω = 115
    np.testing.assert_array_equal(tables["mortality"].values, mort.loc[: lifelib["last_age"]].to_numpy(dtype=float))
    np.testing.assert_array_equal(tables["surr_charge"].values, lifelib["surr_charge_table"].to_numpy(dtype=float))
    np.testing.assert_array_equal(tables["curve"].values, lifelib["disc_rate_ann"].to_numpy(dtype=float))
    lapse = tables["lapse"].values
    by_year = [lapse[min(y, lapse.size - 1)] for y in range(30)]
    assert by_year == [float(np.maximum(0.1 - 0.02 * y, 0.02)) for y in range(30)]
    params = dict(zip((p.name for p in run.interface.parameters), run.assets.parameters, strict=True))
    maint_fee_mth, acq, maint, infl = lifelib["scalars"]
    assert (params["maint_fee_rate"] / 12, params["expense_acq"], params["expense_maint"]) == (
        maint_fee_mth,
        acq,
        maint,
    )
    assert params["inflation"] == infl
    # CashValue_ME's formulas: coi_rate 1.1·q, commissions 0.05·premiums, inv_return_table μ 0.02, σ 0.03
    assert (params["coi_loading"], params["commission_rate"]) == (1.1, 0.05)
    assert (params["inv_return_mean"], params["inv_return_vol"]) == (0.02, 0.03)


def test_sample_points_under_lifelibs_draws(lifelib: Results, host: PipelineRunner) -> None:
    """(a) CashValue_ME's 4 sample points (SINGLE/LEVEL, with and without surrender charges, term
    and whole life to 115) × its 10 scenarios."""
    rows = model_point_rows(lifelib["samples"], lifelib["products"])
    z = lifelib["std_norm_a"]
    assert savings_inputs(rows, z).records.horizons.tolist() == [120, 240, 1140, 780]
    assert_matches(per_policy(host, rows, z), lifelib["a"], "(a) wasm")
    assert_matches(twin(rows, z), lifelib["a"], "(a) python")


def test_generated_points_under_our_draws(lifelib: Results, host: PipelineRunner) -> None:
    """(b) 240 generated points of six products, new business and in force, × 20 scenarios."""
    points = lifelib["points_b"]
    rows = model_point_rows(points, PRODUCTS)
    z = lifelib["std_norm_b"]
    d = points["duration_mth"].to_numpy()
    assert (d == 0).sum() > 100 and (d > 0).sum() > 80 and len(set(points["spec_id"])) == 6
    assert_matches(per_policy(host, rows, z), lifelib["b"], "(b) wasm")
    assert_matches(twin(rows, z), lifelib["b"], "(b) python")
