"""JobService on a job long enough to watch: running statistics converge, WatchJob joins in
the middle, CancelJob stops the engine's CPU work within a second (engine side), a dataset
changed while a job runs fails it with FAILED_PRECONDITION, and a restarted gateway serves
every finished job and its events, and resumes the job it was running.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pytest

from livecalc.gateway.v1 import job_pb2, job_service_pb2
from services.valuation.blocks import BLOCK_SIZE
from tests.engine.mesh import datasets_dir, policies_csv, stochastic_package, upload_package
from tests.gateway.jobmesh import CALL_TIMEOUT, get_job, kinds, spec, stub, submit, values, watch
from tests.meshes import Services
from tests.support import ServiceProcess, metric, metrics_text
from tests.waits import wait_for

pytestmark = pytest.mark.timeout(300)

LONG_ROWS = 24 * BLOCK_SIZE
LONG_SCENARIOS = 1000
S = job_pb2.JobState


@dataclass
class Mesh:
    services: Services
    root: Path
    data: ServiceProcess
    engine: ServiceProcess
    gateway: ServiceProcess
    package_hash: str
    table: pa.Table


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    tmp = tmp_path_factory.mktemp("long")
    root = datasets_dir(tmp)
    table = policies_csv(root / "long.csv", LONG_ROWS, seed=5)
    policies_csv(root / "moving.csv", LONG_ROWS, seed=6)
    archive = stochastic_package(tmp / "model")
    with Services(tmp) as services:
        started = services.mesh(root)
        package_hash = upload_package(started.gateway.address, archive)
        yield Mesh(services, root, started.data, started.engine, started.gateway, package_hash, table)


def long_spec(mesh: Mesh, dataset: str = "long") -> job_pb2.JobSpec:
    return spec(mesh.package_hash, dataset, LONG_SCENARIOS, chunk_blocks=1)


def test_running_statistics_converge_and_watch_joins_in_the_middle(mesh: Mesh) -> None:
    channel, jobs = stub(mesh.gateway.address)
    with channel:
        call = jobs.SubmitJob(job_service_pb2.SubmitJobRequest(spec=long_spec(mesh)), timeout=CALL_TIMEOUT)
        try:
            first = [next(call).event for _ in range(3)]
            # a second client joins while the job runs, from the middle of what it has seen
            late = watch(mesh.gateway.address, first[0].job_id, 2)
            events = first + [r.event for r in call]
        finally:
            call.cancel()
    assert late == events[2:]
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    k = kinds(events)
    assert k[0] == "accepted" and k[-1] == "result" and k.count("result") == 1
    stat_events = [e for e in events if e.WhichOneof("event") == "statistics"]
    stats = [e.statistics for e in stat_events]
    assert len(stats) >= 3, f"a {events[-1].result.elapsed_seconds:.1f} s job gave {len(stats)} statistics events"
    final = events[-1].result.statistics
    done = [s.policies_done for s in stats]
    # running estimates while blocks are outstanding, then the exact statistics once the fold is
    # complete: the last statistics a watcher sees are the result's
    assert done == sorted(done) and done[-2] < LONG_ROWS and done[-1] == LONG_ROWS
    assert stats[-1].statistics == final
    assert all(s.policies_total == LONG_ROWS for s in stats)
    running = stats[:-1]
    errors = [abs(s.statistics.mean - final.mean) / abs(final.mean) for s in running]
    assert errors[-1] < 0.1, errors  # the scaled estimate is close well before the end
    assert errors[-1] <= errors[0] + 0.02, errors
    # about once a second, not more often (the exact statistics at the end come when the fold completes)
    times = [e.time.ToNanoseconds() / 1e9 for e in stat_events[:-1]]
    assert all(b - a >= 0.9 for a, b in itertools.pairwise(times))
    progress_times = [e.time.ToNanoseconds() / 1e9 for e in events if e.WhichOneof("event") == "progress"]
    assert len(progress_times) <= 5 * (progress_times[-1] - progress_times[0]) + 3  # coalesced


def test_cancel_stops_engine_work_within_a_second(mesh: Mesh) -> None:
    channel, jobs = stub(mesh.gateway.address)
    with channel:
        call = jobs.SubmitJob(job_service_pb2.SubmitJobRequest(spec=long_spec(mesh)), timeout=CALL_TIMEOUT)
        try:
            job_id = next(call).event.job_id
            wait_for(
                lambda: metric(mesh.engine, "livecalc_engine_compute_in_flight") >= 1,
                "the job to compute",
                seconds=30,
                interval=0.05,
            )
            time.sleep(0.3)
            cancelled_at = time.time()
            answer = jobs.CancelJob(job_service_pb2.CancelJobRequest(job_id=job_id, reason="test"), timeout=30)
            rest = [r.event for r in call]
        finally:
            call.cancel()
    assert answer.job.state == S.JOB_STATE_CANCELLED
    assert rest[-1].WhichOneof("event") == "cancelled" and rest[-1].cancelled.reason == "test"
    wait_for(
        lambda: metric(mesh.engine, "livecalc_engine_compute_in_flight") == 0, "the engine to stop computing", seconds=5
    )
    ended = metric(mesh.engine, "livecalc_engine_last_compute_end_timestamp_seconds")
    assert ended - cancelled_at < 1.0, f"engine compute ended {ended - cancelled_at:.3f} s after CancelJob"
    assert get_job(mesh.gateway.address, job_id).state == S.JOB_STATE_CANCELLED


def test_dataset_changed_while_the_job_runs_fails_it_with_failed_precondition(mesh: Mesh) -> None:
    channel, jobs = stub(mesh.gateway.address)
    with channel:
        call = jobs.SubmitJob(job_service_pb2.SubmitJobRequest(spec=long_spec(mesh, "moving")), timeout=CALL_TIMEOUT)
        try:
            events = []
            for r in call:
                events.append(r.event)
                if r.event.WhichOneof("event") == "progress" and r.event.progress.blocks_done >= 1:
                    policies_csv(mesh.root / "moving.csv", LONG_ROWS, seed=99)  # new content, new version
                    break
            events += [r.event for r in call]
        finally:
            call.cancel()
    last = events[-1]
    assert last.WhichOneof("event") == "error", kinds(events)
    assert last.error.code == "FAILED_PRECONDITION" and "moving" in last.error.message


def test_restarted_gateway_serves_finished_jobs_and_their_events(mesh: Mesh) -> None:
    address = mesh.gateway.address
    done = submit(address, spec(mesh.package_hash, "long", 7))
    assert done[-1].WhichOneof("event") == "result"
    # a job still running when the gateway stops
    channel, jobs = stub(address)
    with channel:
        call = jobs.SubmitJob(job_service_pb2.SubmitJobRequest(spec=long_spec(mesh)), timeout=CALL_TIMEOUT)
        running_id = next(call).event.job_id
        call.cancel()
    wait_for(lambda: get_job(address, running_id).progress.blocks_done >= 1, "a block done", seconds=30, interval=0.05)
    text = metrics_text(mesh.gateway)
    assert "livecalc_gateway_chunks_dispatched_total" in text and 'livecalc_gateway_jobs{state="running"} 1.0' in text
    assert mesh.gateway.terminate() == 0
    mesh.gateway = mesh.services.gateway(mesh.data, [mesh.engine])  # new ports, the same store
    address = mesh.gateway.address
    assert watch(address, done[0].job_id, 0) == done
    middle = len(done) // 2
    assert watch(address, done[0].job_id, middle) == done[middle:]
    job = get_job(address, done[0].job_id)
    assert job.state == S.JOB_STATE_SUCCEEDED and values(job.result) == values(done[-1].result)
    stale = watch(address, running_id, 0)
    # it resumed from its checkpoint (tests/faults covers the result's bits)
    assert stale[0].WhichOneof("event") == "accepted" and stale[-1].WhichOneof("event") == "result", kinds(stale)
    assert [e.sequence for e in stale] == list(range(1, len(stale) + 1))
    channel, jobs = stub(address)
    with channel:
        page1 = jobs.ListJobs(job_service_pb2.ListJobsRequest(page_size=1), timeout=30)
        assert [j.job_id for j in page1.jobs] == [running_id] and page1.next_page_token
        page2 = jobs.ListJobs(
            job_service_pb2.ListJobsRequest(page_size=1, page_token=page1.next_page_token), timeout=30
        )
        assert [j.job_id for j in page2.jobs] == [done[0].job_id]
        listed = page2.jobs[0].result
        assert not any(values(listed)) and listed.result_hash == done[-1].result.result_hash
        failed = jobs.ListJobs(job_service_pb2.ListJobsRequest(state=S.JOB_STATE_FAILED), timeout=30)
        assert running_id not in [j.job_id for j in failed.jobs] and done[0].job_id not in [
            j.job_id for j in failed.jobs
        ]
    # and it runs new jobs
    assert submit(address, spec(mesh.package_hash, "long", 7))[-1].result.result_hash == done[-1].result.result_hash
