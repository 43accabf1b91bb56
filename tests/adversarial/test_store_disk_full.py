"""Issue 19, item 4: a full disk under the job store.

Before: a write the store could not commit was logged and its event streamed all the same; a
job that finished then stayed RUNNING in the store for ever with its result lost, a restarted
gateway resumed it (a SUCCEEDED job for its clients) from its first checkpoint, and the events
it appended took sequence numbers clients had already seen.

Now: a batch that cannot commit fails all its futures and none of its units is visible; an
event is streamed only once persisted (a follower at one that failed ends UNAVAILABLE); a job
whose write failed fails, and its end (record, result row, terminal event) is written again
until the store commits it, readers seeing the end only then; meanwhile the gateway is
NOT_SERVING with one error line naming the disk error; a restart never resumes a job whose
end was persisted and goes on after the highest persisted sequence.

The disk is a real small tmpfs where the test may mount one, and an injected 'database or disk
is full' at the writer's COMMIT (`FullDisk`) otherwise and for the precise cases.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from concurrent.futures import Future
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from livecalc.gateway.v1 import job_pb2, job_service_pb2
from services.gateway.jobs import JobManager
from services.gateway.server import StoreReadiness
from services.gateway.store import Checkpoint, JobStore
from services.gateway.store_writer import _Write
from services.valuation.blocks import fold
from services.valuation.statistics import result_hash
from tests.adversarial.inprocess_gateway import TABLE, FullDisk, channel, job_spec, manager, serving, stopped, until
from tests.adversarial.test_uploads_disk_full import fill, tmpfs
from tests.gateway.fakes import PRIMARY

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]
S = job_pb2.JobState
#: Every output's portfolio values (the fakes' declared order) and the primary's.
EXPECTED_ALL = fold(TABLE)
EXPECTED = EXPECTED_ALL[PRIMARY]
#: No progress, statistics or checkpoint between the job's first blocks and its end: the first
#: write after the disk fills (once `worked`) is the job's end.
QUIET = {"progress_seconds": 30.0, "statistics_seconds": 30.0, "checkpoint_seconds": 30.0}


def worked(m: JobManager, job_id: str) -> bool:
    """The job's first blocks are reported (at once, whatever `progress_seconds`): its last
    progress before its end, in a QUIET gateway."""
    return any(e.WhichOneof("event") == "progress" and e.progress.blocks_done > 0 for e in m.store.events(job_id))


def kinds(events: list[job_pb2.JobEvent]) -> list[str]:
    return [str(e.WhichOneof("event")) for e in events]


async def health(port: int, service: str = "readiness") -> int:
    async with aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        reply = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=service))
        return int(reply.status)


async def restarted(directory: Path) -> tuple[JobManager, int]:
    """A new gateway on the same store: its manager and how many jobs it resumed."""
    again = manager(directory)
    return again, again.recover()


def check_intact(m: JobManager, job_id: str) -> list[job_pb2.JobEvent]:
    """The job SUCCEEDED with the uninterrupted result, in its record, row and contiguous log."""
    job = m.get(job_id)
    assert job.state == S.JOB_STATE_SUCCEEDED, job
    assert job.result.result_hash == result_hash(EXPECTED)
    assert [list(o.values) for o in job.result.outputs] == EXPECTED_ALL.tolist()
    values = m.store.result_values(job_id)
    assert values is not None and values.tobytes() == EXPECTED_ALL.tobytes()
    events = m.store.events(job_id)
    assert [e.sequence for e in events] == list(range(1, len(events) + 1)), [e.sequence for e in events]
    assert kinds(events)[0] == "accepted" and kinds(events)[-1] == "result"
    assert m.store.checkpoint(job_id) is None
    return events


# the store alone


def test_a_batch_that_cannot_commit_fails_every_future_shows_no_unit_and_the_store_recovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    disk = FullDisk(monkeypatch)
    told: list[BaseException | None] = []
    store = JobStore(tmp_path / "jobs.sqlite3", on_health=told.append)
    started, release = threading.Event(), threading.Event()
    store._writer.submit([_Write(lambda db: (started.set(), release.wait(10)), Future())])  # hold the writer
    assert started.wait(10)
    job = job_pb2.Job(job_id="j", state=S.JOB_STATE_SUCCEEDED)
    with store.transaction() as unit:
        row = store.put_job(job)
        event = store.append_event(job_pb2.JobEvent(job_id="j", sequence=1, result=job_pb2.JobResult()))
    alone = store.put_checkpoint(Checkpoint("k", "v1", 1, 1, 1, 1, np.zeros((5, 1))))
    disk.full.set()
    release.set()
    for future in (row, event, unit, alone):
        with pytest.raises(Exception, match="database or disk is full"):
            future.result(10)  # failed, not hanging
    assert store.get_job("j") is None and store.events("j") == [] and store.checkpoint("k") is None
    assert store.failure is not None and len(told) == 1 and "disk is full" in str(told[0])
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR and r.name == "services.gateway.store"]
    assert len(errors) == 1 and "database or disk is full" in errors[0].getMessage()  # one line, no traceback
    assert errors[0].exc_info is None
    disk.full.clear()  # room again: the idle writer's probe notices
    deadline = 50
    while store.failure is not None and deadline:
        deadline -= 1
        threading.Event().wait(0.1)
    assert store.failure is None and told[-1] is None
    store.put_job(job).result(10)
    recorded = store.get_job("j")
    assert recorded is not None and recorded.state == S.JOB_STATE_SUCCEEDED
    store.close()


# a job whose end meets the full disk


async def test_a_job_ending_on_a_full_disk_is_recorded_once_there_is_room_and_survives_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    disk = FullDisk(monkeypatch)
    readiness = StoreReadiness()
    m = manager(tmp_path, delay=0.05, readiness=readiness, **QUIET)
    async with serving(m, readiness) as running, channel(running) as jobs:
        call = jobs.SubmitJob(job_service_pb2.SubmitJobRequest(spec=job_spec()))
        seen = [await call.read()]
        job_id = seen[0].event.job_id
        await until(lambda: worked(m, job_id), "the first blocks reported")
        disk.full.set()
        with pytest.raises(aio.AioRpcError) as info:
            while True:
                response = await call.read()
                assert response is not aio.EOF, "the stream ended without its result"
                seen.append(response)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "could not record event" in str(info.value.details())
        assert await health(running.port) == health_pb2.HealthCheckResponse.NOT_SERVING
        assert await health(running.port, "liveness") == health_pb2.HealthCheckResponse.SERVING
        # what a client sees while the end is not persisted: still running, never the end
        assert m.get(job_id).state == S.JOB_STATE_RUNNING
        assert m.store.get_job(job_id).state == S.JOB_STATE_RUNNING  # type: ignore[union-attr]
        assert all(kinds([r.event])[0] != "result" for r in seen)
        assert max(r.event.sequence for r in seen) <= max(e.sequence for e in m.store.events(job_id))
        disk.full.clear()
        await until(lambda: job_id not in m._live, "the end recorded", seconds=15)
        assert await health(running.port) == health_pb2.HealthCheckResponse.SERVING
        watched = [r.event async for r in jobs.WatchJob(job_service_pb2.WatchJobRequest(job_id=job_id))]
        assert kinds(watched)[-1] == "result"
    lines = [
        r.getMessage() for r in caplog.records if r.name == "services.gateway.store" and r.levelno >= logging.ERROR
    ]
    assert lines and all("database or disk is full" in line for line in lines)
    await stopped(m)

    again, resumed = await restarted(tmp_path)
    assert resumed == 0  # ended: never resumed
    assert check_intact(again, job_id) == watched
    await stopped(again)


async def test_a_job_whose_end_was_never_persisted_resumes_without_reusing_a_sequence_anyone_saw(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = FullDisk(monkeypatch)
    m = manager(tmp_path, delay=0.05, **QUIET)
    job_id = await m.submit(job_spec())
    streamed: list[job_pb2.JobEvent] = []

    async def follow() -> None:
        async for e in m.follow(job_id):
            streamed.append(e)

    follower = asyncio.create_task(follow())
    await until(lambda: worked(m, job_id), "the first blocks reported")
    disk.full.set()
    with pytest.raises(Exception, match="could not record event"):
        await asyncio.wait_for(follower, 10)
    await until(lambda: m._live[job_id].log.closed, "the job's end")
    assert m.get(job_id).state == S.JOB_STATE_RUNNING
    await m.close()  # SIGTERM while the disk is still full: the end is never written
    m.store.close()
    disk.full.clear()

    again, resumed = await restarted(tmp_path)
    assert resumed == 1  # its end was never persisted (nor shown): it runs again from its checkpoint
    rest = [e async for e in again.follow(job_id, streamed[-1].sequence)]
    assert rest[0].sequence == streamed[-1].sequence + 1  # no number anyone saw is given again
    assert kinds(rest)[-1] == "result" and rest[-1].result.result_hash == result_hash(EXPECTED)
    await until(lambda: job_id not in again._live, "recorded")
    check_intact(again, job_id)
    await stopped(again)


async def test_a_gateway_stopping_while_a_failed_jobs_end_cannot_be_written_stops_and_the_job_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fills before the job's first progress: that write fails, so the job fails, and its
    end cannot be written either. The gateway then stops with the disk still full. Its job task was
    waiting for its progress ticker to end when the stop came: the stop's cancellation reached the
    ticker, came back out of the await and was taken for the ticker's own (`suppress(CancelledError)`),
    and the task went on to wait for ever for an end the disk would not take: the stop hung."""
    disk = FullDisk(monkeypatch)
    m = manager(tmp_path, delay=0.05, **QUIET)
    job_id = await m.submit(job_spec())

    async def follow() -> None:  # a client watching the job
        async for _ in m.follow(job_id):
            pass

    follower = asyncio.create_task(follow())
    await until(lambda: (j := m.store.get_job(job_id)) is not None and j.state == S.JOB_STATE_RUNNING, "running")
    disk.full.set()
    with pytest.raises(Exception, match="could not record event"):
        await asyncio.wait_for(follower, 10)
    await until(lambda: m._live[job_id].log.closed, "the job's end (failed: the first progress was not recorded)")
    closing = asyncio.create_task(m.close())
    stopped_in_time, _ = await asyncio.wait([closing], timeout=10)  # a liveness bound: it hung for ever
    assert stopped_in_time, "the gateway did not stop while the job's end could not be written"
    m.store.close()
    disk.full.clear()
    again, resumed = await restarted(tmp_path)
    assert resumed == 1  # its end was never persisted: it runs again
    rest = [e async for e in again.follow(job_id)]
    assert kinds(rest)[-1] == "result" and rest[-1].result.result_hash == result_hash(EXPECTED)
    await until(lambda: job_id not in again._live, "recorded")
    await stopped(again)


async def test_a_write_that_fails_mid_run_fails_the_job_and_the_failure_is_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = FullDisk(monkeypatch)
    m = manager(tmp_path, delay=0.05)
    job_id = await m.submit(job_spec())
    await until(lambda: len(m.store.events(job_id)) >= 3, "some progress persisted")
    disk.full.set()
    await until(lambda: disk.refused >= 1, "a refused commit")
    disk.full.clear()
    await until(lambda: job_id not in m._live, "the job's end recorded")
    job = m.get(job_id)
    assert job.state == S.JOB_STATE_FAILED and job.error.code == "UNAVAILABLE"
    assert "database or disk is full" in job.error.message
    events = m.store.events(job_id)
    assert [e.sequence for e in events] == list(range(1, len(events) + 1)) and kinds(events)[-1] == "error"
    await stopped(m)
    again, resumed = await restarted(tmp_path)
    assert resumed == 0 and again.get(job_id).state == S.JOB_STATE_FAILED
    await stopped(again)


async def test_a_submission_whose_record_cannot_be_written_is_unavailable_and_leaves_no_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = FullDisk(monkeypatch)
    m = manager(tmp_path)
    disk.full.set()
    with pytest.raises(Exception, match="cannot record the job") as info:
        await m.submit(job_spec(), idempotency_key="k")
    assert getattr(info.value, "code", None) == grpc.StatusCode.UNAVAILABLE
    await until(lambda: not m._live, "the unrecorded job dropped")
    disk.full.clear()
    assert m.store.list_jobs(0, "")[0] == []
    job_id = await m.submit(job_spec(), idempotency_key="k")  # the key was never taken
    assert m.store.job_by_key("k") == job_id
    await stopped(m)


# a real full disk: a small tmpfs (tests.adversarial.test_uploads_disk_full's)


async def test_on_a_full_tmpfs_the_finished_job_is_recorded_once_there_is_room_and_survives_a_restart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with tmpfs(tmp_path / "tmpfs", 4 << 20) as disk:
        await full_tmpfs(disk, caplog)


async def full_tmpfs(disk: Path, caplog: pytest.LogCaptureFixture) -> None:
    readiness = StoreReadiness()
    m = manager(disk, delay=0.05, readiness=readiness, **QUIET)
    async with serving(m, readiness) as running:
        job_id = await m.submit(job_spec())
        await until(lambda: worked(m, job_id), "the first blocks reported")
        filler = fill(disk, leave=0)
        await until(lambda: m.store.failure is not None, "the store failing", seconds=15)
        await until(lambda: readiness._failing, "readiness told")
        await asyncio.sleep(0.05)
        assert await health(running.port) == health_pb2.HealthCheckResponse.NOT_SERVING
        assert m.get(job_id).state == S.JOB_STATE_RUNNING
        os.unlink(filler)
        await until(lambda: job_id not in m._live, "the end recorded", seconds=15)
        await until(lambda: not readiness._failing, "readiness told")
        await asyncio.sleep(0.05)
        assert await health(running.port) == health_pb2.HealthCheckResponse.SERVING
    lines = [
        r.getMessage() for r in caplog.records if r.name == "services.gateway.store" and r.levelno >= logging.ERROR
    ]
    assert any("full" in line for line in lines), lines
    await stopped(m)
    again, resumed = await restarted(disk)
    assert resumed == 0
    check_intact(again, job_id)
    await stopped(again)
