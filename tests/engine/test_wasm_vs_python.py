"""wasm:// and python:// nodes agree to 1e-9 relative on every scenario value (dynamic lapse on)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from services.engine import reference
from services.engine.layout import LayoutBuilder
from services.engine.pipeline import PipelineResult, PipelineRunner, RunInputs
from services.engine.runtime import Runtime
from services.engine.wasm_nodes import run_generator, run_projection
from services.engine.workers import RunControl, WasmPool
from services.valuation.arrays import F64
from services.valuation.interface.records import Records
from services.valuation.reference_model import shipped_models
from services.valuation.scenarios import ScenarioParams
from tests.engine.wasm_helpers import inputs, twin_arguments

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
    assert twin_arguments(run_inputs)[1].dyn_lapse_beta > 0


@pytest.mark.parametrize("esg", ["wasm", "python"])
def test_wasm_term_life_matches_python(
    host: PipelineRunner, run_inputs: RunInputs, python_result: PipelineResult, esg: str
) -> None:
    result = host.run(pipeline(esg, "wasm"), run_inputs)
    assert result.outputs == python_result.outputs
    assert result.outputs.names == ("premiums", "claims", "expenses", "commissions", "net_cf")
    for output in result.outputs.names:
        assert_close(result.portfolio(output), python_result.portfolio(output), f"portfolio {output}")
    assert_close(result.partials, python_result.partials, "block partials")


def test_wasm_esg_matches_python(host: PipelineRunner, run_inputs: RunInputs, python_result: PipelineResult) -> None:
    wasm = host.run(pipeline("wasm", "python"), run_inputs)
    rates_w, rates_p = wasm.buffers["rates"], python_result.buffers["rates"]
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
            (buffer,) = run_generator(
                lease, "esg", alloc, ScenarioParams(count=n, seed=99), months, control=RunControl()
            ).values()
            assert (buffer.n_scen, buffer.stride) == (n, months)
            out[n] = np.array(lease.memory.view(buffer.region, np.float64, (n, months)))
    assert np.array_equal(out[1], out[1000][:1])
    assert np.array_equal(out[5], out[1000][:5])
    alone = reference.esg(ScenarioParams(count=1000, seed=99), months, scenarios=[777])
    assert np.allclose(out[1000][[777]], alone, rtol=0, atol=1e-15)
    assert np.any(alone != 0)


def projection_partials(host: PipelineRunner, run_inputs: RunInputs, records: Records) -> F64:
    """wasm://esg → wasm://term_life on ``records``, driven node by node: block partials [blocks][5][N]."""
    months = records.horizon_months
    n_scen = run_inputs.scenarios.count
    control = RunControl()
    with host.pool.lease(control) as lease:
        for name, wasm in shipped_models().items():
            lease.load(name, wasm)
        alloc = LayoutBuilder(lease.memory.run_base)
        rates = run_generator(lease, "esg", alloc, run_inputs.scenarios, months, control=control)
        return run_projection(
            lease, "term_life", alloc, run_inputs.interface, records=records, assets=run_inputs.assets,
            scenarios=rates, n_scen=n_scen, control=control,
        ).partials  # fmt: skip


def with_premiums(records: Records, premium_pp: F64) -> Records:
    return Records({**records.columns, "premium_pp": premium_pp}, records.horizons)


def test_computed_premiums_match_reference(host: PipelineRunner, run_inputs: RunInputs) -> None:
    """The premiums the model computes for new business are the numpy twin's, bit for bit: a run
    given the twin's premiums for every row values each policy exactly as the run that computes
    them (premiums are not an output of ABI v2; the block partials show the premium used)."""
    policies, assumptions = twin_arguments(run_inputs)
    computes = policies.computes_premium
    assert computes.any() and not computes.all()  # new business computes, in-force rows are given one
    expected = reference.premium_pp(policies, assumptions)
    assert np.all(expected > 0)
    assert np.array_equal(expected[~computes], policies.premium_pp[~computes])
    records = run_inputs.records
    computed = projection_partials(host, run_inputs, records)
    given = projection_partials(host, run_inputs, with_premiums(records, expected))
    assert computed.tobytes() == given.tobytes()
    # the premium given is the one used: a cent more on one computed row changes its block's partials
    row = int(np.flatnonzero(computes)[0])
    off = expected.copy()
    off[row] += 0.01
    changed = projection_partials(host, run_inputs, with_premiums(records, off))
    block = row // 1024
    assert not np.array_equal(changed[block], computed[block])
    assert np.array_equal(np.delete(changed, block, axis=0), np.delete(computed, block, axis=0))
