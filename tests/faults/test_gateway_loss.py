"""Issue 12, item 2: the gateway SIGKILLed mid-job resumes the job from its checkpointed fold.

The restarted gateway (same ports, same store) dispatches only the blocks after the
checkpoint, the client re-attaches with WatchJob from the last sequence it saw, and the job
ends with the result of the same job run without a fault (hash, steps, statistics); its log
reports each block once (progress never steps back, running statistics never repeat);
finished jobs and results are there.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.valuation.blocks import BLOCK_SIZE
from tests.faults.faultmesh import ROWS, FaultMesh, Job, S, fault_mesh
from tests.gateway.jobmesh import get_job, kinds, submit, watch
from tests.support import metric
from tests.waits import wait_for

pytestmark = pytest.mark.timeout(180)


def checkpointed(db: Path, job_id: str, blocks: int) -> bool:
    """Whether the gateway's store holds a checkpoint of `job_id` past its first `blocks` blocks."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as store:
        row = store.execute("SELECT next_block FROM checkpoints WHERE job_id = ?", (job_id,)).fetchone()
    return row is not None and int(row[0]) >= blocks


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultMesh]:
    yield from fault_mesh(tmp_path_factory.mktemp("gateway"))


def test_gateway_killed_mid_job_resumes_from_its_checkpoint_with_the_same_hash(mesh: FaultMesh) -> None:
    long_spec = mesh.job_spec(scenarios=3000)  # about 4 s: time to kill it in the middle
    before = submit(mesh.gateway.address, long_spec)
    assert before[-1].WhichOneof("event") == "result", kinds(before)
    baseline = before[-1].result.result_hash
    job = Job(mesh.gateway.address, long_spec)
    job.folded(4)
    db = mesh.services.tmp / "gw" / "jobs.sqlite3"  # the store of Services.gateway's default
    wait_for(lambda: checkpointed(db, job.job_id, 4), "a checkpoint past the folded blocks", seconds=10, interval=0.05)
    mesh.gateway.kill()
    seen = job.rest()
    killed = time.monotonic()
    last = seen[-1].sequence
    done_at_kill = max(e.progress.blocks_done for e in seen if e.WhichOneof("event") == "progress")
    assert seen[-1].WhichOneof("event") not in ("result", "error", "cancelled")
    mesh.gateway = mesh.services.restart(mesh.gateway)  # same ports, flags and store
    rest = watch(mesh.gateway.address, job.job_id, last)
    resumed_in = time.monotonic() - killed
    assert rest and rest[-1].WhichOneof("event") == "result", kinds(rest)
    assert rest[-1].result.result_hash == baseline
    events = seen + rest
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    # each block reported once, and the figures of the run without a fault
    result, expected = rest[-1].result, before[-1].result
    assert result.steps == expected.steps, f"steps {result.steps} != {expected.steps} of the run without a fault"
    assert result.statistics == expected.statistics and result.policy_count == expected.policy_count
    progress = [e.progress for e in events if e.WhichOneof("event") == "progress"]
    done = [p.blocks_done for p in progress]
    assert done == sorted(done), f"progress stepped back: {done}"
    elapsed = [p.elapsed_seconds for p in progress]
    assert elapsed == sorted(elapsed) and result.elapsed_seconds >= elapsed[-1], f"elapsed stepped back: {elapsed}"
    stats = [e.statistics.policies_done for e in events if e.WhichOneof("event") == "statistics"]
    assert stats == sorted(set(stats)), f"running statistics repeated: {stats}"
    # resumed, not rerun: the restarted gateway dispatched only the blocks after the checkpoint
    first = next(e.progress.blocks_done for e in rest if e.WhichOneof("event") == "progress")
    assert first > done_at_kill, (first, done_at_kill)
    dispatched = metric(mesh.gateway, "livecalc_gateway_chunks_dispatched_total")
    assert dispatched < ROWS // BLOCK_SIZE, f"the job was rerun from block 0 ({dispatched:g} chunks)"
    log = mesh.gateway.log()
    assert "job resumed from its checkpoint" in log
    # finished jobs and their results are all there
    assert watch(mesh.gateway.address, before[0].job_id, 0) == before
    finished = get_job(mesh.gateway.address, before[0].job_id)
    assert finished.state == S.JOB_STATE_SUCCEEDED and finished.result.outputs == before[-1].result.outputs
    assert get_job(mesh.gateway.address, job.job_id).state == S.JOB_STATE_SUCCEEDED
    print(
        f"\ngateway SIGKILL at {done_at_kill} folded blocks: {dispatched:g} chunks dispatched after the restart, "
        f"first progress at block {first}, ended {resumed_in:.2f} s after the kill, same hash and {result.steps} steps"
    )
