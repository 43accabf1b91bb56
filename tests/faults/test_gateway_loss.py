"""Issue 12, item 2: the gateway SIGKILLed mid-job resumes the job from its checkpointed fold.

The restarted gateway (same ports, same store) dispatches only the blocks after the
checkpoint, the client re-attaches with WatchJob from the last sequence it saw, and the job
ends with the hash of the same job run without a fault; finished jobs and results are there.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.faults.faultmesh import FaultMesh, Job, S, fault_mesh
from tests.gateway.jobmesh import get_job, kinds, submit, watch
from tests.support import restart_service

pytestmark = pytest.mark.timeout(180)


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
    time.sleep(1.1)  # past a checkpoint (one a second at most)
    mesh.gateway.kill()
    seen = job.rest()
    killed = time.monotonic()
    last = seen[-1].sequence
    done_at_kill = max(e.progress.blocks_done for e in seen if e.WhichOneof("event") == "progress")
    assert seen[-1].WhichOneof("event") not in ("result", "error", "cancelled")
    mesh.gateway = restart_service(mesh.gateway, mesh.tmp, env={"LIVECALC_DATA_DIR": str(mesh.gateway_dir)})
    rest = watch(mesh.gateway.address, job.job_id, last)
    resumed_in = time.monotonic() - killed
    assert rest and rest[-1].WhichOneof("event") == "result", kinds(rest)
    assert rest[-1].result.result_hash == baseline
    events = seen + rest
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    # resumed, not rerun: its first progress after the restart starts at the checkpoint, not at 0
    first = next(e.progress.blocks_done for e in rest if e.WhichOneof("event") == "progress")
    assert first > 0, "the job was rerun from block 0"
    log = mesh.gateway.log()
    assert "job resumed from its checkpoint" in log
    # finished jobs and their results are all there
    assert watch(mesh.gateway.address, before[0].job_id, 0) == before
    finished = get_job(mesh.gateway.address, before[0].job_id)
    assert finished.state == S.JOB_STATE_SUCCEEDED and list(finished.result.pv_net_cf) == list(
        before[-1].result.pv_net_cf
    )
    assert get_job(mesh.gateway.address, job.job_id).state == S.JOB_STATE_SUCCEEDED
    print(
        f"\ngateway SIGKILL at {done_at_kill} folded blocks: resumed at block {first}, "
        f"ended {resumed_in:.2f} s after the kill, same hash"
    )
