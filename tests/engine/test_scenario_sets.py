"""Scenario sets on the engine (services/engine/scenario_sets.py): rows read in pieces, checked
row by row, laid out f64 [N][M] per declared input and cached; a set given as data replaces the
generator with the same bits."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pytest

from services.common.errors import FAULT_KEY, FAULT_MODEL
from services.engine.layout import LayoutBuilder
from services.engine.pipeline import PipelineRunner, RunInputs
from services.engine.runtime import Runtime
from services.engine.scenario_sets import ScenarioSet, ScenarioSetCache, ScenarioSetError, SetRequest, load_set
from services.engine.wasm_nodes import run_generator
from services.engine.workers import RunControl, WasmPool
from services.valuation.reference_model import shipped_models
from services.valuation.scenarios import ScenarioParams
from tests.engine.wasm_helpers import inputs

S, M = 6, 10


def rates(s: int = S, m: int = M) -> np.ndarray:
    return np.arange(s * m, dtype=np.float64).reshape(s, m) / 1000 - 0.01


def set_table(values: np.ndarray, **columns: pa.Array) -> pa.Table:
    s, m = values.shape
    base = {
        "scenario": pa.array(np.repeat(np.arange(s), m)),
        "month": pa.array(np.tile(np.arange(m), s)),
        "rates": pa.array(values.ravel()),
        "other": pa.array(["x"] * (s * m)),
    }
    return pa.table({**base, **columns})


class FakeRows:
    """Rows of one in-memory table; records each read."""

    def __init__(self, table: pa.Table, version: str = "v1") -> None:
        self.table, self.version = table, version
        self.reads: list[tuple[int, int, tuple[str, ...]]] = []

    async def read(
        self, dataset_id: str, version: str, start_row: int, end_row: int, *, columns: Sequence[str] = ()
    ) -> pa.Table:
        assert version == self.version
        self.reads.append((start_row, end_row, tuple(columns)))
        await asyncio.sleep(0)
        out = self.table.slice(start_row, end_row - start_row)
        return out.select([c for c in out.column_names if c in columns]) if columns else out


def request(count: int = S, months: int = M) -> SetRequest:
    return SetRequest("set", "v1", count, months, ("rates",))


def load(table: pa.Table, req: SetRequest | None = None, piece_rows: int = 7) -> ScenarioSet:
    return asyncio.run(load_set(FakeRows(table), req or request(), piece_rows=piece_rows))


def refusal(table: pa.Table, req: SetRequest | None = None) -> str:
    with pytest.raises(ScenarioSetError) as info:
        load(table, req)
    assert dict(info.value.trailing_metadata())[FAULT_KEY] == FAULT_MODEL  # the job fails at once
    return info.value.message


def test_loads_the_first_n_scenarios_in_pieces_of_the_needed_columns() -> None:
    values = rates()
    rows = FakeRows(set_table(values))
    loaded = asyncio.run(load_set(rows, request(count=4), piece_rows=7))
    assert loaded.arrays["rates"].shape == (4, M) and loaded.count == 4 and loaded.months == M
    assert np.array_equal(loaded.arrays["rates"], values[:4])
    assert rows.reads[0] == (0, 7, ("scenario", "month", "rates"))
    assert rows.reads[-1][1] == 4 * M and all(e - s <= 7 for s, e, _ in rows.reads)
    # integer cells are numbers too; whole floats are whole numbers
    ints = set_table(np.ones((S, M)), rates=pa.array(np.ones(S * M, dtype=np.int64)))
    assert np.all(load(ints).arrays["rates"] == 1.0)


def test_refusals_name_the_row_scenario_month_and_column() -> None:
    values = rates()
    nan = values.copy()
    nan[3, 4] = np.nan
    assert refusal(set_table(nan)) == "scenario set set: row 34 (scenario 3, month 4): rates is NaN"
    inf = values.copy()
    inf[5, 9] = -np.inf
    assert refusal(set_table(inf)).endswith("row 59 (scenario 5, month 9): rates is -infinite")
    missing = pa.array([None if i == 12 else float(v) for i, v in enumerate(values.ravel())], pa.float64())
    assert refusal(set_table(values, rates=missing)).endswith("row 12 (scenario 1, month 2): rates is missing")
    # scenario 2 lacks month 5 (month 6 comes twice, then its last months shift)
    months = np.tile(np.arange(M), S)
    months[25:30] = [6, 6, 7, 8, 9]
    message = refusal(set_table(values, month=pa.array(months)))
    assert "row 25 (scenario 2, month 6) should be scenario 2, month 5" in message
    scenarios = np.repeat(np.arange(S), M)
    scenarios[40] = 3
    assert "row 40 (scenario 3, month 0) should be scenario 4, month 0" in refusal(
        set_table(values, scenario=pa.array(scenarios))
    )
    assert "has no column rates" in refusal(set_table(values).drop(["rates"]))
    assert "column rates is string" in refusal(set_table(values, rates=pa.array(["1"] * (S * M))))
    assert "month is 2.5, not a whole number" in refusal(
        set_table(values, month=pa.array([2.5 if i == 3 else float(i % M) for i in range(S * M)]))
    )


def test_the_set_must_cover_every_policy_horizon() -> None:
    loaded = load(set_table(rates()))
    records = inputs(8, 2, seed=3).records
    need = int(records.horizons.max())
    short = ScenarioSet("set", "v1", need - 1, loaded.arrays)
    with pytest.raises(ScenarioSetError, match=rf"scenario set set has {need - 1} months; the policies need {need} "):
        short.check_covers(records, lambda r: 1000 + r)
    ScenarioSet("set", "v1", need, loaded.arrays).check_covers(records, lambda r: r)


def test_cache_reads_a_set_once_and_keeps_it_within_its_bytes() -> None:
    table = set_table(rates())

    async def scenario() -> None:
        rows = FakeRows(table)
        per_set = request().nbytes
        cache = ScenarioSetCache(max_bytes=2 * per_set, piece_rows=7)
        a, b = await asyncio.gather(cache.get(rows, "t", request()), cache.get(rows, "t", request()))
        assert a is b and cache.loads == 1  # two chunks at once: one read
        assert await cache.get(rows, "t", request()) is a and cache.loads == 1
        await cache.get(rows, "other-tenant", request())  # another tenant's set is its own
        assert cache.loads == 2 and cache.size_bytes == 2 * per_set
        await cache.get(rows, "t", request(count=5))  # a third set: the least recently used goes
        assert cache.loads == 3 and cache.size_bytes <= 2 * per_set
        await cache.get(rows, "t", request())
        assert cache.loads == 4
        # a set larger than the cache is read for each chunk, never kept
        small = ScenarioSetCache(max_bytes=per_set - 1, piece_rows=7)
        await small.get(rows, "t", request())
        await small.get(rows, "t", request())
        assert small.loads == 2 and small.size_bytes == 0
        # a broken set's error reaches every chunk that waited for it, and is not kept
        bad = rates()
        bad[0, 1] = np.nan
        broken = FakeRows(set_table(bad))
        results = await asyncio.gather(
            cache.get(broken, "b", request()), cache.get(broken, "b", request()), return_exceptions=True
        )
        assert all(isinstance(r, ScenarioSetError) for r in results)
        with pytest.raises(ScenarioSetError):
            await cache.get(broken, "b", request())

    asyncio.run(scenario())


def test_a_set_given_as_data_replaces_the_generator_with_the_same_bits() -> None:
    """The esg's rates, given as scenario data of more months than the policies need, give the
    generator's partials bit for bit (the generator does not run)."""
    run_inputs = inputs(1500, 7, seed=5, in_force=0.4)
    months = run_inputs.records.horizon_months + 13
    with WasmPool(Runtime(), threads=2) as pool:
        with pool.lease() as lease:
            lease.load("esg", shipped_models()["esg"])
            alloc = LayoutBuilder(lease.memory.run_base)
            (buffer,) = run_generator(lease, "esg", alloc, run_inputs.scenarios, months, control=RunControl()).values()
            generated = np.array(lease.memory.view(buffer.region, np.float64, (buffer.n_scen, months)))
        runner = PipelineRunner(pool)
        nodes = [
            {"id": "esg", "engine": "wasm://esg", "inputs": ["$scenarios"], "outputs": ["bus://rates"]},
            {"id": "tl", "engine": "wasm://term_life", "inputs": ["$policies", "$assumptions", "bus://rates"],
             "outputs": ["bus://pv"]},
        ]  # fmt: skip
        expected = runner.run(nodes, run_inputs)
        # another seed: only the data can give the generator's bits
        other = ScenarioParams(count=run_inputs.scenarios.count, seed=run_inputs.scenarios.seed + 1)
        given = RunInputs(run_inputs.interface, run_inputs.records, run_inputs.assets, other, {"rates": generated})
        got = runner.run(nodes, given)
    assert np.array_equal(got.partials, expected.partials)
    assert got.result_hash == expected.result_hash
    assert np.array_equal(got.buffers["rates"], generated)
