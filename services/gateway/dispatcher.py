"""The dispatcher: runs a job's chunks on the engines and feeds their partials to the fold.

Per engine, as many workers as the engine has slots take chunks from one queue kept in
block order (a retried remainder goes back in its block order, so ahead of later chunks).
A worker does not take a chunk that starts more than `window_blocks` past the fold's next
block, which bounds the partials waiting in the gateway (a full run's; a preview's one chunk
of sample groups has no window, `JobKind.windowed`). Each piece of work is asked as the job's
`ChunkRequests` builds it. Faults (docs/architecture.md "9. Faults and retries"):

- an engine that cannot be reached (UNAVAILABLE before it sent anything on the call: refused
  connection, a restarting process) or is busy (RESOURCE_EXHAUSTED without a fault mark: all
  its slots taken by other work): the chunk goes back to the queue *without* spending an
  attempt, the engine pauses with exponential backoff, and the job waits — visibly, in
  `waiting_seconds` of its progress — until an engine takes the work again, at most
  `engine_wait_seconds` in a row before it fails UNAVAILABLE. Attempts are for engine faults:
  when every engine is briefly down (a restart, a rolling update) they would otherwise go in
  about a second;
- UNAVAILABLE once the engine has started the chunk, a reset stream, a stream that ends early,
  a chunk deadline: the chunk's missing blocks go back to the queue, at most `max_attempts`
  times, and the engine pauses with exponential backoff; an engine that failed a chunk does
  not take it again while another engine that has not failed it is there;
- a stalled engine (a hung process, SIGSTOP, a lost network: no message on the chunk's
  stream for `stall_seconds`): the call is cancelled, its missing blocks requeued as above,
  and the engine is left alone for `stall_seconds`;
- a refusal the engine marks as the model's (trailing metadata ``livecalc-fault: model``: the
  model ran past the engine's per-piece deadline, or trapped): the job fails at once with the
  engine's status and message — every engine would do the same, and a looping model must not
  pass for four engine outages (a broken scenario set, scenario_sets.py, is refused the same
  way, and the job's error names the set);
- RESOURCE_EXHAUSTED marked ``livecalc-fault: too-large`` (the chunk can never fit this
  engine's memory): that engine never takes the chunk again; when no engine is left that has
  not refused it, the job fails with the engine's message;
- INVALID_ARGUMENT, FAILED_PRECONDITION and any other status: the job fails at once with it.

Every call has a deadline. Cancelling `run()` cancels the in-flight RunChunk calls.

Steps: an engine reports its chunk's steps so far after each piece of blocks (ChunkProgress,
after the piece's partials) and in the summary; each report's increase is the steps of the
blocks received since the previous one, and goes to the fold with them (`JobFold.settle`),
which counts every block once however chunks are split, retried or resumed.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Final, Protocol

import anyio
import grpc
from grpc import aio

from livecalc.engine.v1 import engine_pb2, engine_service_pb2
from services.common.auth.service import ServiceCredentials
from services.common.errors import FAULT_KEY, FAULT_MODEL, FAULT_TOO_LARGE, LivecalcError
from services.gateway.chunk_requests import ChunkRequests
from services.gateway.config import DispatchConfig
from services.gateway.engines import Engine, EnginePool
from services.gateway.metrics import GatewayMetrics
from services.gateway.planner import Plan, ranges
from services.gateway.provenance import EngineBuild
from services.gateway.scenario_sets import SET_MESSAGE_PREFIX
from services.gateway.speeds import speed_shape

log = logging.getLogger(__name__)


class ChunkFold(Protocol):
    """Where the dispatcher puts what engines answer: a job's `fold.JobFold`, or a detail
    recomputation's fold (detail_fold.py). ``folded_blocks`` is the first block not yet done
    with: the window is counted from it."""

    @property
    def steps(self) -> int: ...

    @property
    def complete(self) -> bool: ...

    @property
    def folded_blocks(self) -> int: ...

    def add(self, partial: engine_pb2.BlockPartial) -> bool: ...

    def settle(self, blocks: Iterable[int], steps: int) -> None: ...

    def discard_pieces(self, blocks: set[int]) -> None: ...


#: Takes the detail messages of a chunk (RowValues, BlockCashFlows), each before its block's partial.
DetailSink = Callable[[engine_service_pb2.RunChunkResponse], None]


class JobCannotFinish(LivecalcError):
    """The job cannot finish: `code` is the status it ends with (often the engine's). Internal to
    the gateway, which ends the job FAILED with it (a client sees the job's error, and its own
    `livecalc_client.JobCannotFinish`)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(order=True)
class Work:
    """Blocks [first_block, first_block + block_count) still to compute; ``attempts`` so far."""

    first_block: int
    block_count: int
    chunk_id: int = field(compare=False)
    attempts: int = field(default=0, compare=False)
    #: Engines this work failed on (it goes to others first).
    failed_on: frozenset[str] = field(default=frozenset(), compare=False)
    #: Engines that refused it as too large for their memory (they never take it again).
    too_large_on: frozenset[str] = field(default=frozenset(), compare=False)


def fault_of(exc: aio.AioRpcError) -> str:
    """The engine's mark on a refusal (`FAULT_MODEL`: any engine would do the same;
    `FAULT_TOO_LARGE`: the chunk can never fit this engine's memory), or '' for none."""
    for key, value in exc.trailing_metadata() or ():
        if key == FAULT_KEY:
            return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    return ""


#: Statuses of a RunChunk call after which the chunk's missing blocks go to an engine again,
#: spending an attempt (the client's `RETRYABLE` is another set: what a client call retries).
CHUNK_RETRYABLE_CODES: Final = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
)


def retryable(exc: aio.AioRpcError) -> bool:
    """A RunChunk failure worth another attempt: a retryable status, or a reset transport."""
    code = exc.code()
    if code in CHUNK_RETRYABLE_CODES:
        return True
    details = (exc.details() or "").lower()
    return code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN) and (
        "rst_stream" in details or "reset" in details or "goaway" in details or "socket closed" in details
    )


class Dispatcher:
    """Runs one job's plan (or its preview sample) over the pool, each piece of work asked as
    ``requests`` builds it; partials go into `fold`."""

    def __init__(
        self,
        pool: EnginePool,
        requests: ChunkRequests,
        plan: Plan,
        fold: ChunkFold,
        *,
        config: DispatchConfig,
        metrics: GatewayMetrics,
        window_blocks: int,
        credentials: ServiceCredentials | None = None,
        tenant: str = "",
        on_detail: DetailSink | None = None,
    ) -> None:
        self.pool, self.requests, self.plan, self.fold = pool, requests, plan, fold
        self.on_detail = on_detail
        #: The gateway's service token on each RunChunk call, acting for the job's tenant.
        self.credentials = credentials or ServiceCredentials()
        self.tenant = tenant
        self.config, self.metrics = config, metrics
        #: None: no window (a preview's one chunk of sample groups, `JobKind.windowed`).
        self.window_blocks = max(1, window_blocks) if requests.kind.windowed else None
        self._queue: list[Work] = [Work(c.first_block, c.block_count, c.chunk_id) for c in plan.chunks]
        heapq.heapify(self._queue)
        self._in_flight = 0
        self._wake = asyncio.Event()
        self._failure: JobCannotFinish | None = None
        self.engines_active: set[str] = set()
        #: The builds of the engines whose partials were folded (the result's provenance).
        self.builds: set[EngineBuild] = set()
        #: Since when no engine has taken the job's work (None: engines are running it), and why.
        self._waiting_since: float | None = None
        self.waiting_reason = ""
        #: Calls on which the engine has sent something and that have not ended.
        self._answering = 0
        job = requests.job
        #: What the engines' speeds measured on this job's chunks are kept under (speeds.py).
        self.shape = speed_shape(job.package_hash, int(job.scenarios.count), detail=job.HasField("detail"))

    @property
    def steps(self) -> int:
        """Projection steps of the blocks folded so far (the fold counts them, each block once)."""
        return self.fold.steps

    @property
    def waiting_seconds(self) -> float:
        """How long the job has been waiting for an engine to take its work (0: it is running)."""
        if self._waiting_since is None or self._answering:
            return 0.0
        return time.monotonic() - self._waiting_since

    def _wait(self, reason: str) -> None:
        """No engine took the work just now; the job fails once that lasts `engine_wait_seconds`."""
        if self._waiting_since is None:
            self._waiting_since = time.monotonic()
        self.waiting_reason = reason
        self._check_wait()

    def _check_wait(self) -> None:
        if self._answering:
            self._waiting_since = time.monotonic() if self._waiting_since is not None else None
            return
        limit = self.config.engine_wait_seconds
        if self.waiting_seconds > limit:
            self._fail(
                JobCannotFinish(
                    grpc.StatusCode.UNAVAILABLE,
                    f"no engine took the job's work for {limit:g} s (last: {self.waiting_reason});"
                    " is an engine running?",
                )
            )

    def _heard(self) -> None:
        self._waiting_since, self.waiting_reason = None, ""

    @property
    def done(self) -> bool:
        return self.fold.complete or self._failure is not None

    def _notify(self) -> None:
        wake, self._wake = self._wake, asyncio.Event()
        wake.set()

    def wake(self) -> None:
        """Workers look again: a fold that moves on outside the dispatcher (a detail stream's
        reader) opens the window."""
        self._notify()

    async def run(self) -> None:
        """Return once every block is folded; raises JobCannotFinish when the job cannot finish."""
        started: set[Engine] = set()
        async with anyio.create_task_group() as tg:

            def start_workers(engines: list[Engine]) -> None:
                for engine in engines:
                    if engine not in started:
                        started.add(engine)
                        for _ in range(engine.slots):
                            tg.start_soon(self._worker, engine)

            start_workers(await self.pool.refresh())

            async def scan() -> None:
                if not started:
                    self._wait("no engine answered GetCapabilities")
                while not self.done:
                    waiting = not started or self._waiting_since is not None
                    pause = min(1.0, self.config.engine_scan_seconds) if waiting else self.config.engine_scan_seconds
                    with anyio.move_on_after(pause):
                        await self._wait_done()
                    if self.done:
                        return
                    start_workers(await self.pool.refresh(force=not started))
                    self._check_wait()

            tg.start_soon(scan)
            await self._wait_done()
            if self._failure is None:
                # every block is folded, but the last calls are still sending their summaries
                # (the steps they ran): let them end instead of cancelling them, within a bound
                with anyio.move_on_after(self.config.drain_seconds):
                    while self._in_flight:
                        await self._wake.wait()
            tg.cancel_scope.cancel()
        if self._failure is not None:
            raise self._failure

    async def _wait_done(self) -> None:
        while not self.done:
            await self._wake.wait()

    def _fail(self, failure: JobCannotFinish) -> None:
        if self._failure is None:
            self._failure = failure
        self._notify()

    def _avoids(self, engine: Engine, work: Work) -> bool:
        """``engine`` refused ``work`` as too large, or failed it before and an engine that has not
        is there to take it."""
        if engine.address in work.too_large_on:
            return True
        if engine.address not in work.failed_on:
            return False
        return any(e.address not in work.failed_on | work.too_large_on for e in self.pool.engines())

    async def _take(self, engine: Engine) -> Work | None:
        """The next chunk in block order within the window for ``engine``; None when the job is done."""
        while True:
            if self.done:
                return None
            limit = None if self.window_blocks is None else self.fold.folded_blocks + self.window_blocks
            for work in sorted(self._queue) if len(self._queue) > 1 else self._queue:
                if limit is not None and work.first_block >= limit:
                    break
                if self._avoids(engine, work):
                    continue
                self._queue.remove(work)
                heapq.heapify(self._queue)
                self._in_flight += 1
                return work
            await self._wake.wait()

    async def _worker(self, engine: Engine) -> None:
        while not self.done:
            if engine.gone:
                return
            pause = engine.down_until - time.monotonic()
            if pause > 0:
                with anyio.move_on_after(pause):
                    await self._wait_done()
                continue
            async with engine.semaphore:
                work = await self._take(engine)
                if work is None:
                    return
                try:
                    await self._run(engine, work)
                finally:
                    self._in_flight -= 1
                    self._notify()

    async def _run(self, engine: Engine, work: Work) -> None:
        wanted = set(range(work.first_block, work.first_block + work.block_count))
        received: set[int] = set()
        timeout = self.config.chunk_timeout_seconds + self.requests.time_limit_seconds
        self.metrics.chunks_dispatched.inc()
        self.engines_active.add(engine.address)
        call = engine.stub.RunChunk(
            self.requests.for_work(work.chunk_id, work.first_block, work.block_count),
            timeout=timeout,
            metadata=self.credentials.metadata(self.tenant),
        )
        stall = self.config.stall_seconds or None
        stream = call.__aiter__()
        #: Blocks received since the engine's last report of steps, and the chunk's steps then.
        piece: list[int] = []
        reported = 0
        #: Whether the engine has sent anything on this call (it was reachable and took the chunk).
        answered = False

        def settle(steps: int) -> None:
            nonlocal piece, reported
            if piece:
                self.fold.settle(piece, max(0, steps - reported))
                piece, reported = [], max(reported, steps)

        try:
            while True:
                message = None
                with anyio.move_on_after(stall):
                    try:
                        message = await stream.__anext__()
                    except StopAsyncIteration:
                        break
                if message is None:
                    call.cancel()
                    self.fold.settle(piece, 0)  # their steps were never reported
                    self._requeue(
                        engine, work, wanted - received, "STALLED", f"no message from the engine for {stall:g} s"
                    )
                    # a hung engine is left alone for as long as it took to notice, not the short backoff
                    engine.down_until = max(engine.down_until, time.monotonic() + (stall or 0.0))
                    return
                if not answered:
                    answered = True
                    self._answering += 1
                self._heard()
                kind = message.WhichOneof("event")
                if kind == "partial":
                    partial = message.partial  # a preview's: one per sample group (SampleSelection)
                    block = int(partial.block_index)
                    if block not in wanted or block in received:
                        raise JobCannotFinish(
                            grpc.StatusCode.INTERNAL,
                            f"engine {engine.address} sent block {block}, not one it was asked for",
                        )
                    if self.fold.add(partial):
                        received.add(block)
                        self.builds.add(engine.build)
                        piece.append(block)
                        self._notify()
                elif kind in ("row_values", "cash_flows") and self.on_detail is not None:
                    self.on_detail(message)
                elif kind == "progress":
                    settle(int(message.progress.steps_done))
                elif kind == "summary":
                    settle(int(message.summary.steps))
                    engine.observe(self.shape, int(message.summary.steps), float(message.summary.elapsed_seconds))
        except aio.AioRpcError as exc:
            self.fold.settle(piece, 0)  # their steps were never reported
            self._refused(engine, work, wanted - received, exc, answered=answered)
            return
        except JobCannotFinish as failure:
            self._fail(failure)
            return
        except LivecalcError as exc:  # a malformed partial: an engine bug, not the job's
            self._fail(JobCannotFinish(exc.code, f"engine {engine.address}: {exc.message}"))
            return
        finally:
            call.cancel()
            self.engines_active.discard(engine.address)
            if answered:
                self._answering -= 1
        self.fold.settle(piece, 0)  # the stream ended without reporting their steps
        missing = wanted - received
        if missing:
            self._requeue(engine, work, missing, "STREAM_ENDED", "the stream ended before every block arrived")
            return
        engine.succeeded()

    def _refused(self, engine: Engine, work: Work, missing: set[int], exc: aio.AioRpcError, *, answered: bool) -> None:
        """Sort a failed call (see the module docstring): fail the job, requeue counting an
        attempt, or requeue and wait without counting one."""
        code, details, fault = exc.code(), exc.details() or exc.code().name, fault_of(exc)
        if fault == FAULT_MODEL:
            if details.startswith(SET_MESSAGE_PREFIX):  # the job's scenario set, not the model: it says which
                self._fail(JobCannotFinish(code, f"{details} (engine {engine.address})"))
            else:
                self._fail(JobCannotFinish(code, f"the model failed on engine {engine.address}: {details}"))
        elif fault == FAULT_TOO_LARGE:
            refused = work.too_large_on | {engine.address}
            if all(e.address in refused for e in self.pool.engines()):
                self._fail(JobCannotFinish(code, f"no engine can run chunk {work.chunk_id}: {details}"))
                return
            self._requeue(engine, replace(work, too_large_on=refused), missing, code.name, details, count=False)
        elif (code == grpc.StatusCode.UNAVAILABLE and not answered) or code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            self._requeue(engine, work, missing, code.name, details, count=False)
            self._wait(f"{code.name} from {engine.address}: {details}")
        elif retryable(exc):
            self._requeue(engine, work, missing, code.name, details)
        else:
            self._fail(JobCannotFinish(code, details))

    def _requeue(
        self, engine: Engine, work: Work, missing: set[int], code: str, details: str, *, count: bool = True
    ) -> None:
        self.fold.discard_pieces(missing)
        attempts = work.attempts + (1 if count else 0)
        pause = engine.failed(self.config.backoff_seconds)
        # an attempt spent is an engine fault worth a warning; a refused connection while the
        # job waits for an engine repeats every few seconds and is the wait's own news
        log.log(
            logging.WARNING if count else logging.INFO,
            "chunk failed on an engine; requeued" if count else "engine did not take the chunk; requeued",
            extra={
                "fields": {
                    "engine": engine.address,
                    "chunk": work.chunk_id,
                    "missing_blocks": len(missing),
                    "attempt": attempts,
                    "code": code,
                    "details": details,
                    "engine_pause_s": round(pause, 3),
                }
            },
        )
        if attempts >= self.config.max_attempts:
            self._fail(
                JobCannotFinish(
                    grpc.StatusCode.UNAVAILABLE,
                    f"chunk {work.chunk_id} (blocks {work.first_block}..{work.first_block + work.block_count - 1}) "
                    f"failed {attempts} times; last: {code} from {engine.address}: {details}",
                )
            )
            return
        self.metrics.chunks_retried.inc()
        for first, n in ranges(missing):
            heapq.heappush(
                self._queue,
                Work(first, n, work.chunk_id, attempts, work.failed_on | {engine.address}, work.too_large_on),
            )
        self._notify()
