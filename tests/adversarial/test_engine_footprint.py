"""`least_engine_bytes` is the layout the engine really allocates (issue 19, item 5).

A real pipeline run of one block on one thread grows the engine's memory to exactly the bytes
`least_engine_bytes` gives for its scenarios, months, policies and tables; with the defaults
(one policy, one month, the smallest tables) the figure is below every such run, so a gateway
that refuses on it never refuses a job some engine could run.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator

import numpy as np
import pytest

from services.engine.footprint import least_engine_bytes, max_scenarios
from services.engine.layout import TableShapes
from services.engine.pipeline import PipelineRunner, RunInputs
from services.engine.runtime import Runtime
from services.engine.workers import WasmPool
from services.valuation.packages.config import REFERENCE_PIPELINE
from tests.engine.wasm_helpers import inputs


@pytest.fixture(scope="module")
def pool() -> Iterator[WasmPool]:
    with WasmPool(Runtime(), threads=1) as p:
        yield p


def laid_out(pool: WasmPool, run: RunInputs, monkeypatch: pytest.MonkeyPatch) -> int:
    """The most bytes the run asked the engine's memory for (the end of its layout)."""
    asked: list[int] = []
    ensure = pool.memory.ensure

    def watched(size: int) -> None:
        asked.append(size)
        ensure(size)

    with monkeypatch.context() as m:
        m.setattr(pool.memory, "ensure", watched)
        PipelineRunner(pool).run(REFERENCE_PIPELINE, run)
    return max(asked)


@pytest.mark.parametrize(("rows", "scenarios"), [(1, 16), (300, 48), (1024, 160)])
def test_least_engine_bytes_is_the_engines_layout(
    pool: WasmPool, monkeypatch: pytest.MonkeyPatch, rows: int, scenarios: int
) -> None:
    run = inputs(rows, scenarios)  # scenarios: multiples of term_life's 16 lanes
    a = run.assumptions
    tables = TableShapes((a.mortality.shape[0], a.mortality.shape[1]), a.lapse.size, a.curve.size)
    months = run.policies.horizon_months
    used = laid_out(pool, run, monkeypatch)
    assert used == least_engine_bytes(scenarios, months=months, policies=rows, tables=tables)
    assert least_engine_bytes(scenarios) < used


def test_the_least_run_is_a_lower_bound(pool: WasmPool, monkeypatch: pytest.MonkeyPatch) -> None:
    """One policy with one month left, scenarios not a multiple of the lanes: still above the bound."""
    run = inputs(1, 19, in_force=0.0)
    p = run.policies
    one_month = dataclasses.replace(p, duration_mth=p.policy_term * 12 - 1, premium_pp=np.full(len(p), 50.0))
    run = dataclasses.replace(run, policies=one_month)
    assert run.policies.horizon_months == 1
    assert least_engine_bytes(19) <= laid_out(pool, run, monkeypatch)


def test_gigantic_counts_cost_nothing_to_size() -> None:
    started = time.monotonic()
    need = least_engine_bytes(4_294_967_295)
    assert time.monotonic() - started < 0.1
    assert need > 64 * 4_294_967_295 > 2 << 30
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
