"""The generator runs once per job's scenarios on an engine, not once per piece: the buffers one
piece generated are given to the next pieces as scenario data when they reach their horizon, and
the block partials are those of one run over every row, bit for bit (the generator rerun when a
piece reaches further than the buffers kept; a shorter piece reads the longer buffers)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from prometheus_client import CollectorRegistry

from services.engine import pipeline
from services.engine.assumption_assets import lifelib_sample_assumptions
from services.engine.chunk_runner import ChunkRunner, ChunkStats, ChunkWork
from services.engine.generated_scenarios import GeneratedScenarios
from services.engine.metrics import EngineMetrics
from services.engine.model_points import synthetic_policies
from services.engine.package_loader import LoadedPackage
from services.engine.pipeline import PipelineRunner, RunInputs, plan
from services.engine.reference_inputs import term_life_assets, term_life_interface
from services.engine.row_reader import Sample
from services.engine.runtime import Runtime
from services.engine.workers import RunControl, WasmPool
from services.valuation.blocks import BLOCK_SIZE
from services.valuation.interface.records import Records
from services.valuation.packages.config import REFERENCE_PIPELINE
from services.valuation.reference_model import shipped_models
from services.valuation.scenarios import ScenarioParams
from tests.adversarial.test_engine_refusals import policy_table

SCENARIOS = ScenarioParams(count=40, seed=11, a=0.1, sigma=0.01, include_base=True)


class Rows:
    def __init__(self, table: pa.Table) -> None:
        self.table = table

    async def read(self, dataset_id: str, version: str, start_row: int, end_row: int, **_: Any) -> pa.Table:
        return self.table.slice(start_row, end_row - start_row)

    async def sample(self, dataset_id: str, version: str, n: int, seed: int, **_: Any) -> Sample:
        raise NotImplementedError


def terms_by_block(terms: list[int]) -> pa.Table:
    """Policies whose block b all have term terms[b] years (so each piece has its own horizon)."""
    table = policy_table(synthetic_policies(len(terms) * BLOCK_SIZE, 5))
    term = pa.array(np.repeat(np.array(terms, dtype=np.int64), BLOCK_SIZE))
    return table.set_column(table.schema.get_field_index("policy_term"), "policy_term", term)


def test_kept_buffers_serve_runs_they_reach_and_longer_ones_replace_them() -> None:
    kept = GeneratedScenarios(kept_bytes=10_000)
    short, long = np.zeros((2, 60)), np.ones((2, 120))
    kept.keep("p", SCENARIOS, {"rates": short})
    assert kept.get("p", SCENARIOS, 60) is not None and kept.get("p", SCENARIOS, 61) is None
    assert kept.get("q", SCENARIOS, 10) is None  # another package's generator
    kept.keep("p", SCENARIOS, {"rates": long})
    assert kept.get("p", SCENARIOS, 100)["rates"] is long  # type: ignore[index]
    kept.keep("p", SCENARIOS, {"rates": short})  # shorter than kept: not taken
    assert kept.get("p", SCENARIOS, 120) is not None
    kept.keep("big", SCENARIOS, {"rates": np.zeros((2, 1000))})  # past the bound alone: not kept
    assert kept.get("big", SCENARIOS, 1) is None


@pytest.mark.anyio
@pytest.mark.parametrize("terms", [[5, 20, 5, 10], [20, 20, 20]])
async def test_pieces_reuse_the_generated_scenarios_with_the_same_bits(
    terms: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    table = terms_by_block(terms)
    interface, assets = term_life_interface(), term_life_assets(lifelib_sample_assumptions())
    package = LoadedPackage(package_hash="pkg", name="pkg", version="1", nodes=tuple(plan(REFERENCE_PIPELINE)),
                            binaries=shipped_models(), interface=interface, assets=assets, scenario_defaults={},
                            archive_bytes=0)  # fmt: skip
    with WasmPool(Runtime(), threads=2) as pool:
        records = Records.from_table(table, interface, assets.bounds)
        whole = PipelineRunner(pool, shipped_models()).run(REFERENCE_PIPELINE, RunInputs(interface, records, assets,
                                                                                        SCENARIOS))  # fmt: skip
        generated = []
        real = pipeline.run_generator

        def counting(*args: Any, **kwargs: Any) -> Any:
            generated.append(args[4])  # the run's months
            return real(*args, **kwargs)

        monkeypatch.setattr(pipeline, "run_generator", counting)
        runner = ChunkRunner(pool, EngineMetrics.create(CollectorRegistry()), piece_blocks=1)
        work = ChunkWork("d", "v", SCENARIOS, first_block=0, block_count=len(terms))
        partials = []
        async for message in runner.run(package, work, Rows(table), table.num_rows, control=RunControl(),
                                        stats=ChunkStats()):  # fmt: skip
            if message.WhichOneof("event") == "partial":
                p = message.partial
                partials.append(np.array(p.values).reshape(p.output_count, -1))
    assert np.array(partials).tobytes() == whole.partials.tobytes()
    # a run per piece, the generator only where the horizon grew past what was kept
    grew = [m for i, m in enumerate(12 * t for t in terms) if m > max([0] + [12 * t for t in terms[:i]])]
    assert generated == grew
