"""Issue 19, item 10 (the gateway's store side): limits at the JobService boundary.

Before: labels and idempotency keys had no size limit (five 1 MB labels made the tenant's
ListJobs exceed gRPC's 4 MiB); a page_token with a huge number was INTERNAL; a client that
cancelled a SubmitJob or WatchJob stream after its first event left
"Task was destroyed but it is pending!" at error level in the gateway's log (the interceptor's
relay left its queue getter pending when the handler was cancelled).

Now: sizes are refused with INVALID_ARGUMENT field violations naming the limit, a ListJobs page
of records already stored stops short of the message limit, a bad page_token is
INVALID_ARGUMENT, and a cancelled stream ends without a pending task.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from pathlib import Path

import grpc
import pytest
from grpc import aio

from livecalc.gateway.v1 import job_pb2, job_service_pb2
from services.gateway.store import MAX_PAGE_BYTES
from services.gateway.submission import (
    MAX_IDEMPOTENCY_KEY_BYTES,
    MAX_LABEL_KEY_BYTES,
    MAX_LABEL_VALUE_BYTES,
    MAX_LABELS,
    MAX_LABELS_BYTES,
)
from tests.adversarial.inprocess_gateway import channel, job_spec, manager, serving, stopped, until

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]
S = job_pb2.JobState


async def refused(jobs: object, spec: job_pb2.JobSpec, key: str = "") -> str:
    call = jobs.SubmitJob(job_service_pb2.SubmitJobRequest(spec=spec, idempotency_key=key))  # type: ignore[attr-defined]
    with pytest.raises(aio.AioRpcError) as info:
        await call.read()
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value
    return str(info.value.details())


async def test_labels_and_idempotency_keys_are_bounded_naming_the_limit(tmp_path: Path) -> None:
    m = manager(tmp_path)
    async with serving(m) as running, channel(running) as jobs:
        many = {f"k{i}": "v" for i in range(MAX_LABELS + 1)}
        assert f"spec.labels: has {MAX_LABELS + 1} labels; at most {MAX_LABELS}" in await refused(
            jobs, job_spec(labels=many)
        )
        huge = await refused(jobs, job_spec(labels={"big": "x" * 1_000_000}))
        assert f"spec.labels['big']: value is 1000000 bytes; at most {MAX_LABEL_VALUE_BYTES}" in huge
        long_key = await refused(jobs, job_spec(labels={"k" * 64: "v"}))
        assert f"key is 64 bytes; at most {MAX_LABEL_KEY_BYTES}" in long_key
        total = {f"key{i:02}": "v" * 250 for i in range(MAX_LABELS)}
        assert f"at most {MAX_LABELS_BYTES} are allowed" in await refused(jobs, job_spec(labels=total))
        key = await refused(jobs, job_spec(), key="k" * (MAX_IDEMPOTENCY_KEY_BYTES + 1))
        assert f"idempotency_key: is {MAX_IDEMPOTENCY_KEY_BYTES + 1} bytes; at most {MAX_IDEMPOTENCY_KEY_BYTES}" in key
        # at the limits: accepted
        ok = {f"k{i}": "v" * 100 for i in range(MAX_LABELS)}
        call = jobs.SubmitJob(
            job_service_pb2.SubmitJobRequest(spec=job_spec(labels=ok), idempotency_key="k" * MAX_IDEMPOTENCY_KEY_BYTES)
        )
        assert (await call.read()).event.WhichOneof("event") == "accepted"
        call.cancel()
    await stopped(m)


@pytest.mark.parametrize("token", ["99999999999999999999999:job-x", "-1:job-x", "9223372036854775808:x", "nope"])
async def test_a_page_token_this_service_did_not_issue_is_invalid_argument(tmp_path: Path, token: str) -> None:
    m = manager(tmp_path)
    async with serving(m) as running, channel(running) as jobs:
        with pytest.raises(aio.AioRpcError) as info:
            await jobs.ListJobs(job_service_pb2.ListJobsRequest(page_token=token))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "page_token" in str(info.value.details())
    await stopped(m)


async def test_records_stored_before_the_limits_page_below_the_message_limit(tmp_path: Path) -> None:
    m = manager(tmp_path)
    for i in range(6):  # as an older gateway let them in: a 1 MB label each
        job = job_pb2.Job(
            job_id=f"job-{i}", state=S.JOB_STATE_SUCCEEDED, spec=job_spec(labels={"big": "x" * 1_000_000})
        )
        job.create_time.FromNanoseconds(1000 + i)
        m.store.put_job(job)
    m.store.flush()
    seen: list[str] = []
    async with serving(m) as running, channel(running) as jobs:
        token = ""
        while True:
            page = await jobs.ListJobs(job_service_pb2.ListJobsRequest(page_size=100, page_token=token))
            assert page.ByteSize() <= MAX_PAGE_BYTES + 1_100_000  # one record over at most: never 4 MiB
            seen += [j.job_id for j in page.jobs]
            token = page.next_page_token
            if not token:
                break
    assert seen == [f"job-{i}" for i in reversed(range(6))]
    await stopped(m)


@pytest.mark.parametrize("method", ["SubmitJob", "WatchJob"])
async def test_a_client_that_cancels_a_stream_leaves_no_pending_task(
    tmp_path: Path, method: str, caplog: pytest.LogCaptureFixture
) -> None:
    m = manager(tmp_path, delay=0.05)
    async with serving(m) as running, channel(running) as jobs:
        for _ in range(3):
            if method == "SubmitJob":
                call = jobs.SubmitJob(job_service_pb2.SubmitJobRequest(spec=job_spec()))
            else:
                job_id = await m.submit(job_spec())
                call = jobs.WatchJob(job_service_pb2.WatchJobRequest(job_id=job_id))
            assert (await call.read()).event.sequence == 1
            call.cancel()
            await asyncio.sleep(0.1)
            gc.collect()  # a pending task whose last reference went is destroyed here
        await until(lambda: not m._live, "the jobs' ends")
    await stopped(m)
    gc.collect()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, errors
