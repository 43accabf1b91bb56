"""Shared helpers of the WASM engine tests: inputs with dynamic lapse on, a pool, a runner."""

from __future__ import annotations

import dataclasses

from services.engine.assumption_assets import lifelib_sample_assumptions
from services.engine.model_points import synthetic_policies
from services.engine.pipeline import PipelineRunner, RunInputs
from services.engine.reference_inputs import term_life_arguments, term_life_inputs
from services.engine.runtime import Runtime
from services.engine.workers import WasmPool
from services.valuation.assumptions import Assumptions
from services.valuation.policies import Policies
from services.valuation.scenarios import ScenarioParams

DYN_LAPSE_BETA = 25.0


def stochastic_assumptions() -> Assumptions:
    """lifelib's sample assumptions with dynamic lapse on (β = 25, default bounds)."""
    return dataclasses.replace(lifelib_sample_assumptions(), dyn_lapse_beta=DYN_LAPSE_BETA)


def inputs(rows: int, scenarios: int, *, seed: int = 7, in_force: float = 0.3) -> RunInputs:
    """A run of the shipped term_life declaration: ``rows`` synthetic policies, dynamic lapse on."""
    return term_life_inputs(
        synthetic_policies(rows, seed, in_force=in_force),
        stochastic_assumptions(),
        ScenarioParams(count=scenarios, seed=20240601, sigma=0.02),
    )


def rows_of(run: RunInputs, start: int, stop: int) -> RunInputs:
    """Rows [start, stop) of ``run`` as a run of their own (a chunk: ``start`` on a block boundary)."""
    return dataclasses.replace(run, records=run.records.take(slice(start, stop)), first_row=start)


def twin_arguments(run: RunInputs) -> tuple[Policies, Assumptions]:
    """The numpy twin's policies and assumptions of a term_life run."""
    return term_life_arguments(run.records, run.assets, run.interface)


def runner(runtime: Runtime, threads: int, **pool_kwargs: object) -> tuple[WasmPool, PipelineRunner]:
    pool = WasmPool(runtime, threads=threads, **pool_kwargs)  # type: ignore[arg-type]
    return pool, PipelineRunner(pool)
