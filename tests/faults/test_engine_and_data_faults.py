"""Issue 12, items 1 and 3: an engine killed or hung mid-job, and a data service restarted mid-job.

Each test runs a job on the mesh of tests.faults.faultmesh (every service its own process),
breaks one service while blocks are being folded, and checks the job still ends with the
result hash of the same job run without a fault.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.faults.faultmesh import FaultMesh, Job, engine_steps, fault_mesh, hang_engine
from tests.gateway.jobmesh import kinds, submit
from tests.logrecords import matching
from tests.waits import wait_for

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultMesh]:
    yield from fault_mesh(tmp_path_factory.mktemp("faults"))


@pytest.fixture(scope="module")
def baseline(mesh: FaultMesh) -> str:
    """The job's result hash with nothing broken."""
    events = submit(mesh.gateway.address, mesh.job_spec())
    assert events[-1].WhichOneof("event") == "result", kinds(events)
    return str(events[-1].result.result_hash)


def result_hash(events: list) -> str:  # type: ignore[type-arg]
    assert events[-1].WhichOneof("event") == "result", (kinds(events), events[-1])
    return str(events[-1].result.result_hash)


def test_engine_killed_mid_job_finishes_on_the_others_and_is_used_again_after_restart(
    mesh: FaultMesh, baseline: str
) -> None:
    victim = mesh.engines[0]
    job = Job(mesh.gateway.address, mesh.job_spec())
    job.folded(3)
    wait_for(
        lambda: victim.proc.poll() is not None or engine_steps(victim) > 0,
        "the victim to compute",
        seconds=10,
        interval=0.05,
    )
    before = len(mesh.gateway.log())
    started = time.monotonic()
    victim.kill()
    events = job.rest()
    assert result_hash(events) == baseline
    assert matching(mesh.gateway.log()[before:], "chunk failed on an engine; requeued", engine=victim.address)
    print(f"\nengine SIGKILL: job ended {time.monotonic() - started:.2f} s after the kill, same hash")
    # a restarted engine (same address) takes chunks again
    mesh.engines[0] = mesh.services.restart(victim)
    # the gateway left it alone (backoff, at most 5 s) after the failed calls: within a few jobs it is back
    for _ in range(5):
        assert result_hash(submit(mesh.gateway.address, mesh.job_spec())) == baseline
        if engine_steps(mesh.engines[0]) > 0:
            break
    assert engine_steps(mesh.engines[0]) > 0, "the restarted engine was not used"


def test_hung_engine_is_detected_and_its_chunk_moved(mesh: FaultMesh, baseline: str) -> None:
    victim = mesh.engines[1]
    job = Job(mesh.gateway.address, mesh.job_spec())
    job.folded(2)
    before = len(mesh.gateway.log())
    events, elapsed = hang_engine(job, victim)
    assert result_hash(events) == baseline
    log = mesh.gateway.log()[before:]
    assert matching(log, "chunk failed on an engine; requeued", engine=victim.address, code="STALLED"), log
    print(f"\nengine SIGSTOP: job ended {elapsed:.2f} s after the stop, same hash")


def test_data_service_restart_delays_the_job_never_fails_it(mesh: FaultMesh, baseline: str) -> None:
    job = Job(mesh.gateway.address, mesh.job_spec())
    job.folded(2)
    before = [len(e.log()) for e in mesh.engines]
    killed = time.monotonic()
    mesh.data.kill()
    time.sleep(1.0)  # the data service is gone for a while (and restarting: about as long again)
    mesh.data = mesh.services.restart(mesh.data)
    events = job.rest()
    assert result_hash(events) == baseline
    logs = [e.log()[at:] for e, at in zip(mesh.engines, before, strict=True)]
    assert any(matching(log, "data service unavailable; retrying") for log in logs)
    print(f"\ndata service SIGKILL + restart after 1 s: job ended {time.monotonic() - killed:.2f} s after the kill")
