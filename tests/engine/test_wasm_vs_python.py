"""wasm:// and python:// nodes agree to 1e-9 relative on every scenario value (dynamic lapse on)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from services.engine import reference
from services.engine.abi import PV_COMPONENTS
from services.engine.layout import LayoutBuilder
from services.engine.pipeline import PipelineResult, PipelineRunner, RunInputs
from services.engine.runtime import Runtime
from services.engine.wasm_nodes import run_esg
from services.engine.workers import RunControl, WasmPool
from services.valuation.reference_model import shipped_models
from services.valuation.scenarios import ScenarioParams
from tests.engine.wasm_helpers import inputs

RTOL = 1e-9


def pipeline(esg: str, term_life: str) -> list[dict[str, object]]:
    return [
        {"id": "esg", "engine": f"{esg}://esg", "inputs": ["$scenarios"], "outputs": ["bus://rates"]},
        {
            "id": "tl",
            "engine": f"{term_life}://term_life",
            "inputs": ["$policies", "$assumptions", "bus://rates"],
            "outputs": ["bus://pv"],
        },
    ]


@pytest.fixture(scope="module")
def host() -> Iterator[PipelineRunner]:
    with WasmPool(Runtime(), threads=2) as pool:
        yield PipelineRunner(pool)


@pytest.fixture(scope="module")
def run_inputs() -> RunInputs:
    return inputs(1500, 40, seed=11, in_force=0.4)


@pytest.fixture(scope="module")
def python_result(host: PipelineRunner, run_inputs: RunInputs) -> PipelineResult:
    return host.run(pipeline("python", "python"), run_inputs)


def assert_close(actual: np.ndarray, expected: np.ndarray, what: str) -> None:
    rel = np.abs(actual - expected) / np.maximum(np.abs(expected), 1e-300)
    worst = np.unravel_index(int(np.argmax(rel)), rel.shape)
    assert rel.max() <= RTOL, f"{what}: relative difference {rel.max():.3g} at {worst}"


def test_dynamic_lapse_is_on(run_inputs: RunInputs) -> None:
    assert run_inputs.assumptions.dyn_lapse_beta > 0


@pytest.mark.parametrize("esg", ["wasm", "python"])
def test_wasm_term_life_matches_python(
    host: PipelineRunner, run_inputs: RunInputs, python_result: PipelineResult, esg: str
) -> None:
    result = host.run(pipeline(esg, "wasm"), run_inputs)
    for component in PV_COMPONENTS:
        assert_close(result.portfolio(component), python_result.portfolio(component), f"portfolio {component}")
    assert_close(result.partials, python_result.partials, "block partials")


def test_wasm_esg_matches_python(host: PipelineRunner, run_inputs: RunInputs, python_result: PipelineResult) -> None:
    wasm = host.run(pipeline("wasm", "python"), run_inputs)
    rates_w, rates_p = wasm.buffers["bus://rates"], python_result.buffers["bus://rates"]
    assert np.all(rates_w[0] == 0.0)  # include_base: scenario 0 is the base curve
    assert np.max(np.abs(rates_w - rates_p)) <= RTOL * np.max(np.abs(rates_p))


def test_esg_scenario_alone_equals_among_many(host: PipelineRunner) -> None:
    """A scenario's rates depend on (seed, s) only, not on N: the bits of N=1 and N=5 are the
    first rows of N=1000, and scenario 777 of 1000 is the reference's scenario 777 alone."""
    months = 240
    out = {}
    with host.pool.lease() as lease:
        lease.load("esg", shipped_models()["esg"])
        for n in (1, 5, 1000):
            alloc = LayoutBuilder(lease.memory.run_base)
            region = run_esg(lease, "esg", alloc, ScenarioParams(count=n, seed=99), months, control=RunControl())
            out[n] = np.array(lease.memory.view(region, np.float64, (n, months)))
    assert np.array_equal(out[1], out[1000][:1])
    assert np.array_equal(out[5], out[1000][:5])
    alone = reference.esg(ScenarioParams(count=1000, seed=99), months, scenarios=[777])
    assert np.allclose(out[1000][[777]], alone, rtol=0, atol=1e-15)
    assert np.any(alone != 0)


def test_computed_premiums_match_reference(host: PipelineRunner, run_inputs: RunInputs) -> None:
    from services.engine.wasm_nodes import run_term_life

    months = run_inputs.policies.horizon_months
    control = RunControl()
    with host.pool.lease(control) as lease:
        for name, wasm in shipped_models().items():
            lease.load(name, wasm)
        alloc = LayoutBuilder(lease.memory.run_base)
        rates = run_esg(lease, "esg", alloc, run_inputs.scenarios, months, control=control)
        result = run_term_life(
            lease, "term_life", alloc, run_inputs.policies, run_inputs.assumptions,
            rates=rates, n_scen=run_inputs.scenarios.count, rates_stride=months, control=control,
        )  # fmt: skip
    expected = reference.premium_pp(run_inputs.policies, run_inputs.assumptions)
    assert np.array_equal(result.premium_pp, expected)
