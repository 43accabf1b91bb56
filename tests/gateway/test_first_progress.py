"""A client sees a job's first work done after about one block's time, not a piece's or a tick's.

The engine starts a job's first chunk (the one from block 0) with a piece of one block per
worker thread, and the gateway reports progress as soon as the first blocks fold, coalescing
only later reports to `--progress-seconds`. Here the tick is 30 s and the job one chunk of
8 blocks, one piece of 8 without the lead: before either change, the first progress with work
done was the job's last (8 of 8, when the fold completed).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from livecalc.engine.v1 import engine_pb2
from livecalc.gateway.v1 import job_pb2
from services.data.generate import generate
from services.engine.chunk_runner import piece_ranges
from services.valuation.blocks import BLOCK_SIZE
from tests.engine.mesh import datasets_dir, stochastic_package, upload_package
from tests.gateway.jobmesh import submit
from tests.inprocess import threaded_mesh

BLOCKS = 8


def test_the_first_chunk_leads_with_a_block_per_thread() -> None:
    assert piece_ranges(0, 20, 8, lead=2) == [(0, 2), (2, 10), (10, 18), (18, 20)]
    assert piece_ranges(0, 20, 8) == [(0, 8), (8, 16), (16, 20)]
    assert piece_ranges(0, 2, 8, lead=2) == [(0, 2)]  # nothing to lead
    assert piece_ranges(0, 20, 2, lead=2) == [(0, 2), (2, 4), (4, 6), (6, 8), (8, 10), (10, 12), (12, 14), (14, 16),
                                              (16, 18), (18, 20)]  # fmt: skip  # pieces no larger than the lead


@pytest.mark.timeout(120)
def test_first_progress_with_work_done_comes_before_the_job_ends(tmp_path: Path) -> None:
    root = datasets_dir(tmp_path)
    generate(root / "pol.parquet", BLOCKS * BLOCK_SIZE, 3)
    archive = stochastic_package(tmp_path / "model")
    flags = {"gateway_flags": {"progress_seconds": 30.0}, "engine_flags": {"piece_blocks": BLOCKS}}
    with threaded_mesh(tmp_path, datasets=root, threads=2, **flags) as mesh:  # type: ignore[arg-type]
        package_hash = upload_package(mesh.gateways[0], archive)
        spec = job_pb2.JobSpec(package_hash=package_hash, dataset_id="pol", chunk_blocks=BLOCKS,
                               scenarios=engine_pb2.ScenarioSpec(count=200))  # fmt: skip
        events = submit(mesh.gateways[0], spec)
    assert events[-1].WhichOneof("event") == "result"
    assert events[0].accepted.chunks_total == 1
    done = [e.progress.blocks_done for e in events if e.WhichOneof("event") == "progress"]
    working = [d for d in done if d > 0]
    assert working[0] < BLOCKS, done  # the lead piece's blocks, reported at once
    assert working[-1] == BLOCKS
