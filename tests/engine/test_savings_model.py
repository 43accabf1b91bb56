"""The savings model (wasm://savings) against its numpy twin (python://savings), the block rule,
the normals → savings pipeline and the package (lifelib itself: test_savings_lifelib.py).

- wasm and python agree to 1e-9 relative per policy and scenario on every output (measured:
  about 1e-12, the AV recursion carrying musl's exp against numpy's over up to 840 months);
- the block rule: partials[b][k][s] is the sum over the block's rows, in row order from +0.0, of
  each row's own value (rows valued alone, read exactly from `padded` runs), bit for bit, and a
  run split into chunks at block boundaries, over 1 or 2 threads and any blocks per call, gives
  the same bits;
- rows the model cannot value are refused by the declaration's rules first.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pytest

from services.engine.pipeline import PipelineRunner, RunInputs
from services.engine.reference_savings import OUTPUTS, savings, savings_arguments, savings_inputs
from services.engine.runtime import Runtime
from services.engine.workers import WasmPool
from services.valuation.arrays import F64
from services.valuation.blocks import BLOCK_SIZE
from services.valuation.errors import ModelInputError
from services.valuation.packages.package import check_contents
from services.valuation.packages.reference import SAVINGS_MODELS, config_bytes, savings_config
from services.valuation.reference_model import savings_assumption_files, shipped_models
from services.valuation.scenarios import ScenarioParams
from tests.engine.savings_points import draws, generated_rows, padded, per_policy, pipeline

pytestmark = pytest.mark.timeout(120)

RTOL = 1e-9
POINTS, SCENARIOS = 240, 20


@pytest.fixture(scope="module")
def host() -> Iterator[PipelineRunner]:
    with WasmPool(Runtime(), threads=2) as pool:
        yield PipelineRunner(pool)


@pytest.fixture(scope="module")
def rows() -> pa.Table:
    return generated_rows(POINTS, seed=5)


@pytest.fixture(scope="module")
def std_norm(rows: pa.Table) -> F64:
    months = int(savings_inputs(rows, np.zeros((1, 1200))).records.horizon_months)
    return draws(SCENARIOS, months, seed=9)


def relative(actual: F64, expected: F64) -> F64:
    """|actual − expected| / |expected|, 0 where both are 0 (and inf where only expected is)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        rel: F64 = np.where(actual == expected, 0.0, np.abs(actual - expected) / np.abs(expected))
    return rel


def test_wasm_equals_the_numpy_twin_per_policy(host: PipelineRunner, rows: pa.Table, std_norm: F64) -> None:
    wasm = per_policy(host, rows, std_norm)
    run = savings_inputs(rows, std_norm)
    twin = savings(*savings_arguments(run.records, run.assets, run.interface), std_norm)
    for k, name in enumerate(OUTPUTS):
        rel = relative(wasm[k], getattr(twin, name))
        print(f"{name}: max relative difference wasm/python {rel.max():.2e}")
        assert rel.max() <= RTOL, name


def test_python_node_equals_wasm_node_over_blocks(host: PipelineRunner) -> None:
    """Three blocks through the pipeline, normals given as data: python://savings's partials are
    wasm://savings's to 1e-9."""
    rows = generated_rows(2500, seed=17)
    z = draws(12, 900, seed=3)
    run = savings_inputs(rows, z)
    wasm = host.run(pipeline("wasm"), run)
    python = host.run(pipeline("python"), run)
    assert wasm.outputs.names == OUTPUTS and wasm.outputs.primary == OUTPUTS.index("net_cf")
    assert wasm.partials.shape == (3, len(OUTPUTS), 12)
    assert relative(wasm.partials, python.partials).max() <= RTOL


def test_block_partials_are_row_sums_in_row_order(host: PipelineRunner, rows: pa.Table, std_norm: F64) -> None:
    """partials[b][k][s] = (((+0.0 + v_0) + v_1) + …): each row valued alone (`padded`), folded in row order."""
    alone = per_policy(host, rows, std_norm)  # [k][row][s]
    whole = host.run(pipeline(), savings_inputs(rows, std_norm)).partials  # one block of 240 rows
    folded = np.zeros((len(OUTPUTS), SCENARIOS))
    for i in range(rows.num_rows):
        folded += alone[:, i, :]
    assert whole.shape == (1, len(OUTPUTS), SCENARIOS)
    assert whole[0].tobytes() == folded.tobytes()


def test_split_runs_give_the_same_bits() -> None:
    """Chunks at block boundaries, 1 or 2 threads, 1 or 3 blocks per call: the same partials."""
    rows = generated_rows(3 * BLOCK_SIZE + 100, seed=23)
    z = draws(10, 900, seed=4)
    run = savings_inputs(rows, z)

    def chunk(start: int, stop: int) -> RunInputs:
        return dataclasses.replace(run, records=run.records.take(slice(start, stop)), first_row=start)

    results = []
    for threads in (1, 2):
        with WasmPool(Runtime(), threads=threads) as pool:
            runner = PipelineRunner(pool)
            results.append(runner.run(pipeline(), run).partials)
            results.append(runner.run(pipeline(), run, blocks_per_call=3).partials)
            parts = [
                runner.run(pipeline(), chunk(a, b)).partials for a, b in ((0, 1024), (1024, 3 * 1024), (3072, 3172))
            ]
            results.append(np.concatenate(parts))
    assert results[0].shape == (4, len(OUTPUTS), 10)
    assert all(r.tobytes() == results[0].tobytes() for r in results[1:])


def test_normals_feed_the_projection(host: PipelineRunner, rows: pa.Table) -> None:
    """The package's pipeline as it runs in a job: wasm://normals → wasm://savings equals the twins
    (python://normals → python://savings) to 1e-9, and its draws are what the projection read."""
    given = savings_inputs(rows.slice(0, 60), np.zeros((16, 1)))
    run = dataclasses.replace(given, scenarios=ScenarioParams(count=16, seed=77), scenario_data={})
    wasm = host.run(pipeline("wasm", "wasm"), run)
    python = host.run(pipeline("python", "python"), run)
    assert relative(wasm.partials, python.partials).max() <= RTOL
    as_data = dataclasses.replace(run, scenario_data={"std_norm": wasm.buffers["std_norm"]})
    assert host.run(pipeline("wasm"), as_data).partials.tobytes() == wasm.partials.tobytes()
    assert np.all(np.isfinite(wasm.portfolio())) and np.unique(wasm.portfolio()).size == 16


@pytest.mark.parametrize(
    ("change", "column"),
    [
        ({"duration_mth": -3}, "duration_mth"),  # future new business: not this model
        ({"is_wl": "true", "age_at_entry": 115}, "is_wl"),  # whole life from the last age: no term
        ({"policy_term": 0}, "policy_term"),
        ({"age_at_entry": 100, "policy_term": 20}, "policy_term"),  # past the mortality table
        ({"has_surr_charge": "true", "surr_charge_id": "none"}, "surr_charge_id"),
        ({"duration_mth": 241}, "duration_mth"),  # past maturity (term 20)
    ],
)
def test_the_declaration_refuses_rows_the_model_cannot_value(change: dict[str, object], column: str) -> None:
    base = {
        "policy_id": 1, "age_at_entry": 40, "policy_term": 20, "sum_assured": 1e5, "premium_pp": 1e3,
        "premium_type": "LEVEL", "is_wl": "false", "has_surr_charge": "false", "surr_charge_id": "none",
    }  # fmt: skip
    table = pa.table({k: [v] for k, v in {**base, **change}.items()})
    with pytest.raises(ModelInputError) as caught:
        savings_inputs(table, np.zeros((1, 1500)))
    assert column in {v.column for v in caught.value.violations}


def test_the_savings_package_validates() -> None:
    config = savings_config()
    files = {f"wasm/{name}.wasm": shipped_models()[name] for name in SAVINGS_MODELS}
    files |= {f"assumptions/{name}": data for name, data in savings_assumption_files().items()}
    files["livecalc.config.json"] = config_bytes(config)
    assert [i for i in check_contents(config, files) if i.severity == "error"] == []


def test_padded_rows_are_worth_nothing(rows: pa.Table) -> None:
    run = savings_inputs(padded(rows.slice(0, 3)), np.zeros((1, 1200)))
    assert run.records.n_rows == 3 * BLOCK_SIZE
    fill = np.ones(run.records.n_rows, dtype=bool)
    fill[::BLOCK_SIZE] = False
    assert np.all(run.records.horizons[fill] == 0) and np.all(run.records.columns["policy_count"][fill] == 0)
