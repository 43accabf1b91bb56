"""Shared helpers of the WASM engine tests: inputs with dynamic lapse on, a pool, a runner."""

from __future__ import annotations

import dataclasses

from services.engine.assumption_assets import lifelib_sample_assumptions
from services.engine.model_points import synthetic_policies
from services.engine.pipeline import PipelineRunner, RunInputs
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
    return RunInputs(
        policies=synthetic_policies(rows, seed, in_force=in_force),
        assumptions=stochastic_assumptions(),
        scenarios=ScenarioParams(count=scenarios, seed=20240601, sigma=0.02),
    )


def rows_of(policies: Policies, start: int, stop: int) -> Policies:
    return policies.take(range(start, stop))


def runner(runtime: Runtime, threads: int, **pool_kwargs: object) -> tuple[WasmPool, PipelineRunner]:
    pool = WasmPool(runtime, threads=threads, **pool_kwargs)  # type: ignore[arg-type]
    return pool, PipelineRunner(pool)
