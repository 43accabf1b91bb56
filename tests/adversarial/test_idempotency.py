"""Issue 19, item 8: idempotency keys.

Before: a key reused with a different spec silently answered the old job; keys were kept as
'tenant\\x1fkey' in one unique column, so tenant 'a' with key 'b\\x1fc' and tenant 'a\\x1fb'
with key 'c' were one key (the second got the first tenant's job id).

Now: the same key with the same spec answers the existing job, with another spec it is
ALREADY_EXISTS naming the fields that differ; tenant and key are separate columns, unique
together; a store of the old schema is migrated (the joined keys split by the row's tenant).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import grpc
import pytest
from grpc import aio

from livecalc.gateway.v1 import job_pb2, job_service_pb2
from services.common.errors import AlreadyExists
from services.gateway.inputs import scenario_params, scenario_spec
from services.gateway.store import JobStore
from services.gateway.store_file import SCHEMA_VERSION
from tests.adversarial.inprocess_gateway import channel, job_spec, manager, serving, stopped, tenant, until

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]
S = job_pb2.JobState

#: The jobs table as schema 0 made it (before tenants, `tenant` came by ALTER TABLE).
OLD_JOBS = """
CREATE TABLE jobs (
    job_id TEXT PRIMARY KEY,
    create_ns INTEGER NOT NULL,
    state INTEGER NOT NULL,
    idempotency_key TEXT UNIQUE,
    record BLOB NOT NULL
);
CREATE INDEX jobs_by_time ON jobs (create_ns DESC, job_id DESC);
CREATE TABLE events (job_id TEXT NOT NULL, sequence INTEGER NOT NULL, event BLOB NOT NULL,
    PRIMARY KEY (job_id, sequence));
"""


async def test_the_same_key_answers_the_same_spec_and_refuses_another_naming_the_fields(tmp_path: Path) -> None:
    m = manager(tmp_path)
    async with serving(m) as running, channel(running) as jobs:

        async def submit(spec: job_pb2.JobSpec, key: str) -> str:
            call = jobs.SubmitJob(job_service_pb2.SubmitJobRequest(spec=spec, idempotency_key=key))
            try:
                return str((await call.read()).event.job_id)
            finally:
                call.cancel()

        first = await submit(job_spec(labels={"run": "q3"}), "k")
        assert await submit(job_spec(labels={"run": "q3"}), "k") == first
        with pytest.raises(aio.AioRpcError) as info:
            await submit(job_spec(count=8, chunk_blocks=2), "k")
        assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS
        details = str(info.value.details())
        assert first in details and "spec.scenarios.count (4 for the existing job, 8 now)" in details
        assert "spec.chunk_blocks (0 for the existing job, 2 now)" in details and "spec.labels" in details
        assert "spec.dataset_id" not in details
        # a spec asking for the package's scenarios is not one that named them
        without = job_pb2.JobSpec(package_hash=job_spec().package_hash, dataset_id="pol", labels={"run": "q3"})
        with pytest.raises(aio.AioRpcError) as info:
            await submit(without, "k")
        assert "spec.scenarios (set for the existing job)" in str(info.value.details())
        await until(lambda: first not in m._live, "the job's end")
        assert await submit(job_spec(labels={"run": "q3"}), "k") == first  # ended: from the store
    await stopped(m)


async def test_two_tenants_keys_never_collide_through_the_separator(tmp_path: Path) -> None:
    m = manager(tmp_path)
    with tenant("a"):
        first = await m.submit(job_spec(), idempotency_key="b\x1fc")
    with tenant("a\x1fb"):
        second = await m.submit(job_spec(), idempotency_key="c")
    assert first != second
    await until(lambda: not m._live, "both ended")
    with tenant("a\x1fb"):  # and from the store too
        assert await m.submit(job_spec(), idempotency_key="c") == second
    assert m.store.job_by_key("b\x1fc", "a") == first and m.store.job_by_key("c", "a\x1fb") == second
    await stopped(m)


def old_store(path: Path, *, with_tenants: bool) -> dict[str, job_pb2.Job]:
    """A store as schema 0 wrote it: each tenant's keys joined as 'tenant\\x1fkey'."""
    jobs = {}
    with sqlite3.connect(path) as db:
        db.executescript(OLD_JOBS)
        if with_tenants:
            db.execute("ALTER TABLE jobs ADD COLUMN tenant TEXT NOT NULL DEFAULT ''")
        rows = [("old-a", "a", "a\x1fk"), ("old-none", "", "k"), ("old-ab", "a\x1fb", "a\x1fb\x1fc")]
        for i, (job_id, owner, joined) in enumerate(rows if with_tenants else rows[1:2]):
            recorded = job_spec()  # as submit recorded it: the scenarios resolved, every parameter set
            recorded.scenarios.CopyFrom(scenario_spec(scenario_params(recorded.scenarios, {})))
            job = job_pb2.Job(job_id=job_id, state=S.JOB_STATE_SUCCEEDED, spec=recorded)
            job.create_time.FromNanoseconds(1000 + i)
            jobs[job_id] = job
            columns = "job_id, create_ns, state, idempotency_key, record" + (", tenant" if with_tenants else "")
            values = [job_id, 1000 + i, int(job.state), joined, job.SerializeToString()]
            marks = ", ".join("?" for _ in range(len(values) + with_tenants))
            db.execute(f"INSERT INTO jobs ({columns}) VALUES ({marks})", (*values, *([owner] if with_tenants else [])))
    db.close()
    return jobs


@pytest.mark.parametrize("with_tenants", [True, False], ids=["tenants", "before-tenants"])
async def test_a_store_of_the_old_schema_is_migrated_keys_split_by_their_tenant(
    tmp_path: Path, with_tenants: bool
) -> None:
    path = tmp_path / "jobs.sqlite3"
    old = old_store(path, with_tenants=with_tenants)
    store = JobStore(path)
    assert store._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert store.job_by_key("k", "") == "old-none"
    if with_tenants:
        assert store.job_by_key("k", "a") == "old-a" and store.job_by_key("a\x1fk", "a") is None
        assert store.job_by_key("a\x1fb\x1fc", "a\x1fb") is None and store.job_by_key("c", "a\x1fb") == "old-ab"
        assert store.tenant_of("old-a") == "a"
    assert {j.job_id for j in store.list_jobs(0, "")[0]} == set(old)
    with pytest.raises(sqlite3.IntegrityError):  # unique per (tenant, key)
        store.put_job(job_pb2.Job(job_id="dup", spec=job_spec()), "k", "").result(10)
    store.put_job(job_pb2.Job(job_id="other", spec=job_spec()), "k", "b").result(10)  # another tenant's "k"
    store.close()
    JobStore(path).close()  # opening a migrated store again changes nothing

    m = manager(tmp_path)
    assert await m.submit(job_spec(), idempotency_key="k") == "old-none"  # recorded spec, same request
    with pytest.raises(AlreadyExists, match=r"spec\.scenarios\.count"):
        await m.submit(job_spec(count=9), idempotency_key="k")
    if with_tenants:
        with tenant("a"):
            assert await m.submit(job_spec(), idempotency_key="k") == "old-a"
        with tenant("a\x1fb"):
            assert await m.submit(job_spec(), idempotency_key="c") == "old-ab"
    await stopped(m)
