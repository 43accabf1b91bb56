"""A detail's window of scenarios (`RunInputs.first_scenario`, docs/results.md "Per-policy detail on
demand"): a run of scenarios [first, end) gives, for those scenarios, every policy's values, the
block partials, the cash flows by month and the scenario buffers of a run of [0, end), bit for bit.
The generator makes only the window's rows (the rows below it are never written), a scenario set
is cut to the window. Checked for term_life in both lane layouts (a window of fewer than 11
scenarios puts policies in the lanes, one of 11 or more scenarios), savings with its generator,
the numpy twins, and a run on given scenario data (a scenario set)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from services.engine.layout import LayoutBuilder
from services.engine.pipeline import PipelineResult, PipelineRunner, RunDetail, RunInputs
from services.engine.reference_savings import savings_inputs
from services.engine.runtime import Runtime
from services.engine.wasm_nodes import run_generator
from services.engine.workers import RunControl, WasmPool
from services.valuation.blocks import BLOCK_SIZE, same_bits
from services.valuation.packages.config import REFERENCE_PIPELINE
from services.valuation.packages.reference import SAVINGS_PIPELINE
from services.valuation.reference_model import shipped_models
from services.valuation.scenarios import ScenarioParams
from tests.engine.savings_points import draws, generated_rows
from tests.engine.test_row_values import pipeline
from tests.engine.test_term_life_lanes import run_inputs

ROWS = BLOCK_SIZE + 300
"""A whole block and a partial second."""
END = 64
ROWS_AND_FLOWS = RunDetail(row_values=True, cash_flows=True)


@pytest.fixture(scope="module")
def pool() -> Iterator[WasmPool]:
    with WasmPool(Runtime(), threads=2) as p:
        yield p


def window(inputs: RunInputs, first: int, end: int = END) -> RunInputs:
    """``inputs`` valued for scenarios [first, end) only."""
    scenarios = dataclasses.replace(inputs.scenarios, count=end)
    return dataclasses.replace(inputs, scenarios=scenarios, first_scenario=first)


def check_window(whole: PipelineResult, part: PipelineResult, first: int, end: int = END) -> None:
    """``part`` (a run of [first, end)) is ``whole`` (a run of [0, ≥ end)) on its scenarios, bit for bit."""
    assert same_bits(part.partials, whole.partials[:, :, first:end])
    assert whole.row_values is not None and part.row_values is not None
    assert same_bits(part.row_values, whole.row_values[:, :, first:end])
    if whole.cash_flows is not None:
        assert part.cash_flows is not None and same_bits(part.cash_flows, whole.cash_flows[:, :, first:end])
    for name, buffer in whole.buffers.items():
        if name in part.buffers and buffer.ndim == 2:  # scenario buffers (the partials are 3-d)
            months = buffer.shape[1]
            assert same_bits(part.buffers[name][:, :months], buffer[first:end]), name


@pytest.fixture(scope="module")
def term_life(pool: WasmPool) -> dict[bool, PipelineResult]:
    """Runs of scenarios [0, END) from the esg generator: row values (policy layout below 11
    scenarios is not reached at 64: the scenario layout), and with cash flows."""
    inputs = run_inputs(ROWS, 3, END)
    runner = PipelineRunner(pool)
    return {
        flows: runner.run(list(REFERENCE_PIPELINE), inputs, detail=ROWS_AND_FLOWS if flows else RunDetail(True))
        for flows in (False, True)
    }


@pytest.mark.parametrize(("first", "end"), [(37, 42), (63, 64), (37, 64), (1, 11), (1, 12), (0, 5)])
def test_a_term_life_window_is_the_whole_runs_scenarios(
    pool: WasmPool, term_life: dict[bool, PipelineResult], first: int, end: int
) -> None:
    """Windows of 5, 1 and 10 scenarios run in the policy layout, of 27 and 11 in the scenario layout; a
    small window from 0 is a run of fewer scenarios. Each equals the 64-scenario run's scenarios."""
    inputs = window(run_inputs(ROWS, 3, END), first, end)
    part = PipelineRunner(pool).run(list(REFERENCE_PIPELINE), inputs, detail=RunDetail(row_values=True))
    assert part.partials.shape == (2, 5, end - first)
    check_window(term_life[False], part, first, end)


@pytest.mark.parametrize("first", [37, 63])
def test_a_term_life_windows_cash_flows(pool: WasmPool, term_life: dict[bool, PipelineResult], first: int) -> None:
    """Cash flows by month (the scenario layout, whatever the window's size) of a window."""
    inputs = window(run_inputs(ROWS, 3, END), first)
    part = PipelineRunner(pool).run(list(REFERENCE_PIPELINE), inputs, detail=ROWS_AND_FLOWS)
    assert part.cash_flows is not None and part.cash_flows.shape[2] == END - first
    check_window(term_life[True], part, first)


def test_a_window_on_scenario_data(pool: WasmPool) -> None:
    """A scenario set: the window's rows of the data, the generator not run."""
    inputs = run_inputs(ROWS, 3, END)
    rates = np.ascontiguousarray(np.random.default_rng(4).normal(0.03, 0.03, (END, inputs.records.horizon_months)))
    runner = PipelineRunner(pool)
    whole = runner.run(
        list(REFERENCE_PIPELINE), dataclasses.replace(inputs, scenario_data={"rates": rates}), detail=ROWS_AND_FLOWS
    )
    for first in (5, 40):
        given = dataclasses.replace(window(inputs, first), scenario_data={"rates": rates[first:]})
        check_window(whole, runner.run(list(REFERENCE_PIPELINE), given, detail=ROWS_AND_FLOWS), first)
    with pytest.raises(Exception, match=r"scenario data 'rates' is \(64, \d+\); the run needs \[24\]"):
        runner.run(list(REFERENCE_PIPELINE), dataclasses.replace(window(inputs, 40), scenario_data={"rates": rates}))


def savings_run(rows: Any, scenarios: ScenarioParams, first: int = 0) -> RunInputs:
    """Savings rows under its normals generator (no scenario data), scenarios [first, count)."""
    given = savings_inputs(rows, draws(1, 1, 0))
    return dataclasses.replace(given, scenario_data={}, scenarios=scenarios, first_scenario=first)


@pytest.mark.parametrize("first", [3, 21])
def test_a_savings_window_is_the_whole_runs_scenarios(pool: WasmPool, first: int) -> None:
    rows = generated_rows(BLOCK_SIZE + 200, 5)
    params = ScenarioParams(count=33, seed=11)
    runner, asked = PipelineRunner(pool), RunDetail(row_values=True)
    whole = runner.run(list(SAVINGS_PIPELINE), savings_run(rows, params), detail=asked)
    part = runner.run(list(SAVINGS_PIPELINE), savings_run(rows, params, first), detail=asked)
    assert part.row_values is not None and part.row_values.shape[2] == 33 - first
    check_window(whole, part, first, 33)


def test_the_numpy_twins_value_a_window(pool: WasmPool) -> None:
    """python://esg makes the window's rows; python://term_life values them."""
    twins = [{**node, "engine": str(node["engine"]).replace("wasm://", "python://")} for node in REFERENCE_PIPELINE]
    runner, asked = PipelineRunner(pool), RunDetail(row_values=True)
    whole = runner.run(twins, run_inputs(300, 3, 20), detail=asked)
    part = runner.run(twins, window(run_inputs(300, 3, 20), 13, 20), detail=asked)
    check_window(whole, part, 13, 20)
    savings = pipeline(SAVINGS_PIPELINE, "python")  # the wasm generator, the numpy projection
    rows, params = generated_rows(300, 6), ScenarioParams(count=12, seed=2)
    check_window(
        runner.run(savings, savings_run(rows, params), detail=asked),
        runner.run(savings, savings_run(rows, params, 7), detail=asked),
        7,
        12,
    )


@pytest.mark.parametrize(("first", "months"), [(1, 7), (3, 8), (0, 7)])
def test_the_generator_makes_the_windows_rows_aligned(pool: WasmPool, first: int, months: int) -> None:
    """Only rows [first, N) are written (those below stay zero), row first starts 16-byte aligned
    (an odd row count of an odd month count would not), and they are the rows of a whole run."""
    params = ScenarioParams(count=20, seed=9, sigma=0.02)
    control = RunControl()
    with pool.lease(control) as lease:
        lease.load("esg", shipped_models()["esg"])
        mem = lease.memory
        whole = run_generator(lease, "esg", LayoutBuilder(mem.run_base), params, months, control=control)["rates"]
        rows = np.array(mem.view(whole.region, np.float64, (20, months)))
        alloc = LayoutBuilder(whole.region.end + 4096)
        part = run_generator(lease, "esg", alloc, params, months, control=control, first_scenario=first)["rates"]
        assert part.region.offset % 16 == 0 and part.n_scen == 20 - first and part.stride >= months
        got = np.array(mem.view(part.region, np.float64, (20 - first, part.stride)))[:, :months]
        below = np.array(mem.view(dataclasses.replace(part.region, offset=part.region.offset - first * part.stride * 8,
                                                      size=first * part.stride * 8), np.float64))  # fmt: skip
    assert same_bits(got, rows[first:])
    assert not below.any(), "the generator wrote scenarios below the window"
    assert rows[first:].any()
