"""How ``livecalc bench engine`` times and compares: the problem sizes, best-of timing, bitwise
comparison of block partials and the native builds every model is measured against.

Benchmarks are not tests: these helpers serve the model sections (`bench_term_life`,
`bench_savings`) and print nothing.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Final

import numpy as np

from services.engine.layout import LayoutBuilder, scenario_buffer
from services.engine.native import NARROW_FLAGS, SAME_BITS_FLAGS
from services.engine.pipeline import RunInputs
from services.engine.wasm_nodes import ScenarioBuffer, run_projection
from services.engine.workers import Executor, RunControl
from services.valuation.arrays import F64

NATIVE_BUILDS: Final[dict[str, tuple[str, ...]]] = {
    "native": (),
    "native_same_bits": SAME_BITS_FLAGS,
    "native_vw2_nofma": NARROW_FLAGS,
}
"""The native builds of each model, by report name → extra compiler flags: ``-O3 -march=native``
(FMA contracted: other bits), the same arithmetic as the WASM build at full native width (the fair
ratio), and WASM's vector width without FMA (profiling)."""


@dataclasses.dataclass(frozen=True)
class BenchSize:
    """The problem of one run (``--quick``: `QUICK`; else `FULL`, ``--policies`` replacing its policies)."""

    policies: int
    scenarios: int
    repeats: int
    """Timed runs of the native builds (after a warm-up); rounds of the WASM builds."""
    runs_per_lease: int = 1
    """Timed runs per WASM lease (after a warm-up): the WASM figures are best of repeats × this."""
    savings_scenarios: int = 16
    """Scenarios of the savings section (whole-life rows project ~3× term_life's months)."""
    one_scenario_policies: int = 8192
    """Policies of term_life's one-scenario line (a deterministic run: many policies, one scenario)."""


FULL = BenchSize(
    policies=4096, scenarios=256, repeats=5, runs_per_lease=3, savings_scenarios=64, one_scenario_policies=65536
)
"""savings: the same policy count under 64 scenarios, about as many steps as term_life's 256."""
QUICK = BenchSize(policies=4096, scenarios=16, repeats=2, savings_scenarios=16)


def timed(run: Callable[[], F64]) -> tuple[float, F64]:
    start = time.perf_counter()
    out = run()
    return time.perf_counter() - start, out


def best_of(repeats: int, run: Callable[[], F64]) -> tuple[float, F64]:
    best, out = float("inf"), np.zeros(0)
    for _ in range(repeats):
        t, out = timed(run)
        best = min(best, t)
    return best, out


def ratio(wasm: float, other: float | None) -> float | None:
    return wasm / other if other else None


def ratio_of(rate: float | None, other: float | None) -> float | None:
    return rate / other if rate and other else None


def projection_once(ex: Executor, model: str, scenario_input: str, inputs: RunInputs, data: F64) -> Callable[[], F64]:
    """One projection node of ``model``: ``data`` (scenarios × months) written as its scenario
    input ``scenario_input``, then `run_projection`; returns the partials."""
    n, months = data.shape
    control = RunControl()

    def once() -> F64:
        alloc = LayoutBuilder(ex.memory.run_base)
        region = scenario_buffer(alloc, scenario_input, n, months)
        ex.memory.ensure(alloc.end)
        ex.memory.view(region, np.float64, data.shape)[:] = data
        result = run_projection(
            ex, model, alloc, inputs.interface, records=inputs.records, assets=inputs.assets,
            scenarios={scenario_input: ScenarioBuffer(region, n, months)}, n_scen=n, control=control,
        )  # fmt: skip
        return result.partials

    return once
