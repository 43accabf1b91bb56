"""Block cash flows by month (docs/model-interface.md "Row values and cash flows"): for each output
a model declares monthly, each block's undiscounted cash flow at month t, summed over the block's
rows in row order from +0.0, as the pipeline returns them when a run asks (`RunDetail`).

For term_life (future new business, rows maturing at t = 0, computed premiums; 1, 3 and 7
scenarios, which would run in the policy layout, and 17) and savings they match the numpy twins'
cash flows to 1e-9 relative, discounted with each scenario's DF_s(t) they sum to the block's
present values, the rows' own cash flows (each row a run of its own) add up to their block's bit
for bit, and a scenario's cash flows do not depend on the run's scenario count. Cash flows that
a model cannot give are refused with a message saying why."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from services.engine import reference
from services.engine.bench_term_life import scenario_layout_wasm
from services.engine.errors import DetailUnavailable
from services.engine.pipeline import PipelineResult, PipelineRunner, RunDetail, RunInputs
from services.engine.reference_inputs import term_life_arguments
from services.engine.reference_savings import disc_factors, savings_arguments, savings_cash_flows, savings_inputs
from services.engine.runtime import Runtime
from services.engine.workers import WasmPool
from services.valuation.arrays import F64
from services.valuation.blocks import BLOCK_SIZE, same_bits
from services.valuation.packages.config import REFERENCE_PIPELINE
from services.valuation.packages.reference import SAVINGS_PIPELINE
from services.valuation.reference_model import shipped_models
from tests.engine.savings_points import draws, generated_rows
from tests.engine.test_row_values import pipeline
from tests.engine.test_term_life_lanes import run_inputs

ROWS = BLOCK_SIZE + 200
MOST = 17
RTOL = 1e-9
CASH_FLOWS = RunDetail(cash_flows=True)


@pytest.fixture(scope="module")
def pool() -> Iterator[WasmPool]:
    with WasmPool(Runtime(), threads=2) as p:
        yield p


@pytest.fixture(scope="module")
def rates() -> F64:
    months = run_inputs(ROWS, 4, 1).records.horizon_months
    return np.ascontiguousarray(np.random.default_rng(4).normal(0.03, 0.03, (MOST, months)))


def term_life(n: int, rates: F64, rows: int = ROWS) -> RunInputs:
    return dataclasses.replace(run_inputs(rows, 4, n), scenario_data={"rates": rates[:n]})


def run(pool: WasmPool, nodes: Any, inputs: RunInputs, detail: RunDetail = CASH_FLOWS) -> PipelineResult:
    return PipelineRunner(pool).run(list(nodes), inputs, detail=detail)


def close(got: F64, expected: F64, axis: tuple[int, ...]) -> bool:
    """Within RTOL of the largest magnitude along ``axis`` (a month's flow can be near zero)."""
    scale = np.abs(expected).max(axis=axis, keepdims=True) + 1e-300
    return bool((np.abs(got - expected) <= RTOL * scale).all())


def discounted(cash_flows: F64, df: F64) -> F64:
    """Σ_t cf[b][m][s][t]·DF_s(t): f64 [blocks][monthly][N]."""
    out: F64 = np.einsum("bmst,st->bms", cash_flows[..., : df.shape[1]], df)
    return out


@pytest.fixture(scope="module")
def most(pool: WasmPool, rates: F64) -> PipelineResult:
    return run(pool, REFERENCE_PIPELINE, term_life(MOST, rates))


@pytest.mark.parametrize("n", [1, 3, 7, 17])
def test_term_life_cash_flows(pool: WasmPool, rates: F64, most: PipelineResult, n: int) -> None:
    inputs = term_life(n, rates)
    result = run(pool, REFERENCE_PIPELINE, inputs)
    months = inputs.records.horizon_months
    assert result.monthly_outputs == ("premiums", "claims", "expenses", "commissions", "net_cf")
    assert result.cash_flows is not None and result.cash_flows.shape == (2, 5, n, months + 1)
    assert most.cash_flows is not None and same_bits(result.cash_flows, most.cash_flows[:, :, :n])
    assert not result.cash_flows[..., months].any(), "term life has nothing at the horizon itself"
    policies, assumptions = term_life_arguments(inputs.records, inputs.assets, inputs.interface)
    twin = reference.term_life_cash_flows(policies, assumptions, rates[:n])
    expected = np.stack([twin[name] for name in result.monthly_outputs])
    assert close(result.cash_flows.sum(axis=0), expected, (0, 2))
    # discounted with each scenario's factors they are the block's present values
    df = reference.disc_factors(assumptions, rates[:n, :months])
    assert close(discounted(result.cash_flows, df), result.partials, (0, 2))


def test_term_life_rows_add_up_to_their_block(pool: WasmPool, rates: F64) -> None:
    """Each row a run of its own (its block's cash flows are the row's): added in row order from
    +0.0 they are the block's, bit for bit. The rows: new business now and to come, matured at
    t = 0, in force."""
    rows, n = 40, 3
    block = run(pool, REFERENCE_PIPELINE, term_life(n, rates, rows))
    assert block.cash_flows is not None
    inputs = term_life(n, rates, rows)
    dur = inputs.records.columns["duration_mth"]
    assert (dur < 0).any() and (dur == 0).any() and (dur > 0).any()
    total = np.zeros(block.cash_flows.shape[1:])
    for i in range(rows):
        one = dataclasses.replace(inputs, records=inputs.records.take(slice(i, i + 1)))
        alone = run(pool, REFERENCE_PIPELINE, one)
        assert alone.cash_flows is not None
        total[..., : alone.cash_flows.shape[-1]] += alone.cash_flows[0]
    assert same_bits(total, block.cash_flows[0])


@pytest.mark.parametrize("n", [1, 9, 33])
def test_savings_cash_flows(pool: WasmPool, n: int) -> None:
    rows = generated_rows(ROWS, 6)
    months = savings_inputs(rows, draws(1, 1, 0)).records.horizon_months
    std_norm = draws(33, months, 6)
    result = run(pool, pipeline(SAVINGS_PIPELINE), savings_inputs(rows, std_norm[:n]))
    assert result.cash_flows is not None and result.cash_flows.shape == (2, 9, n, months + 1)
    assert result.monthly_outputs == result.outputs.names
    every = run(pool, pipeline(SAVINGS_PIPELINE), savings_inputs(rows, std_norm))
    assert every.cash_flows is not None and same_bits(result.cash_flows, every.cash_flows[:, :, :n])
    inputs = savings_inputs(rows, std_norm[:n])
    policies, basis = savings_arguments(inputs.records, inputs.assets, inputs.interface)
    twin = savings_cash_flows(policies, basis, std_norm[:n])
    expected = np.stack([twin[name] for name in result.monthly_outputs])
    assert close(result.cash_flows.sum(axis=0), expected, (0, 2))
    df = np.broadcast_to(disc_factors(basis, months), (n, months + 1))
    assert close(discounted(result.cash_flows, df), result.partials, (0, 2))
    assert result.cash_flows[:, result.monthly_outputs.index("maturity")].any()


def test_a_model_without_monthly_outputs_has_no_cash_flows(pool: WasmPool, rates: F64) -> None:
    inputs = term_life(3, rates)
    plain = dataclasses.replace(
        inputs.interface, outputs=tuple(dataclasses.replace(o, monthly=False) for o in inputs.interface.outputs)
    )
    with pytest.raises(DetailUnavailable, match="declares no monthly outputs"):
        run(pool, REFERENCE_PIPELINE, dataclasses.replace(inputs, interface=plain))


def test_a_binary_without_lc_features_is_told_to_rebuild(pool: WasmPool, rates: F64) -> None:
    frozen = PipelineRunner(pool, {**shipped_models(), "term_life": scenario_layout_wasm()})
    with pytest.raises(DetailUnavailable, match="livecalc package build"):
        frozen.run(list(REFERENCE_PIPELINE), term_life(3, rates), detail=CASH_FLOWS)


def test_the_numpy_twins_give_no_cash_flows(pool: WasmPool, rates: F64) -> None:
    with pytest.raises(DetailUnavailable, match="numpy twins"):
        run(pool, pipeline(REFERENCE_PIPELINE, "python"), term_life(3, rates))
