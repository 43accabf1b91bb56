"""Detail on demand: a finished job's per-policy values (GetJobDetail) and its cash flows by
month (GetJobCashFlows), recomputed by the engines — nothing per policy is stored.

A detail request names a SUCCEEDED full job of the caller's tenant (NOT_FOUND otherwise, as
GetJob; FAILED_PRECONDITION for a job that has not succeeded or is a preview). Its blocks are
run again with the job's package hash, dataset version and resolved scenarios: RunChunk with a
`DetailRequest` (engine.proto), dispatched by the job's own `Dispatcher` — the same engine
pool, slots, retry and fault rules — into a `DetailFold`, which checks every block's rows
against its partial and hands blocks to the stream in block order within a window.

The engines run only the scenarios [min(S), max(S)] of the chosen scenarios S (`detail_window`;
every scenario for a cash-flow mean): a scenario is a pure function of (seed, s) and a policy's
value under it does not depend on the other scenarios of a run, so scenario 999 alone costs a
thousandth of the job, not the job.

What makes the detail the job's computation: every block's rows sum, in row order from +0.0,
to the block's partial bit for bit (detail_fold.py), and when every block is recomputed the
partials folded in block order are the job's stored per-scenario values for the chosen
scenarios, bit for bit; otherwise the stream fails INTERNAL (a partial range has no stored
value to meet). Cash flows are folded the same way: each scenario's block cash flows in block
order, and the mean as the block sums over all scenarios folded in block order, divided by the
scenario count.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np

from livecalc.engine.v1 import engine_pb2
from livecalc.gateway.v1 import job_pb2, job_service_pb2
from services.common.auth.interceptor import current_principal
from services.common.errors import FailedPrecondition, Internal, InvalidArgument
from services.common.tasks import cancel_and_wait
from services.gateway.chunk_requests import ChunkRequests, job_part
from services.gateway.detail_fold import BlockDetail, DetailFold
from services.gateway.dispatcher import Dispatcher
from services.gateway.job_kind import FullRun
from services.gateway.jobs import JobManager
from services.gateway.metrics import GatewayMetrics
from services.gateway.planner import Chunk, Plan
from services.valuation.arrays import F64
from services.valuation.blocks import BLOCK_SIZE, block_count
from services.valuation.interface.declaration import Outputs
from services.valuation.interface.parser import interface_of
from services.valuation.interface.records import term_life_rules

#: Most scenarios one detail request may name (a row's values: outputs × scenarios doubles).
MAX_DETAIL_SCENARIOS: Final = 1024
#: Most scenarios one cash-flow request may name besides the mean (a block's cash flows and the
#: answer hold outputs × scenarios × months doubles).
MAX_CASH_FLOW_SCENARIOS: Final = 32
#: Bytes of detail one chunk asks of an engine (chunks of few blocks keep the window small).
CHUNK_DETAIL_BYTES: Final = 8 << 20
#: Most blocks in one detail chunk.
MAX_CHUNK_BLOCKS: Final = 64
#: Months a block's cash flows are sized for before they are known (as the engine sizes them).
SIZING_MONTHS: Final = 1200
#: Bytes of values one PolicyRows message carries at most.
ROWS_MESSAGE_BYTES: Final = 1 << 20
#: Seconds between two progress messages of a stream.
PROGRESS_SECONDS: Final = 1.0


@dataclass(frozen=True)
class FinishedJob:
    """A succeeded full job as its detail is recomputed: its record, scenarios, rows and outputs."""

    job: job_pb2.Job
    scenario_count: int
    rows: int
    blocks: int
    outputs: Outputs
    key_column: str


def chosen_scenarios(asked: Sequence[int], scenario_count: int, *, limit: int) -> list[int]:
    """The asked scenarios, ascending; INVALID_ARGUMENT for one out of range, a repeat or too many."""
    if len(set(asked)) != len(asked):
        raise InvalidArgument(f"scenarios must be distinct, got {list(asked)}")
    if len(asked) > limit:
        raise InvalidArgument(f"at most {limit} scenarios at once, got {len(asked)}")
    bad = [s for s in asked if not 0 <= s < scenario_count]
    if bad:
        raise InvalidArgument(f"scenario {bad[0]} is out of range: the job has scenarios 0..{scenario_count - 1}")
    return sorted(int(s) for s in asked)


def detail_window(scenarios: Sequence[int], scenario_count: int, *, every: bool = False) -> tuple[int, int]:
    """(first, count) of the scenarios the engines run for ``scenarios`` (ascending): [min, max],
    or all ``scenario_count`` when ``every`` (a mean over scenarios) or none is chosen — as the
    engine derives it from the DetailRequest (chunk_detail.DetailAsk.run_window)."""
    if every or not scenarios:
        return 0, scenario_count
    return scenarios[0], scenarios[-1] - scenarios[0] + 1


def block_span(first_block: int, count: int, blocks: int) -> tuple[int, int]:
    """(first, count) of the asked blocks; count 0 means through the last block."""
    if first_block < 0 or count < 0:
        raise InvalidArgument(f"first_block and block_count must be ≥ 0, got {first_block} and {count}")
    if first_block >= blocks:
        raise InvalidArgument(f"first_block {first_block} is past the job's last block ({blocks - 1})")
    count = count or blocks - first_block
    if first_block + count > blocks:
        raise InvalidArgument(
            f"blocks [{first_block}, {first_block + count}) run past the job's last block ({blocks - 1})"
        )
    return first_block, count


def detail_plan(first: int, count: int, rows: int, *, chunk_blocks: int) -> Plan:
    """Chunks of ``chunk_blocks`` blocks over [first, first + count)."""
    chunks = tuple(
        Chunk(i, b, min(chunk_blocks, first + count - b))
        for i, b in enumerate(range(first, first + count, chunk_blocks))
    )
    return Plan(rows=rows, blocks_total=block_count(rows), chunk_blocks=chunk_blocks, chunks=chunks)


def policy_rows(block: BlockDetail, budget: int = ROWS_MESSAGE_BYTES) -> list[job_service_pb2.PolicyRows]:
    """A ready block's rows as PolicyRows messages of at most ``budget`` bytes of values."""
    rows = block.values.shape[0]
    per_row = max(1, block.values[0].size if rows else 1)
    step = max(1, budget // (8 * per_row))
    return [
        job_service_pb2.PolicyRows(
            first_row=block.first_row + r0,
            row_count=min(rows, r0 + step) - r0,
            policy_ids=block.policy_ids[r0 : r0 + step],
            values=block.values[r0 : r0 + step].ravel().tolist(),
        )
        for r0 in range(0, rows, step)
    ]


class DetailService:
    """GetJobDetail and GetJobCashFlows over ``manager``'s jobs, store, packages and engine pool
    (borrowed: the gateway's wiring owns and closes them)."""

    def __init__(self, manager: JobManager, metrics: GatewayMetrics) -> None:
        self.manager, self.metrics = manager, metrics

    async def _finished(self, job_id: str) -> FinishedJob:
        job = self.manager.get(job_id, with_vector=False)  # NOT_FOUND for another tenant's job
        state = job_pb2.JobState.Name(job.state).removeprefix("JOB_STATE_").lower()
        if job.state != job_pb2.JOB_STATE_SUCCEEDED:
            raise FailedPrecondition(f"job {job_id} is {state}: detail is recomputed for a succeeded job only")
        if job.result.preview or job.spec.HasField("preview"):
            raise FailedPrecondition(
                f"job {job_id} is a preview (a sample of the policies): detail is recomputed for full runs only"
            )
        tenant = current_principal().tenant
        config = await self.manager.configs.get(job.spec.package_hash, tenant)
        key = interface_of(config).key if "interface" in config else term_life_rules()[0].key
        rows = int(job.result.policy_count)
        return FinishedJob(
            job=job,
            scenario_count=int(job.result.statistics.scenario_count or job.spec.scenarios.count),
            rows=rows,
            blocks=block_count(rows),
            outputs=await self.manager.configs.outputs(job.spec.package_hash, tenant),
            key_column=key or "",
        )

    @contextlib.asynccontextmanager
    async def _recompute(
        self, found: FinishedJob, fold: DetailFold, detail: engine_pb2.DetailRequest, *, block_bytes: int
    ) -> AsyncIterator[Dispatcher]:
        """A dispatcher running the fold's blocks as chunks with ``detail``, while the caller reads."""
        pool = self.manager.pool
        await pool.refresh()
        slots = max(1, pool.total_slots)
        count = fold.end - fold.first
        chunk_blocks = max(1, min(CHUNK_DETAIL_BYTES // max(1, block_bytes), MAX_CHUNK_BLOCKS,
                                  -(-count // (2 * slots))))  # fmt: skip
        config = self.manager.config
        request = job_part(
            found.job,
            dataset_version=found.job.result.dataset_version,
            package_address=config.package_address,
            time_limit_seconds=config.chunk_time_limit_seconds,
        )
        request.detail.CopyFrom(detail)
        plan = detail_plan(fold.first, count, found.rows, chunk_blocks=chunk_blocks)
        dispatcher = Dispatcher(
            pool,
            ChunkRequests(request, FullRun(), plan),
            plan,
            fold,
            config=config.dispatch,
            metrics=self.metrics,
            window_blocks=config.window_chunks_per_slot * slots * chunk_blocks,
            credentials=self.manager.credentials,
            tenant=current_principal().tenant,
            on_detail=fold.add_detail,
        )

        async def run() -> None:
            try:
                await dispatcher.run()
            except Exception as exc:  # noqa: BLE001 - the reader raises it (a JobCannotFinish carries its status)
                fold.fail(exc)

        task = asyncio.get_running_loop().create_task(run(), name=f"detail of {found.job.job_id}")
        try:
            yield dispatcher
        finally:
            await cancel_and_wait(task)

    @staticmethod
    def _progress(found: FinishedJob, fold: DetailFold, dispatcher: Dispatcher, started: float) -> job_pb2.JobProgress:
        rows_done = min(found.rows, fold.folded_blocks * BLOCK_SIZE) - fold.first * BLOCK_SIZE
        stop = min(found.rows, fold.end * BLOCK_SIZE)
        return job_pb2.JobProgress(
            blocks_done=fold.taken,
            blocks_total=fold.end - fold.first,
            policies_done=max(0, rows_done),
            policies_total=stop - fold.first * BLOCK_SIZE,
            engines_active=len(dispatcher.engines_active),
            elapsed_seconds=time.monotonic() - started,
            waiting_seconds=dispatcher.waiting_seconds,
            waiting_reason=dispatcher.waiting_reason,
        )

    async def detail(
        self, request: job_service_pb2.GetJobDetailRequest
    ) -> AsyncIterator[job_service_pb2.GetJobDetailResponse]:
        """GetJobDetail (job_service.proto): a header, then every row in row order, progress between."""
        found = await self._finished(request.job_id)
        scenarios = chosen_scenarios(list(request.scenarios) or [0], found.scenario_count, limit=MAX_DETAIL_SCENARIOS)
        first, count = block_span(int(request.first_block), int(request.block_count), found.blocks)
        outputs = len(found.outputs.names)
        window_first, window = detail_window(scenarios, found.scenario_count)
        fold = DetailFold(first_block=first, block_count=count, rows=found.rows, first_scenario=window_first,
                          run_scenarios=window, outputs=outputs, scenarios=scenarios, row_values=True)  # fmt: skip
        yield job_service_pb2.GetJobDetailResponse(
            header=job_service_pb2.DetailHeader(
                job_id=found.job.job_id,
                outputs=found.outputs.names,
                scenarios=scenarios,
                key_column=found.key_column,
                row_count=min(found.rows, (first + count) * BLOCK_SIZE) - first * BLOCK_SIZE,
                first_block=first,
                block_count=count,
                block_size=BLOCK_SIZE,
                result_hash=found.job.result.result_hash,
            )
        )
        detail = engine_pb2.DetailRequest(scenarios=scenarios, row_values=True)
        started = last = time.monotonic()
        block_bytes = BLOCK_SIZE * outputs * window * 8
        async with self._recompute(found, fold, detail, block_bytes=block_bytes) as dispatcher:
            while not fold.done:
                block = await fold.next_block()
                dispatcher.wake()  # the window moved on
                for rows in policy_rows(block):
                    yield job_service_pb2.GetJobDetailResponse(rows=rows)
                if time.monotonic() - last >= PROGRESS_SECONDS:
                    last = time.monotonic()
                    yield job_service_pb2.GetJobDetailResponse(
                        progress=self._progress(found, fold, dispatcher, started)
                    )
            if count == found.blocks:
                self._check_job(found, fold.total(), scenarios)
            yield job_service_pb2.GetJobDetailResponse(progress=self._progress(found, fold, dispatcher, started))

    def _check_job(self, found: FinishedJob, total: F64, scenarios: Sequence[int]) -> None:
        """INTERNAL unless the recomputed partials, folded in block order, are the job's stored values."""
        stored = self.manager.store.result_values(found.job.job_id)
        if stored is None:
            raise Internal(f"job {found.job.job_id} has no stored values to check its detail against")
        names = found.outputs.names
        # a result recorded before outputs holds the primary's values alone
        checks = list(enumerate(stored)) if stored.shape[0] == len(names) else [(found.outputs.primary, stored[0])]
        for k, values in checks:
            job_values, mine = values[list(scenarios)], total[k]
            differ = np.flatnonzero(mine.view(np.uint64) != job_values.view(np.uint64))
            if differ.size:
                i = int(differ[0])
                raise Internal(
                    f"job {found.job.job_id}: the recomputed blocks fold to {mine[i]!r} for {names[k]} under scenario "
                    f"{scenarios[i]}, the job's value is {job_values[i]!r}; the detail does not reproduce the job"
                )

    async def cash_flows(
        self, request: job_service_pb2.GetJobCashFlowsRequest
    ) -> AsyncIterator[job_service_pb2.GetJobCashFlowsResponse]:
        """GetJobCashFlows (job_service.proto): progress, then the profiles."""
        found = await self._finished(request.job_id)
        scenarios = chosen_scenarios(list(request.scenarios), found.scenario_count, limit=MAX_CASH_FLOW_SCENARIOS)
        if not scenarios and not request.mean:
            raise InvalidArgument("name at least one scenario, or ask for the mean over scenarios")
        n = found.scenario_count
        window_first, window = detail_window(scenarios, n, every=request.mean)
        outputs = len(found.outputs.names)
        fold = DetailFold(first_block=0, block_count=found.blocks, rows=found.rows, first_scenario=window_first,
                          run_scenarios=window, outputs=outputs, scenarios=scenarios, row_values=False,
                          cash_flows=bool(scenarios), cash_flow_sums=request.mean)  # fmt: skip
        detail = engine_pb2.DetailRequest(scenarios=scenarios, cash_flows=bool(scenarios), cash_flow_sums=request.mean)
        profile = CashFlowTotals(len(scenarios))
        started = last = time.monotonic()
        block_bytes = outputs * max(1, len(scenarios) + int(request.mean)) * SIZING_MONTHS * 8
        async with self._recompute(found, fold, detail, block_bytes=block_bytes) as dispatcher:
            while not fold.done:
                block = await fold.next_block()
                dispatcher.wake()
                if block.cash_flows is None:
                    raise Internal(f"block {block.block}: no cash flows")
                profile.add(block.cash_flows.outputs, block.cash_flows.values, block.cash_flows.sums)
                if time.monotonic() - last >= PROGRESS_SECONDS:
                    last = time.monotonic()
                    yield job_service_pb2.GetJobCashFlowsResponse(
                        progress=self._progress(found, fold, dispatcher, started)
                    )
        yield job_service_pb2.GetJobCashFlowsResponse(
            cash_flows=profile.message(found.job.job_id, scenarios, n, request.mean)
        )


class CashFlowTotals:
    """Block cash flows folded in block order from +0.0, each block's months padded with zeros to
    the longest seen (a block's rows end earlier: their later months are 0)."""

    def __init__(self, scenarios: int) -> None:
        self.scenarios = scenarios
        self.outputs: tuple[str, ...] = ()
        self.values: F64 = np.zeros((0, scenarios, 0))
        self.sums: F64 = np.zeros((0, 0))

    def add(self, outputs: tuple[str, ...], values: F64, sums: F64) -> None:
        if not self.outputs:
            self.outputs = outputs
            self.values = np.zeros((len(outputs), self.scenarios, 0))
            self.sums = np.zeros((len(outputs), 0))
        elif outputs != self.outputs:
            raise Internal(f"a block's monthly outputs {outputs} differ from {self.outputs}")
        months = max(values.shape[-1] if values.size else 0, sums.shape[-1] if sums.size else 0)
        if months > self.values.shape[-1]:
            self.values = np.pad(self.values, ((0, 0), (0, 0), (0, months - self.values.shape[-1])))
            self.sums = np.pad(self.sums, ((0, 0), (0, months - self.sums.shape[-1])))
        if values.size:
            self.values[:, :, : values.shape[-1]] += values
        if sums.size:
            self.sums[:, : sums.shape[-1]] += sums

    def message(
        self, job_id: str, scenarios: Sequence[int], scenario_count: int, mean: bool
    ) -> job_service_pb2.CashFlows:
        months = self.values.shape[-1]
        profiles = []
        for m, name in enumerate(self.outputs):
            profiles += [
                job_service_pb2.CashFlowProfile(name=name, scenario=s, values=self.values[m, i].tolist())
                for i, s in enumerate(scenarios)
            ]
            if mean:
                profiles.append(
                    job_service_pb2.CashFlowProfile(
                        name=name, scenario=-1, values=(self.sums[m] / scenario_count).tolist()
                    )
                )
        return job_service_pb2.CashFlows(
            job_id=job_id, months=months, outputs=self.outputs, profiles=profiles, scenario_count=scenario_count
        )
