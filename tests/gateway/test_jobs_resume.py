"""A job resumed from its checkpoint reports every block exactly once (job manager, fakes injected).

The gateway stops (a SIGKILL: the job's task dies with no last checkpoint; a SIGTERM:
`JobManager.close()` writes one) after a checkpoint and after more blocks were folded and
reported; a new manager on the same store resumes the job. Its event log, read on from the
last sequence, must never step back in progress, never repeat running statistics for rows
already reported, and end with the result of the same job run without a stop: hash, steps,
statistics, policies.

`PieceEngine` answers RunChunk as the real engine does (services/engine/chunk_runner.py): a
progress message, then per piece of blocks the block partials followed by a progress message
with the chunk's steps so far, then the summary. Steps differ per block, so a block counted
twice or never shows in the total.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import grpc
import numpy as np
import pytest

from livecalc.engine.v1 import engine_pb2, engine_service_pb2
from livecalc.gateway.v1 import job_pb2
from services.gateway.fold import FoldState, JobFold
from services.gateway.jobs import JobManager
from services.gateway.store import JobStore
from services.valuation.blocks import BLOCK_SIZE, fold
from services.valuation.statistics import result_hash
from tests.gateway.fakes import (
    HASH,
    PRIMARY,
    FakeCall,
    FakeError,
    block_partial,
    fake_dispatcher,
    fake_engine,
    fake_manager,
    partial_table,
)

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


def block_steps(block: int) -> int:
    """Made-up projection steps of one block: different for every block."""
    return 1000 * (block + 1) + 7 * block * block


class PieceEngine:
    """RunChunk like the engine's: per piece of `piece` blocks, its partials then a progress message
    with the chunk's cumulative steps; the summary last. A block in `gates` waits for its event
    (setting `arrived[block]` first); `fail(block)` may return an error to raise before the piece
    that starts with it; `sent` holds the blocks whose piece was sent."""

    def __init__(
        self,
        table: np.ndarray,
        rows: int,
        *,
        piece: int = 1,
        delay: float = 0.0,
        gates: dict[int, asyncio.Event] | None = None,
        fail: Callable[[int], Exception | None] = lambda block: None,
    ) -> None:
        self.table, self.rows, self.piece, self.delay, self.fail = table, rows, piece, delay, fail
        self.gates = gates or {}
        self.arrived = {b: asyncio.Event() for b in self.gates}
        self.sent: set[int] = set()
        self.requests: list[engine_service_pb2.RunChunkRequest] = []

    def RunChunk(
        self, request: engine_service_pb2.RunChunkRequest, timeout: float | None = None, metadata: object = None
    ) -> FakeCall:
        self.requests.append(request)
        return FakeCall(self._run(request))

    async def _run(
        self, request: engine_service_pb2.RunChunkRequest
    ) -> AsyncIterator[engine_service_pb2.RunChunkResponse]:
        first, count = int(request.blocks.first_block), int(request.blocks.block_count)
        yield engine_service_pb2.RunChunkResponse(progress=engine_pb2.ChunkProgress(blocks_total=count))
        steps = done = 0
        for p0 in range(first, first + count, self.piece):
            piece = range(p0, min(p0 + self.piece, first + count))
            for b in piece:
                if b in self.gates:
                    self.arrived[b].set()
                    await self.gates[b].wait()
            await asyncio.sleep(self.delay)
            if (error := self.fail(p0)) is not None:
                raise error
            for b in piece:
                yield engine_service_pb2.RunChunkResponse(partial=block_partial(self.table, b, self.rows))
                steps += block_steps(b)
                done += 1
            self.sent.update(piece)
            yield engine_service_pb2.RunChunkResponse(
                progress=engine_pb2.ChunkProgress(blocks_done=done, blocks_total=count, steps_done=steps)
            )
        yield engine_service_pb2.RunChunkResponse(summary=engine_pb2.ChunkSummary(blocks=count, steps=steps))


def manager(path: Path, engines: list[PieceEngine], rows: int, checkpoint_seconds: float = 0.0) -> JobManager:
    fakes = [fake_engine(f"e{i}", e) for i, e in enumerate(engines)]  # type: ignore[arg-type]
    return fake_manager(
        path, fakes, rows, progress_seconds=0.01, statistics_seconds=0.0, checkpoint_seconds=checkpoint_seconds
    )


def job_spec(scenarios: int, chunk_blocks: int) -> job_pb2.JobSpec:
    return job_pb2.JobSpec(
        package_hash=HASH,
        dataset_id="pol",
        chunk_blocks=chunk_blocks,
        scenarios=engine_pb2.ScenarioSpec(count=scenarios, seed=1),
    )


async def until(check: Callable[[], bool], what: str, seconds: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not check():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


def of(events: list[job_pb2.JobEvent], kind: str) -> list[job_pb2.JobEvent]:
    return [e for e in events if e.WhichOneof("event") == kind]


async def uninterrupted(
    path: Path, table: np.ndarray, rows: int, chunk_blocks: int, piece: int = 1
) -> job_pb2.JobResult:
    path.mkdir()
    m = manager(path, [PieceEngine(table, rows, piece=piece)], rows)
    job_id = await m.submit(job_spec(table.shape[2], chunk_blocks))
    events = [e async for e in m.follow(job_id)]
    await m.close()
    m.store.close()
    result = events[-1].result
    assert result.result_hash == result_hash(fold(table)[PRIMARY])
    assert result.steps == sum(block_steps(b) for b in range(table.shape[0]))
    return result


async def resume(path: Path, table: np.ndarray, rows: int, job_id: str, after: int) -> list[job_pb2.JobEvent]:
    """A new manager on the same store: the job resumes; its events after ``after``."""
    engine = PieceEngine(table, rows, piece=2, delay=0.02)
    m = manager(path, [engine], rows)
    assert m.recover() == 1
    rest = [e async for e in m.follow(job_id, after)]
    await m.close()
    m.store.close()
    return rest


def check_reported_once(events: list[job_pb2.JobEvent], expected: job_pb2.JobResult) -> None:
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    progress = [e.progress for e in of(events, "progress")]
    done = [p.blocks_done for p in progress]
    assert done == sorted(done), f"progress stepped back: {done}"
    policies = [p.policies_done for p in progress]
    assert policies == sorted(policies), f"policies done stepped back: {policies}"
    elapsed = [p.elapsed_seconds for p in progress]
    assert elapsed == sorted(elapsed), f"elapsed time stepped back: {elapsed}"
    stats = [e.statistics.policies_done for e in of(events, "statistics")]
    assert len(set(stats)) == len(stats) and stats == sorted(stats), f"statistics repeated: {stats}"
    result = events[-1].result
    assert result.result_hash == expected.result_hash
    assert result.steps == expected.steps, f"steps {result.steps} != {expected.steps} of the uninterrupted run"
    assert result.statistics == expected.statistics
    assert result.outputs == expected.outputs
    assert result.policy_count == expected.policy_count and result.dataset_version == expected.dataset_version
    assert result.elapsed_seconds >= max(elapsed)


async def test_killed_after_a_checkpoint_and_more_reports_resumes_reporting_each_block_once(tmp_path: Path) -> None:
    blocks, n, chunk_blocks = 12, 5, 4
    rows = blocks * BLOCK_SIZE - 100
    table = partial_table(blocks, n, seed=3)
    expected = await uninterrupted(tmp_path / "whole", table, rows, chunk_blocks, piece=2)

    # one engine, chunks [0,4) [4,8) [8,12) in pieces of 2 blocks; it waits before blocks 6 and 10
    gates = {6: asyncio.Event(), 10: asyncio.Event()}
    engine = PieceEngine(table, rows, piece=2, gates=gates)
    m = manager(tmp_path, [engine], rows)
    job_id = await m.submit(job_spec(n, chunk_blocks))
    live = m._live[job_id]
    await asyncio.wait_for(engine.arrived[6].wait(), 10)
    # a checkpoint in the middle of chunk [4, 8): its summary has not come yet
    await until(lambda: (cp := m.store.checkpoint(job_id)) is not None and cp.next_block == 6, "a checkpoint at 6")
    reporter = m.runner.reporter
    reporter.config = dataclasses.replace(reporter.config, checkpoint_seconds=3600.0)  # no more checkpoints
    gates[6].set()
    await asyncio.wait_for(engine.arrived[10].wait(), 10)
    await until(
        lambda: any(e.statistics.policies_done == 10 * BLOCK_SIZE for e in of(live.log.events(), "statistics")),
        "statistics of 10 blocks",
    )
    assert max(e.progress.blocks_done for e in of(live.log.events(), "progress")) == 10
    checkpoint = m.store.checkpoint(job_id)
    assert checkpoint is not None and checkpoint.next_block == 6
    # SIGKILL: the task dies where it is, nothing more is written
    assert live.task is not None
    live.task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await live.task
    m.store.close()
    before = JobStore(tmp_path / "jobs.sqlite3")
    seen = before.events(job_id)
    before.close()
    assert not of(seen, "result")

    rest = await resume(tmp_path, table, rows, job_id, seen[-1].sequence)
    assert rest and rest[-1].WhichOneof("event") == "result", [e.WhichOneof("event") for e in rest]
    check_reported_once(seen + rest, expected)


async def test_stopped_with_blocks_ahead_of_the_fold_resumes_without_counting_them_twice(tmp_path: Path) -> None:
    blocks, n = 8, 3
    rows = blocks * BLOCK_SIZE
    table = partial_table(blocks, n, seed=4)
    expected = await uninterrupted(tmp_path / "whole", table, rows, 1)

    # two engines, one-block chunks; block 3 waits, so blocks 4..6 (the window) finish ahead of the fold
    gates = {3: asyncio.Event()}
    engines = [PieceEngine(table, rows, gates=gates), PieceEngine(table, rows, gates=gates)]
    engines[1].arrived = engines[0].arrived
    m = manager(tmp_path, engines, rows)
    job_id = await m.submit(job_spec(n, 1))
    live = m._live[job_id]
    await asyncio.wait_for(engines[0].arrived[3].wait(), 10)
    await until(lambda: {4, 5, 6} <= engines[0].sent | engines[1].sent, "blocks 4..6")
    await until(lambda: live.dispatcher is not None and live.dispatcher._in_flight == 1, "the calls of 4..6 to end")
    assert live.fold is not None and live.fold.folded_blocks == 3
    await m.close()  # SIGTERM: a last checkpoint of the fold
    m.store.close()
    before = JobStore(tmp_path / "jobs.sqlite3")
    seen = before.events(job_id)
    checkpoint = before.checkpoint(job_id)
    before.close()
    assert checkpoint is not None and checkpoint.next_block == 3

    rest = await resume(tmp_path, table, rows, job_id, seen[-1].sequence)
    assert rest and rest[-1].WhichOneof("event") == "result", [e.WhichOneof("event") for e in rest]
    check_reported_once(seen + rest, expected)


def partial(table: np.ndarray, block: int, rows: int) -> engine_pb2.BlockPartial:
    return block_partial(table, block, rows)


def test_fold_counts_a_pieces_steps_once_folded_and_checkpoints_only_where_steps_are_known() -> None:
    rows, n = 4 * BLOCK_SIZE, 3
    table = partial_table(4, n)
    f = JobFold(rows, 4, n, outputs=5)
    f.add(partial(table, 2, rows))
    f.add(partial(table, 3, rows))
    f.settle([2, 3], 50)  # ahead of the fold: counted once folded
    assert f.steps == 0 and f.checkpoint() == FoldState(0, None, 0)
    f.add(partial(table, 0, rows))
    assert f.folded_blocks == 1 and f.checkpoint() is None  # block 0 folded, its steps not reported yet
    f.add(partial(table, 1, rows))
    assert f.complete and f.steps == 50 and f.checkpoint() is None
    f.settle([0, 1], 7)
    state = f.checkpoint()
    assert state is not None and (state.next_block, state.steps) == (4, 57)
    with pytest.raises(Exception, match="before their partials"):
        JobFold(rows, 4, n, outputs=5).settle([0], 1)

    resumed = JobFold(rows, 4, n, outputs=5)
    half = JobFold(rows, 4, n, outputs=5)
    half.add(partial(table, 0, rows))
    half.settle([0], 7)
    checkpoint = half.checkpoint()
    assert checkpoint is not None and checkpoint.steps == 7
    resumed.resume(checkpoint)
    for b in (1, 2, 3):
        resumed.add(partial(table, b, rows))
    resumed.settle([1], 3)
    resumed.settle([2, 3], 50)
    assert resumed.steps == 60 and resumed.total().tobytes() == fold(table).tobytes()


async def test_dispatch_counts_the_steps_of_a_chunk_that_failed_half_way_once() -> None:
    rows, n = 6 * BLOCK_SIZE, 2
    table = partial_table(6, n)
    failed: set[int] = set()

    def once_at_4(block: int) -> Exception | None:
        if block == 4 and not failed:
            failed.add(block)
            return FakeError(grpc.StatusCode.UNAVAILABLE, "engine gone")
        return None

    engine = PieceEngine(table, rows, fail=once_at_4)
    fakes = [fake_engine("a", engine)]  # type: ignore[arg-type]
    d, f = fake_dispatcher(fakes, rows, n, slots=1, chunk_blocks=3, window=6, backoff_seconds=0.01)
    await asyncio.wait_for(d.run(), 10)
    sent = [(r.blocks.first_block, r.blocks.block_count) for r in engine.requests]
    assert sent == [(0, 3), (3, 3), (4, 2)]  # chunk [3, 6) sent block 3 and its steps, then failed
    assert d.steps == f.steps == sum(block_steps(b) for b in range(6))
