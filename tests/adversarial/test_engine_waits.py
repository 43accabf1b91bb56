"""Issue 19, items 2, 5 and 9 (the dispatcher's side): what an engine's refusal costs a job.

- Every engine briefly unreachable: once, a chunk's four attempts went in about a second and
  the job failed. Unreachable engines now make the job wait (bounded, visible in progress), and
  attempts are spent on engine faults only.
- A model that loops for ever: once reported as four engine outages after four stalls. An
  engine's refusal marked `livecalc-fault: model` fails the job at once, with the engine's code.
- A chunk too large for an engine's memory: once requeued without counting, for ever. Marked
  `livecalc-fault: too-large`, that engine never takes the chunk again, and a job no engine
  can take fails.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from livecalc.engine.v1 import engine_pb2
from livecalc.gateway.v1 import job_pb2
from services.gateway.config import DispatchConfig
from services.gateway.dispatcher import Dispatcher, JobCannotFinish
from services.gateway.engines import Engine
from services.gateway.fold import JobFold
from services.valuation.blocks import BLOCK_SIZE
from tests.faults.faultmesh import FaultMesh, Job, fault_mesh
from tests.gateway.fakes import (
    HASH,
    FakeEngineStub,
    FakeError,
    fake_dispatcher,
    fake_engine,
    fake_manager,
    partial_table,
)
from tests.gateway.jobmesh import kinds, submit
from tests.waits import wait_for

pytestmark = pytest.mark.anyio

UNREACHABLE = FakeError(grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses; Connection refused")


def fold_of(table: np.ndarray) -> np.ndarray:
    total = np.zeros(table.shape[1:])
    for block in table:
        total = total + block
    return total


class Outage:
    """Refuses every call (as a dead engine's address does) until `until` (monotonic)."""

    def __init__(self, seconds: float) -> None:
        self.until = time.monotonic() + seconds
        self.refused = 0

    def __call__(self, request: object) -> FakeError | None:
        if time.monotonic() < self.until:
            self.refused += 1
            return UNREACHABLE
        return None


def dispatcher(engines: list[Engine], rows: int, n: int, **config: float) -> tuple[Dispatcher, JobFold]:
    return fake_dispatcher(
        engines,
        rows,
        n,
        slots=len(engines),
        chunk_blocks=1,
        window=8,
        max_attempts=2,
        backoff_seconds=0.01,
        engine_scan_seconds=0.05,
        **config,
    )


async def test_every_engine_unreachable_for_a_while_waits_instead_of_spending_attempts() -> None:
    rows, n = 4 * BLOCK_SIZE, 3
    table = partial_table(4, n)
    outage = Outage(1.5)  # refused many times over: on today's main the 2 attempts go in ~0.05 s
    engines = [fake_engine(a, FakeEngineStub(table, rows, refuse=outage)) for a in ("a", "b")]
    d, f = dispatcher(engines, rows, n, engine_wait_seconds=10)
    waits: list[float] = []

    async def watch() -> None:
        while not d.done:
            waits.append(d.waiting_seconds)
            await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch())
    await asyncio.wait_for(d.run(), 20)
    await watcher
    assert outage.refused > 2 and f.total().tobytes() == fold_of(table).tobytes()
    assert max(waits) > 0.5 and d.waiting_seconds == 0.0 and d.waiting_reason == ""


async def test_a_wait_past_the_job_limit_fails_unavailable_naming_the_last_answer() -> None:
    rows, n = 2 * BLOCK_SIZE, 2
    engines = [fake_engine("a", FakeEngineStub(partial_table(2, n), rows, refuse=Outage(60)))]
    d, _ = dispatcher(engines, rows, n, engine_wait_seconds=0.5)
    started = time.monotonic()
    with pytest.raises(JobCannotFinish) as info:
        await asyncio.wait_for(d.run(), 10)
    assert info.value.code == grpc.StatusCode.UNAVAILABLE
    assert (
        "no engine took the job's work for 0.5 s" in info.value.message and "Connection refused" in info.value.message
    )
    assert time.monotonic() - started < 5


async def test_engine_faults_after_the_chunk_started_still_spend_attempts() -> None:
    rows, n = 2 * BLOCK_SIZE, 2
    broken = FakeEngineStub(
        partial_table(2, n), rows, fail=lambda r, b: FakeError(grpc.StatusCode.UNAVAILABLE, "reset")
    )
    d, _ = dispatcher([fake_engine("a", broken)], rows, n, engine_wait_seconds=30)
    with pytest.raises(JobCannotFinish) as info:
        await asyncio.wait_for(d.run(), 10)
    assert "failed 2 times" in info.value.message


@pytest.mark.parametrize("code", [grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.INTERNAL])
async def test_a_model_fault_fails_the_job_at_once_with_the_engines_code(code: grpc.StatusCode) -> None:
    rows, n = 3 * BLOCK_SIZE, 2
    looping = FakeError(code, "model 'term_life' lc_run_blocks ran past 20 s", (("livecalc-fault", "model"),))
    stubs = [FakeEngineStub(partial_table(3, n), rows, fail=lambda r, b: looping) for _ in range(3)]
    d, _ = dispatcher([fake_engine(f"e{i}", s) for i, s in enumerate(stubs)], rows, n)
    with pytest.raises(JobCannotFinish) as info:
        await asyncio.wait_for(d.run(), 10)
    assert info.value.code == code and "the model failed on engine" in info.value.message
    assert "lc_run_blocks ran past 20 s" in info.value.message
    assert all(e.failures == 0 for e in d.pool.engines()), "healthy engines were rested for the model's fault"


async def test_too_large_moves_the_chunk_to_an_engine_that_can_and_fails_when_none_can() -> None:
    rows, n = 2 * BLOCK_SIZE, 2
    table = partial_table(2, n)
    too_large = FakeError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "needs 9 GiB, the engine's limit is 2 GiB",
        (("livecalc-fault", "too-large"),),
    )
    small = FakeEngineStub(table, rows, refuse=lambda r: too_large)
    big = FakeEngineStub(table, rows)
    d, f = dispatcher([fake_engine("small", small), fake_engine("big", big)], rows, n)
    await asyncio.wait_for(d.run(), 10)
    assert f.total().tobytes() == fold_of(table).tobytes()
    assert len(small.requests) <= 2  # each chunk at most once, never again after its refusal
    d, _ = dispatcher([fake_engine("small", FakeEngineStub(table, rows, refuse=lambda r: too_large))], rows, n)
    with pytest.raises(JobCannotFinish) as info:
        await asyncio.wait_for(d.run(), 10)
    assert info.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED and "no engine can run chunk" in info.value.message


async def test_the_wait_shows_in_the_jobs_progress_events(tmp_path: Path) -> None:
    rows, n = 3 * BLOCK_SIZE, 2
    table = partial_table(3, n)
    manager = fake_manager(
        tmp_path,
        [fake_engine("a", FakeEngineStub(table, rows, refuse=Outage(2.5)))],
        rows,
        progress_seconds=0.05,
        dispatch=DispatchConfig(backoff_seconds=0.01, engine_scan_seconds=0.05, engine_wait_seconds=30),
    )
    try:
        spec = job_pb2.JobSpec(package_hash=HASH, dataset_id="pol", scenarios=engine_pb2.ScenarioSpec(count=n, seed=1))
        job_id = await manager.submit(spec)
        events = [e async for e in manager.follow(job_id)]
        assert events[-1].WhichOneof("event") == "result", kinds(events)
        progress = [e.progress for e in events if e.WhichOneof("event") == "progress"]
        waiting = [p for p in progress if p.waiting_seconds > 0]
        assert len(waiting) >= 2 and "Connection refused" in waiting[0].waiting_reason
        assert max(p.waiting_seconds for p in waiting) > 1.0
        assert progress[-1].waiting_seconds == 0 and progress[-1].waiting_reason == ""
        assert [p.blocks_done for p in progress] == sorted(p.blocks_done for p in progress)
    finally:
        await manager.close()
        manager.store.close()


# the same through real processes: every engine of the mesh killed mid-job and restarted


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultMesh]:
    yield from fault_mesh(tmp_path_factory.mktemp("waits"))


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_all_engines_killed_and_restarted_mid_job_the_job_waits_and_ends_with_the_same_hash(mesh: FaultMesh) -> None:
    undisturbed = submit(mesh.gateway.address, mesh.job_spec())
    assert undisturbed[-1].WhichOneof("event") == "result", kinds(undisturbed)
    job = Job(mesh.gateway.address, mesh.job_spec())
    job.folded(2)
    for engine in mesh.engines:
        engine.kill()
    # on today's main every chunk's attempts are gone within about a second of this
    job.until(lambda e: e.WhichOneof("event") == "progress" and e.progress.waiting_seconds > 2.0)
    mesh.engines = [mesh.services.restart(e) for e in mesh.engines]
    events = job.rest()
    assert events[-1].WhichOneof("event") == "result", (kinds(events), events[-1])
    assert events[-1].result.result_hash == undisturbed[-1].result.result_hash
    waits = [e.progress for e in events if e.WhichOneof("event") == "progress" and e.progress.waiting_seconds > 0]
    assert waits and waits[0].waiting_reason.startswith("UNAVAILABLE from 127.0.0.1:")
    wait_for(
        lambda: "engine did not take the chunk; requeued" in mesh.gateway.log(),
        "the wait's log line",
        seconds=5,
        interval=0.05,
    )


def test_the_cli_progress_says_the_job_waits_for_an_engine() -> None:
    import io

    from services.client.report import ProgressView

    out = io.StringIO()
    waiting = job_pb2.JobProgress(
        policies_total=10, waiting_seconds=3.2, waiting_reason="UNAVAILABLE from 127.0.0.1:50052: refused"
    )
    with ProgressView("full run", terminal=False, stream=out) as view:
        view.event(job_pb2.JobEvent(progress=waiting))
    assert "full run: waiting 3 s for an engine (UNAVAILABLE from 127.0.0.1:50052: refused)" in out.getvalue()
