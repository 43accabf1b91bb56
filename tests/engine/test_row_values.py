"""Row values (docs/model-interface.md "Row values and cash flows"): every policy's value of every
output under every scenario, as the pipeline returns them when a run asks (`RunDetail`).

Summed per block in row order from +0.0 they are the block partials bit for bit, for term_life in
both lane layouts (1, 3, 8 and 10 scenarios: policies in the lanes; 11 and 64: scenarios) over rows
with future new business, rows maturing at t = 0 and computed premiums, and for savings; a
row's value under scenario s has the same bits whatever the run's scenario count. A binary
without `lc_features` (the frozen scenario-layout build of term_life) is valued one row per run
and gives the same values; the numpy twins give theirs too."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from services.engine import wasm_nodes
from services.engine.bench_term_life import scenario_layout_wasm
from services.engine.pipeline import PipelineResult, PipelineRunner, RunDetail
from services.engine.reference_savings import savings_inputs
from services.engine.runtime import Runtime
from services.engine.workers import WasmPool
from services.valuation.arrays import F64
from services.valuation.blocks import BLOCK_SIZE, same_bits
from services.valuation.packages.config import REFERENCE_PIPELINE
from services.valuation.packages.reference import SAVINGS_PIPELINE
from services.valuation.reference_model import shipped_models
from tests.engine.savings_points import draws, generated_rows
from tests.engine.test_term_life_lanes import run_inputs

ROWS = 2 * BLOCK_SIZE + 300
"""Two whole blocks and a partial third."""
MOST = 64


def sequential_block_sums(rows: F64) -> F64:
    """f64 [blocks][outputs][N]: each block's rows added in row order from +0.0 (no pairwise sum)."""
    blocks = -(-rows.shape[0] // BLOCK_SIZE)
    out = np.zeros((blocks, *rows.shape[1:]))
    for b in range(blocks):
        acc = out[b]
        for row in rows[b * BLOCK_SIZE : (b + 1) * BLOCK_SIZE]:
            acc += row
    return out


def pipeline(nodes: tuple[dict[str, Any], ...], scheme: str = "wasm") -> list[dict[str, Any]]:
    out = [dict(node) for node in nodes]
    out[1]["engine"] = out[1]["engine"].replace("wasm://", f"{scheme}://")
    return out


@pytest.fixture(scope="module")
def pool() -> Iterator[WasmPool]:
    with WasmPool(Runtime(), threads=2) as p:
        yield p


@pytest.fixture(scope="module")
def rates() -> F64:
    """MOST scenarios of monthly short rates, wide enough for dynamic lapse to hit both bounds."""
    months = run_inputs(ROWS, 3, 1).records.horizon_months
    return np.ascontiguousarray(np.random.default_rng(3).normal(0.03, 0.03, (MOST, months)))


def term_life_run(runner: PipelineRunner, rates: F64, n: int, **kwargs: Any) -> PipelineResult:
    inputs = dataclasses.replace(run_inputs(ROWS, 3, n), scenario_data={"rates": rates[:n]})
    return runner.run(list(REFERENCE_PIPELINE), inputs, detail=RunDetail(row_values=True), **kwargs)


@pytest.fixture(scope="module")
def most(pool: WasmPool, rates: F64) -> PipelineResult:
    return term_life_run(PipelineRunner(pool), rates, MOST)


@pytest.mark.parametrize("n", [1, 3, 8, 10, 11, 64])
def test_term_life_row_values_sum_to_the_partials(pool: WasmPool, rates: F64, most: PipelineResult, n: int) -> None:
    result = term_life_run(PipelineRunner(pool), rates, n)
    assert result.row_values is not None and result.row_values.shape == (ROWS, 5, n)
    assert same_bits(sequential_block_sums(result.row_values), result.partials)
    assert most.row_values is not None
    assert same_bits(result.row_values, most.row_values[:, :, :n]), "a row's value depends on the scenario count"


def test_term_life_rows_include_new_business_matured_and_computed_premiums(most: PipelineResult) -> None:
    inputs = run_inputs(ROWS, 3, MOST)
    dur = inputs.records.columns["duration_mth"]
    term = inputs.records.columns["policy_term"]
    assert most.row_values is not None
    matured = dur == 12 * term
    assert (dur < 0).any() and matured.any()
    assert not most.row_values[matured].any(), "a row that matures at t = 0 is worth nothing"
    assert (most.row_values[dur < 0, 0, :] > 0).all(), "future new business has premiums (computed)"


def test_a_run_without_detail_has_none(pool: WasmPool, rates: F64, most: PipelineResult) -> None:
    inputs = dataclasses.replace(run_inputs(ROWS, 3, MOST), scenario_data={"rates": rates})
    plain = PipelineRunner(pool).run(list(REFERENCE_PIPELINE), inputs)
    assert plain.row_values is None and plain.cash_flows is None
    assert same_bits(plain.partials, most.partials)


@pytest.mark.parametrize("n", [3, 17])
def test_a_binary_without_lc_features_is_valued_row_by_row(
    pool: WasmPool, rates: F64, n: int, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The frozen build predates lc_features: each row is valued as a run's only block (logged once)."""
    monkeypatch.setattr(wasm_nodes, "ROW_BY_ROW_LOG", wasm_nodes.OnceLog())
    frozen = PipelineRunner(pool, {**shipped_models(), "term_life": scenario_layout_wasm()})
    rows = 300
    inputs = dataclasses.replace(run_inputs(rows, 3, n), scenario_data={"rates": rates[:n]})
    result = frozen.run(list(REFERENCE_PIPELINE), inputs, detail=RunDetail(row_values=True))
    assert result.row_values is not None and result.row_values.shape == (rows, 5, n)
    assert same_bits(sequential_block_sums(result.row_values), result.partials)
    now = PipelineRunner(pool).run(list(REFERENCE_PIPELINE), inputs, detail=RunDetail(row_values=True))
    assert now.row_values is not None and same_bits(result.row_values, now.row_values)
    again = frozen.run(list(REFERENCE_PIPELINE), inputs, detail=RunDetail(row_values=True))
    assert again.row_values is not None and same_bits(again.row_values, result.row_values)
    assert caplog.text.count("one row at a time") == 1


def test_the_numpy_twin_gives_row_values(pool: WasmPool, rates: F64, most: PipelineResult) -> None:
    n = 3
    inputs = dataclasses.replace(run_inputs(ROWS, 3, n), scenario_data={"rates": rates[:n]})
    twin = PipelineRunner(pool).run(pipeline(REFERENCE_PIPELINE, "python"), inputs, detail=RunDetail(row_values=True))
    assert twin.row_values is not None and twin.row_values.shape == (ROWS, 5, n)
    assert same_bits(sequential_block_sums(twin.row_values), twin.partials)
    assert most.row_values is not None
    wasm = most.row_values[:, :, :n]
    assert np.allclose(twin.row_values, wasm, rtol=1e-9, atol=1e-9 * float(np.abs(wasm).max()))


@pytest.mark.parametrize("n", [1, 8, 33])
def test_savings_row_values_sum_to_the_partials(pool: WasmPool, n: int) -> None:
    rows = generated_rows(BLOCK_SIZE + 200, 5)
    std_norm = draws(33, savings_inputs(rows, draws(1, 1, 0)).records.horizon_months, 5)
    runner, rows_asked = PipelineRunner(pool), RunDetail(row_values=True)
    all_of = runner.run(pipeline(SAVINGS_PIPELINE), savings_inputs(rows, std_norm), detail=rows_asked)
    result = runner.run(pipeline(SAVINGS_PIPELINE), savings_inputs(rows, std_norm[:n]), detail=rows_asked)
    assert result.row_values is not None and result.row_values.shape == (rows.num_rows, 9, n)
    assert same_bits(sequential_block_sums(result.row_values), result.partials)
    assert all_of.row_values is not None and same_bits(result.row_values, all_of.row_values[:, :, :n])
    twin = runner.run(pipeline(SAVINGS_PIPELINE, "python"), savings_inputs(rows, std_norm[:n]), detail=rows_asked)
    assert twin.row_values is not None
    scale = np.abs(result.row_values).max(axis=0, keepdims=True)
    assert (np.abs(twin.row_values - result.row_values) <= 1e-9 * scale + 1e-9).all()
