"""The light client's event streams: a break is resumed from the last event seen, and the retry
budget counts breaks in a row without an event, not breaks over the stream's whole life."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc import aio

from livecalc.gateway.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from livecalc_client.aio import AsyncClient
from livecalc_client.errors import Unavailable
from livecalc_client.retry import Backoff, Retry

RETRIES = 2


class FlakyJobs(job_service_pb2_grpc.JobServiceServicer):
    """WatchJob sends `per_stream` progress events, then breaks (UNAVAILABLE), `breaks` times;
    then it sends the rest and a result."""

    def __init__(self, breaks: int, per_stream: int, total: int = 10) -> None:
        self.breaks, self.per_stream, self.total = breaks, per_stream, total
        self.calls = 0

    async def WatchJob(
        self, request: job_service_pb2.WatchJobRequest, context: aio.ServicerContext[object, object]
    ) -> AsyncIterator[job_service_pb2.WatchJobResponse]:
        self.calls += 1
        first = request.after_sequence + 1
        last = self.total if self.calls > self.breaks else min(self.total, first + self.per_stream - 1)
        for sequence in range(first, last + 1):
            event = job_pb2.JobEvent(job_id=request.job_id, sequence=sequence)
            if sequence == self.total:
                event.result.SetInParent()
            else:
                event.progress.SetInParent()
            yield job_service_pb2.WatchJobResponse(event=event)
        if self.calls <= self.breaks:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "gateway restarting")


async def _watch(jobs: FlakyJobs) -> list[int]:
    server = aio.server()
    job_service_pb2_grpc.add_JobServiceServicer_to_server(jobs, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with AsyncClient(f"127.0.0.1:{port}", retries=RETRIES) as lc:
            return [event.sequence async for event in lc.watch("job-1")]
    finally:
        await server.stop(None)


@pytest.mark.anyio
async def test_a_stream_that_progresses_between_breaks_never_runs_out_of_retries() -> None:
    jobs = FlakyJobs(breaks=3 * RETRIES, per_stream=1)  # type: ignore[abstract]  # WatchJob is all it serves
    assert await _watch(jobs) == list(range(1, 11))  # each event once, in order
    assert jobs.calls == 3 * RETRIES + 1


@pytest.mark.anyio
async def test_a_stream_that_breaks_without_progress_gives_up() -> None:
    jobs = FlakyJobs(breaks=RETRIES + 1, per_stream=0)  # type: ignore[abstract]
    with pytest.raises(Unavailable):
        await _watch(jobs)
    assert jobs.calls == RETRIES + 1


def test_backoff_doubles_to_its_cap_within_its_jitter() -> None:
    exact = Backoff(attempts=10, jitter=0.0)
    assert [exact.delay(n) for n in range(1, 7)] == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0]
    jittered, rng = Backoff(attempts=10), random.Random(7)
    for n in range(1, 10):
        assert abs(jittered.delay(n, rng) - exact.delay(n)) <= 0.1 * exact.delay(n) + 1e-12


def test_progress_renews_the_budget() -> None:
    retry = Retry(Backoff(attempts=2, jitter=0.0))
    assert (retry.failed(), retry.failed(), retry.failed()) == (0.2, 0.4, None)
    retry.progressed()
    assert retry.failed() == 0.2
