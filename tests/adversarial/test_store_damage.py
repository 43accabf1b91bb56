"""Issue 19, items 4 and 10: a damaged job store, and two gateways on one data dir.

Before: a jobs.sqlite3 that is not a SQLite database (or whose header was overwritten) ended
the gateway's start in a traceback; one record whose protobuf does not decode made ListJobs
and recovery fail for every tenant (INTERNAL); two gateways on one data dir shared the store
silently, each resuming the other's jobs.

Now: the store is checked when it opens (one line on stderr, exit code 1); a record that does
not decode is skipped and logged with its job id (GetJob of that job: DATA_LOSS); the store is
locked for the process's life and a second gateway exits with one line naming the dir and the
pid that holds it.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
from pathlib import Path

import grpc
import pytest
from grpc import aio

from livecalc.gateway.v1 import job_pb2, job_service_pb2
from services.gateway.store import JobStore
from services.gateway.store_file import StoreLocked, StoreUnusable
from tests.adversarial.inprocess_gateway import channel, job_spec, manager, serving, stopped
from tests.meshes import Services
from tests.support import ROOT, VENV_BIN

pytestmark = pytest.mark.timeout(60)
S = job_pb2.JobState
DAMAGED = b"\x0a\xff\x01"  # field 1, length 255, then the bytes run out


def serve_gateway(data_dir: Path) -> subprocess.CompletedProcess[str]:
    """`livecalc serve gateway` on `data_dir`, expected to stop at start-up."""
    return subprocess.run(
        [str(VENV_BIN / "livecalc"), "serve", "gateway", "--port", "0", "--metrics-port", "-1"],
        env={**os.environ, "LIVECALC_DATA_DIR": str(data_dir)},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("livecalc: error:")]
    assert len(errors) == 1, done.stderr
    return errors[0]


def a_store_with_jobs(path: Path, count: int) -> list[str]:
    store = JobStore(path)
    ids = []
    for i in range(count):
        job = job_pb2.Job(job_id=f"job-{i}", state=S.JOB_STATE_SUCCEEDED, spec=job_spec())
        job.create_time.FromNanoseconds(1000 + i)
        store.put_job(job)
        store.append_event(job_pb2.JobEvent(job_id=job.job_id, sequence=1, result=job_pb2.JobResult()))
        ids.append(job.job_id)
    store.close()
    return ids


@pytest.mark.parametrize("damage", ["not sqlite", "header"])
def test_a_damaged_store_stops_the_start_with_one_line(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "jobs.sqlite3"
    if damage == "not sqlite":
        path.write_text("these are not the pages of a database\n" * 100)
    else:
        a_store_with_jobs(path, 3)
        with path.open("r+b") as f:
            f.write(b"garbage, not a header!")  # over 'SQLite format 3\0' and the page size
    with pytest.raises(StoreUnusable, match="not a healthy SQLite database"):
        JobStore(path)
    JobStore(tmp_path / "other.sqlite3").close()  # the lock of the failed open was let go: a retry may work
    line = one_error_line(serve_gateway(tmp_path))
    assert str(path) in line and "not a healthy SQLite database" in line


def test_a_second_gateway_on_the_data_dir_exits_naming_the_dir_and_the_holder(tmp_path: Path) -> None:
    first = JobStore(tmp_path / "jobs.sqlite3")
    with pytest.raises(StoreLocked) as info:
        JobStore(tmp_path / "jobs.sqlite3")
    assert str(tmp_path) in info.value.message and f"pid {os.getpid()}" in info.value.message
    first.close()
    JobStore(tmp_path / "jobs.sqlite3").close()  # closed: free again

    with Services(tmp_path) as services:
        gateway = services.gateway(store="gw")
        line = one_error_line(serve_gateway(tmp_path / "gw"))
        assert str(tmp_path / "gw") in line and f"pid {gateway.proc.pid}" in line, line
        assert gateway.proc.poll() is None  # the first one serves on


@pytest.mark.anyio
async def test_an_undecodable_record_is_skipped_and_reported_and_only_its_job_is_data_loss(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "jobs.sqlite3"
    ids = a_store_with_jobs(path, 3)
    running_id = "job-running"
    store = JobStore(path)
    running = job_pb2.Job(job_id=running_id, state=S.JOB_STATE_RUNNING, spec=job_spec())
    store.put_job(running)
    store.close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE jobs SET record = ? WHERE job_id IN (?, ?)", (DAMAGED, ids[1], running_id))
        db.execute("UPDATE events SET event = ? WHERE job_id = ?", (DAMAGED, ids[2]))
    db.close()

    m = manager(tmp_path)
    assert m.recover() == 0  # the damaged running job is skipped, not a crash of the start
    caplog.set_level(logging.WARNING)
    async with serving(m) as server, channel(server) as jobs:
        listed = await jobs.ListJobs(job_service_pb2.ListJobsRequest())
        assert [j.job_id for j in listed.jobs] == [ids[2], ids[0]]
        with pytest.raises(aio.AioRpcError) as info:
            await jobs.GetJob(job_service_pb2.GetJobRequest(job_id=ids[1]))
        assert info.value.code() == grpc.StatusCode.DATA_LOSS
        assert ids[1] in str(info.value.details()) and "damaged" in str(info.value.details())
        assert (await jobs.GetJob(job_service_pb2.GetJobRequest(job_id=ids[0]))).job.job_id == ids[0]
        watched = [r async for r in jobs.WatchJob(job_service_pb2.WatchJobRequest(job_id=ids[2]))]
        assert watched == []  # its one event is damaged: skipped, reported
    reported = {r.__dict__.get("fields", {}).get("job") for r in caplog.records if r.name == "services.gateway.store"}
    assert {ids[1], ids[2], running_id} <= reported
    await stopped(m)
