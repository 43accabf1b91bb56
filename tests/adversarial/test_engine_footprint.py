"""`least_engine_bytes` is the layout the engine really allocates (issue 19, item 5).

A real pipeline run of one block on one thread grows the engine's memory to exactly the bytes
`least_engine_bytes` gives for its scenarios, months, policies and declared shape (columns,
tables, parameters, scenario inputs, outputs), plus the workspace the model asks for at run time
(which the figure leaves out); with the defaults (one policy, one month, the smallest
declaration) the figure is below every such run, so a gateway that refuses on it never refuses
a job some engine could run.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator

import numpy as np
import pytest

from services.engine import layout
from services.engine.footprint import LEAST_SHAPE, least_engine_bytes, max_scenarios
from services.engine.layout import LayoutBuilder, ProjectionShape, Region, align_up
from services.engine.pipeline import PipelineRunner, RunInputs
from services.engine.reference_inputs import term_life_records
from services.engine.runtime import Runtime
from services.engine.workers import WasmPool
from services.valuation.packages.config import REFERENCE_PIPELINE
from tests.engine.wasm_helpers import inputs, twin_arguments


@pytest.fixture(scope="module")
def pool() -> Iterator[WasmPool]:
    with WasmPool(Runtime(), threads=1) as p:
        yield p


def laid_out(pool: WasmPool, run: RunInputs, monkeypatch: pytest.MonkeyPatch) -> tuple[int, int]:
    """The most bytes the run asked the engine's memory for (the end of its layout) and the bytes
    of workspace the model asked for (``lc_workspace_size``; 0 when it asked for none)."""
    asked: list[int] = []
    workspace: list[int] = []
    ensure = pool.memory.ensure
    add = LayoutBuilder.add

    def watched(size: int) -> None:
        asked.append(size)
        ensure(size)

    def added(self: LayoutBuilder, name: str, size: int) -> Region:
        if name.endswith(".workspace"):
            workspace.append(size)
        return add(self, name, size)

    with monkeypatch.context() as m:
        m.setattr(pool.memory, "ensure", watched)
        m.setattr(layout.LayoutBuilder, "add", added)
        PipelineRunner(pool).run(REFERENCE_PIPELINE, run)
    assert len(workspace) <= 1
    return max(asked), sum(workspace)


def declared_shape(run: RunInputs) -> ProjectionShape:
    """What the run's declaration and tables lay out (rows and scenarios are least_engine_bytes' own)."""
    i = run.interface
    return ProjectionShape(
        rows=1,
        n_scen=1,
        n_outputs=len(i.outputs),
        columns=tuple((c.name, c.dtype) for c in i.columns),
        tables=tuple((t.name, t.shape) for t in run.assets.tables),
        n_params=len(i.parameters),
        n_scenario_inputs=len(i.scenario_inputs),
    )


@pytest.mark.parametrize(("rows", "scenarios"), [(1, 16), (300, 48), (1024, 160)])
def test_least_engine_bytes_is_the_engines_layout(
    pool: WasmPool, monkeypatch: pytest.MonkeyPatch, rows: int, scenarios: int
) -> None:
    run = inputs(rows, scenarios)  # scenarios: multiples of term_life's 16 lanes
    shape = declared_shape(run)
    assert (len(shape.columns), len(shape.tables), shape.n_outputs) == (8, 3, 5)
    months = run.records.horizon_months
    used, workspace = laid_out(pool, run, monkeypatch)
    assert workspace > 0  # term_life asks for one: the figure leaves it out, the run lays it out last
    assert used == least_engine_bytes(scenarios, months=months, policies=rows, shape=shape) + align_up(workspace)
    assert least_engine_bytes(scenarios) < least_engine_bytes(scenarios, months=months, policies=rows, shape=shape)
    assert least_engine_bytes(scenarios) == least_engine_bytes(scenarios, shape=LEAST_SHAPE) < used


def test_the_least_run_is_a_lower_bound(pool: WasmPool, monkeypatch: pytest.MonkeyPatch) -> None:
    """One policy with one month left, scenarios not a multiple of the lanes: still above the bound."""
    run = inputs(1, 19, in_force=0.0)
    p, _ = twin_arguments(run)
    one_month = dataclasses.replace(p, duration_mth=p.policy_term * 12 - 1, premium_pp=np.full(len(p), 50.0))
    run = dataclasses.replace(run, records=term_life_records(one_month, run.assets, run.interface))
    assert run.records.horizon_months == 1
    used, _ = laid_out(pool, run, monkeypatch)
    assert least_engine_bytes(19) <= used


def test_gigantic_counts_cost_nothing_to_size() -> None:
    started = time.monotonic()
    need = least_engine_bytes(4_294_967_295)
    assert time.monotonic() - started < 0.1
    # each scenario costs a month of every scenario input and a partial of every output (f64 each)
    per_scenario = 8 * (LEAST_SHAPE.n_scenario_inputs + LEAST_SHAPE.n_outputs)
    assert need == least_engine_bytes(1) + per_scenario * (4_294_967_295 - 1)  # an odd count: no padding
    assert need > per_scenario * 4_294_967_295 > 2 << 30
    assert least_engine_bytes(10_000_000) < least_engine_bytes(10_000_000, months=240)
    with pytest.raises(ValueError, match="≥ 1"):
        least_engine_bytes(0)


@pytest.mark.parametrize("cap", [8 << 20, 256 << 20, 2 << 30, 4 << 30])
@pytest.mark.parametrize("threads", [1, 4])
def test_max_scenarios_is_the_largest_count_whose_least_run_fits(cap: int, threads: int) -> None:
    most = max_scenarios(cap, threads=threads)
    assert most >= 1 and least_engine_bytes(most, threads=threads) <= cap
    assert least_engine_bytes(most + 1, threads=threads) > cap
    assert max_scenarios(1024) == 0  # not even the threads' stacks fit
