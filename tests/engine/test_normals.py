"""wasm://normals, the standard-normal scenario generator: docs/model.md's counter-based Z_s(m).

It equals its numpy twin (python://normals, `reference.standard_normals`) to 1e-15 (not bit for
bit: the module's libm is musl's, the twin's numpy's; on 10^6 draws 2.9% differ, by at most 3 ulp,
8.9e-16), gives a scenario the same bits whatever N, the thread count or the split of scenarios
over calls, zeros scenario 0 with include_base, draws esg's own Z, and its draws look standard
normal.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest

from services.engine import reference
from services.engine.layout import LayoutBuilder
from services.engine.pipeline import PipelineRunner
from services.engine.runtime import Runtime
from services.engine.wasm_nodes import run_generator
from services.engine.workers import RunControl, RunLease, WasmPool
from services.valuation.arrays import F64
from services.valuation.packages.config import pipeline_issues
from services.valuation.reference_model import shipped_models
from services.valuation.scenarios import ScenarioParams
from tests.engine.wasm_helpers import inputs

SEED = 20240601
TOLERANCE = 1e-15
"""|wasm − twin| ≤ 1e-15·max(1, |Z|): log, sin and cos differ in the last bits between libms."""


@pytest.fixture(scope="module")
def runtime() -> Runtime:
    return Runtime()


@pytest.fixture(scope="module")
def pool(runtime: Runtime) -> Iterator[WasmPool]:
    with WasmPool(runtime, threads=2) as pool:
        yield pool


class Split:
    """A lease whose ``lc_prepare_scenarios`` calls cover the scenarios in the ranges given."""

    def __init__(self, lease: RunLease, ranges: Sequence[tuple[int, int]]) -> None:
        self._lease, self._ranges = lease, ranges

    def map(self, model: str, function: str, ctx: int, ranges: Sequence[tuple[int, int]], control: RunControl) -> None:
        self._lease.map(model, function, ctx, self._ranges, control)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._lease, name)


def generate(
    pool: WasmPool,
    params: ScenarioParams,
    months: int,
    *,
    model: str = "normals",
    ranges: Sequence[tuple[int, int]] = (),
) -> F64:
    """The generator's buffer f64 [N][months], filled by ``model`` on ``pool`` (over ``ranges`` when given)."""
    with pool.lease() as lease:
        lease.load(model, shipped_models()[model])
        ex = Split(lease, ranges) if ranges else lease
        (buffer,) = run_generator(
            ex, model, LayoutBuilder(lease.memory.run_base), params, months, control=RunControl()
        ).values()
        return np.array(lease.memory.view(buffer.region, np.float64, (params.count, months)))


def assert_twin(wasm: F64, twin: F64) -> None:
    assert wasm.shape == twin.shape
    diff = np.abs(wasm - twin)
    assert np.all(diff <= TOLERANCE * np.maximum(1.0, np.abs(twin))), f"max |Δ| {diff.max():.3g}"
    ulps = np.abs(wasm.view(np.int64) - twin.view(np.int64))
    assert ulps.max() <= 4


def test_wasm_equals_the_numpy_twin(pool: WasmPool) -> None:
    for params, months in ((ScenarioParams(count=300, seed=SEED), 361), (ScenarioParams(count=7, seed=0), 1)):
        wasm = generate(pool, params, months)
        twin = reference.standard_normals(params, months)
        assert wasm.shape == (params.count, months)
        assert_twin(wasm, twin)
        assert np.mean(wasm == twin) > 0.9  # the same draws: most agree to the bit


def test_a_row_depends_on_seed_and_scenario_only(runtime: Runtime, pool: WasmPool) -> None:
    """N = 1, 5 and 1000 share their first rows; one, two or three threads, or scenarios produced
    one call each in reverse order, give the same bits; scenario 777 alone is the twin's."""
    months = 240
    full = generate(pool, ScenarioParams(count=1000, seed=SEED), months)
    for n in (1, 5):
        assert generate(pool, ScenarioParams(count=n, seed=SEED), months).tobytes() == full[:n].tobytes()
    for threads in (1, 3):
        with WasmPool(runtime, threads=threads) as other:
            assert generate(other, ScenarioParams(count=1000, seed=SEED), months).tobytes() == full.tobytes()
    n = 40
    odd = [(0, 1), (1, 8), (8, 9), (9, 33), (33, 40)]
    reverse = [(s, s + 1) for s in reversed(range(n))]
    for ranges in (odd, reverse):
        split = generate(pool, ScenarioParams(count=n, seed=SEED), months, ranges=ranges)
        assert split.tobytes() == full[:n].tobytes()
    alone = reference.standard_normals(ScenarioParams(count=1000, seed=SEED), months, scenarios=[777])
    assert_twin(full[[777]], alone)
    other_seed = generate(pool, ScenarioParams(count=5, seed=SEED + 1), months)
    assert not np.any(other_seed[1:] == full[1:5])


def test_include_base_zeroes_scenario_zero_only(pool: WasmPool) -> None:
    months = 121
    with_base = generate(pool, ScenarioParams(count=4, seed=SEED, include_base=True), months)
    without = generate(pool, ScenarioParams(count=4, seed=SEED, include_base=False), months)
    assert np.all(with_base[0] == 0.0)
    assert with_base[1:].tobytes() == without[1:].tobytes()
    assert_twin(without[:1], reference.normals(SEED, [0], months))
    assert np.all(without[0] != 0.0)
    # a and σ are the esg's: they play no part here
    tuned = generate(pool, ScenarioParams(count=4, seed=SEED, a=0.7, sigma=0.3), months)
    assert tuned.tobytes() == with_base.tobytes()


def test_the_draws_are_esgs_z(pool: WasmPool) -> None:
    """esg's r(m+1) = φ·r(m) + σ_m·Z(m) solved for Z gives wasm://normals' draws (1e-9: the
    recursion's rounding)."""
    params = ScenarioParams(count=50, seed=SEED, a=0.1, sigma=0.01)
    months = 120
    rates = generate(pool, params, months, model="esg")
    z = generate(pool, params, months)
    phi, sigma_m = reference.ou_phi(params.a), reference.ou_sigma_mth(params.a, params.sigma)
    recovered = (rates[:, 1:] - phi * rates[:, :-1]) / sigma_m
    assert np.max(np.abs(recovered - z[:, :-1])) < 1e-9


def test_moments_look_standard_normal(pool: WasmPool) -> None:
    """10^5 draws (100 scenarios × 1,000 months): mean 0 and variance 1 within 4.5 standard
    errors, the two halves of a Box–Muller pair uncorrelated, tails as a normal's."""
    z = generate(pool, ScenarioParams(count=101, seed=SEED), 1000)[1:]
    draws = z.reshape(-1)
    assert draws.size == 100_000
    se = 1 / np.sqrt(draws.size)
    assert abs(draws.mean()) < 4.5 * se
    assert abs(draws.var() - 1.0) < 4.5 * np.sqrt(2) * se
    assert abs(np.corrcoef(z[:, 0::2].reshape(-1), z[:, 1::2].reshape(-1))[0, 1]) < 4.5 * np.sqrt(2) * se
    assert abs(np.mean(np.abs(draws) > 1.96) - 0.05) < 0.005
    assert abs(np.mean(draws**3)) < 4.5 * np.sqrt(15) * se  # symmetric (sd of the third moment √15/√n)


def test_python_and_wasm_nodes_fill_the_same_bus(pool: WasmPool) -> None:
    """In a pipeline, python://normals and wasm://normals fill the bus buffer a projection reads."""
    run = inputs(64, 6, seed=3)
    buffers = {}
    for scheme in ("wasm", "python"):
        config = [
            {"id": "z", "engine": f"{scheme}://normals", "inputs": ["$scenarios"], "outputs": ["bus://rates"]},
            {
                "id": "tl",
                "engine": "wasm://term_life",
                "inputs": ["$policies", "$assumptions", "bus://rates"],
                "outputs": ["bus://pv"],
            },
        ]
        assert not [i for i in pipeline_issues(config) if i.severity == "error"]
        buffers[scheme] = PipelineRunner(pool).run(config, run).buffers["rates"]
    assert buffers["wasm"].shape == (6, run.records.horizon_months)
    assert_twin(buffers["wasm"], buffers["python"])
