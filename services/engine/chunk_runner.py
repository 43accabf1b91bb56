"""One chunk of a job on this engine: rows in, exact block partials out, as a stream of events.

A chunk is a run of policy blocks (B = 1024 dataset rows each; docs/model.md's reference order) or a
seeded sample (previews) in groups of consecutive sample positions (engine.proto
SampleSelection: the sample's blocks, or smaller groups of a run each), one partial per group.
Its blocks are computed in *pieces* of a few blocks (more when the job has fewer scenarios than a
kernel's 16 lanes: `piece_blocks_for`), each one pipeline run (esg → term_life, or whatever the
package declares) on the engine's `WasmPool`:

- a reader task fetches the rows of the next piece from the data service while the current
  piece computes, and the piece after while it checks them (a queue of one piece: memory stays
  bounded by four pieces);
- rows become `Records` of the package's declaration (every declared rule checked; violations
  name *dataset* row numbers);
- a piece whose partials are not all finite is an error naming the row that made them so
  (`non_finite.locate`, on the error path only), never a result of inf and NaN;
- a job with a scenario set (`ChunkWork.scenario_set`) gives its arrays to every piece as
  scenario data, the generator not run, once the set is seen to cover the piece's horizons;
- after each piece the chunk yields one `BlockPartial` per block, then a progress event;
  a chunk that asks for detail (`ChunkWork.detail`, chunk_detail.py) yields each block's
  `RowValues` and `BlockCashFlows` just before its partial, from pieces of few blocks; it runs
  only the detail's window of scenarios (`ChunkWork.first_scenario`), and its partials cover
  the window (`BlockPartial.first_scenario` from the window's first);
  block partials do not depend on how blocks are grouped into pieces, so the bits are those
  of one run over the whole dataset. A partial carries every output the model declares, in
  declared order (`BlockPartial.values`, f64 [K][n]; K from the pipeline's partials).

Pipeline runs execute in a worker thread. When the caller goes away (the handler's
`asyncio.CancelledError`), the run's `RunControl` is cancelled and epoch interruption stops
the WASM in flight within a tick (docs/model-abi.md); the thread then ends on its own.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import operator
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from livecalc.engine.v1 import engine_pb2, engine_service_pb2
from services.common.errors import Internal, InvalidArgument
from services.engine.chunk_detail import DetailAsk, cash_flow_message, detail_piece_blocks, row_value_messages
from services.engine.generated_scenarios import GeneratedScenarios
from services.engine.metrics import EngineMetrics
from services.engine.non_finite import is_finite, locate
from services.engine.package_loader import LoadedPackage
from services.engine.pipeline import PipelineResult, PipelineRunner, RunDetail, RunInputs
from services.engine.row_reader import Sample
from services.engine.scenario_sets import ScenarioSet
from services.engine.workers import RunControl, WasmPool
from services.valuation.arrays import F64
from services.valuation.blocks import BLOCK_SIZE, fold
from services.valuation.interface.records import Records
from services.valuation.scenarios import ScenarioParams

log = logging.getLogger(__name__)

T = TypeVar("T")
MESSAGE_BUDGET_BYTES = 3 << 20
"""A partial message carries at most this many bytes of output values (the limit is 4 MiB)."""
LANES = 16
"""Scenarios a kernel computes side by side: a piece's work is counted in blocks of this many."""
MAX_PIECE_BLOCKS = 256
"""Most blocks a few-scenario piece grows to (262,144 rows; two pieces are in memory at a time)."""


def piece_blocks_for(configured: int, scenarios: int) -> int:
    """Blocks a piece holds: ``configured`` at 16 scenarios or more; with fewer, as many more (up to
    `MAX_PIECE_BLOCKS`) as keep its work, blocks × scenarios, at ``configured`` blocks of 16. A
    1-scenario job's pieces of a few blocks would each pay a ReadRows call, a Parquet row group
    decoded for a slice of it, and a pipeline run, for a few milliseconds of model work."""
    grown = configured * -(-LANES // max(1, scenarios))
    return max(configured, min(grown, MAX_PIECE_BLOCKS))


def piece_ranges(first: int, last: int, step: int, *, lead: int = 0) -> list[tuple[int, int]]:
    """Blocks [first, last) in pieces of ``step``; with ``lead`` > 0 the first piece holds only
    ``lead`` blocks (one per worker thread). The engine does so for a job's first chunk (the one
    from block 0): its first partials, and so the client's first progress with work done, then
    come after one block's time rather than a whole piece's (at 1,000 scenarios a piece of 8
    blocks on 2 threads is ~0.35 s), for one more pipeline run in the job."""
    if 0 < lead < step and last - first > lead:
        return [(first, first + lead), *piece_ranges(first + lead, last, step)]
    return [(b, min(b + step, last)) for b in range(first, last, step)]


@dataclass(frozen=True)
class ChunkWork:
    """What a chunk computes: blocks [first_block, first_block + block_count), or a sample."""

    dataset_id: str
    dataset_version: str
    scenarios: ScenarioParams
    first_block: int = 0
    block_count: int = 0
    sample_n: int = 0
    sample_seed: int = 0
    sample_group_rows: int = 0
    """Policies per sample group (1..B); 0: the sample's blocks folded into one partial."""
    scenario_set: ScenarioSet | None = None
    """The job's scenario inputs as data (they replace the generator), or None."""
    detail: DetailAsk | None = None
    """Detail to answer besides the partials (blocks only); ``scenarios`` then end where its window does."""
    job_scenarios: int = 0
    """The job's scenario count, when ``detail`` runs fewer (what cash-flow sums are over)."""

    @property
    def is_sample(self) -> bool:
        return self.sample_n > 0

    @property
    def first_scenario(self) -> int:
        """The first scenario the chunk runs: a detail's window starts at its lowest scenario (the
        scenarios below it are not run); 0 otherwise."""
        return 0 if self.detail is None else self.detail.run_window(self.scenarios.count)[0]

    @property
    def run_scenarios(self) -> int:
        """Scenarios the chunk runs: [first_scenario, scenarios.count)."""
        return self.scenarios.count - self.first_scenario

    @property
    def sample_groups(self) -> int:
        """Groups of a grouped sample (0 for blocks, or a sample folded into one partial)."""
        q = self.sample_group_rows
        return -(-self.sample_n // q) if self.is_sample and q > 0 else 0

    def sample_pieces(self) -> list[tuple[int, int]]:
        """A sample's pieces as group ranges [g0, g1): every group in one run when groups are
        blocks, else a run per group (a run's blocks hold B rows: no smaller group fits one)."""
        groups = self.sample_groups
        if groups == 0:
            return [(0, 1)]
        if self.sample_group_rows == BLOCK_SIZE:
            return [(0, groups)]
        return [(g, g + 1) for g in range(groups)]


@dataclass
class ChunkStats:
    """Figures of a finished chunk (for the summary and the engine's measured speed)."""

    blocks: int = 0
    policies: int = 0
    steps: int = 0
    read_wait_seconds: float = 0.0


@dataclass(frozen=True)
class _Piece:
    first_block: int
    first_row: int
    records: Records
    dataset_rows: npt.NDArray[np.int64] | None = None  # a sample's dataset row numbers

    def row_of(self, r: int) -> int:
        """The dataset row of the piece's row r."""
        return int(self.dataset_rows[r]) if self.dataset_rows is not None else self.first_row + r


class RowSource(Protocol):
    """Reads a chunk's rows (`services.engine.row_reader.RowReader`, or a fake in tests)."""

    async def read(
        self, dataset_id: str, version: str, start_row: int, end_row: int, *, columns: Sequence[str] = ()
    ) -> pa.Table:
        """Rows [start_row, end_row): only ``columns`` (those the dataset has) when some are named."""
        ...

    async def sample(self, dataset_id: str, version: str, n: int, seed: int, *, columns: Sequence[str] = ()) -> Sample:
        """A seeded sample of n rows: only ``columns`` (those the dataset has) when some are named."""
        ...


def records_at(table: pa.Table, package: LoadedPackage, row_of: Callable[[int], int]) -> Records:
    """The checked records of ``table`` under the package's declaration (coverage of its tables
    included); violations name dataset rows (``row_of``)."""
    return Records.from_table(table, package.interface, package.assets.bounds, row_of)


def block_partials(
    block: int,
    first_row: int,
    rows: int,
    values: F64,
    budget: int = MESSAGE_BUDGET_BYTES,
    *,
    first_scenario: int = 0,
) -> list[engine_pb2.BlockPartial]:
    """One block's partial (values f64 [K][N]: K outputs in declared order, scenarios from
    ``first_scenario``) as one message, or as several scenario ranges when the values would not
    fit ``budget`` bytes."""
    outputs, n = values.shape
    per_message = max(1, budget // (8 * max(1, outputs)))
    out = []
    for s0 in range(0, n, per_message):
        s1 = min(n, s0 + per_message)
        out.append(
            engine_pb2.BlockPartial(
                block_index=block,
                first_row=first_row,
                row_count=rows,
                first_scenario=first_scenario + s0,
                output_count=outputs,
                values=values[:, s0:s1].ravel().tolist(),
            )
        )
    return out


def steps_of(records: Records, scenarios: int) -> int:
    """Policy·scenario·month projection steps of a run (each row's declared horizon)."""
    return int(records.horizons.sum()) * scenarios


class ChunkRunner:
    """Runs chunks on one `WasmPool`; ``gate`` orders whole chunks' compute (first come, first
    computed) so a chunk that arrived first also finishes first, while later ones read ahead."""

    def __init__(
        self,
        pool: WasmPool,
        metrics: EngineMetrics,
        *,
        piece_blocks: int,
        on_speed: Callable[[int, float], None] | None = None,
    ) -> None:
        self.pool = pool
        self.metrics = metrics
        self.piece_blocks = max(1, piece_blocks)
        self._gate = asyncio.Lock()
        self._on_speed = on_speed
        #: Scenarios the generator made for a run, given to the next runs of the same job's scenarios.
        self.generated = GeneratedScenarios()

    def _keep_generated(self, package: LoadedPackage, work: ChunkWork, result: PipelineResult) -> None:
        names = [s.name for s in package.interface.scenario_inputs]
        made = {n: result.buffers[n] for n in names if n in result.buffers}
        if names and len(made) == len(names):
            self.generated.keep(package.package_hash, work.scenarios, made)

    async def run(
        self,
        package: LoadedPackage,
        work: ChunkWork,
        rows: RowSource,
        dataset_rows: int,
        *,
        control: RunControl,
        stats: ChunkStats,
    ) -> AsyncIterator[engine_service_pb2.RunChunkResponse]:
        """Events of the chunk: progress, partials (block order), progress … (the caller adds the summary)."""
        if work.is_sample:
            pieces: Sequence[tuple[int, int]] = work.sample_pieces()
            total_blocks = pieces[-1][1]
        else:
            first, count = work.first_block, work.block_count
            if first < 0 or count < 1 or first * BLOCK_SIZE >= dataset_rows:
                raise InvalidArgument(
                    f"blocks [{first}, {first + count}) are outside dataset {work.dataset_id!r} "
                    f"({dataset_rows} rows, {-(-dataset_rows // BLOCK_SIZE)} blocks)"
                )
            last = min(first + count, -(-dataset_rows // BLOCK_SIZE))
            if last != first + count:
                raise InvalidArgument(
                    f"blocks [{first}, {first + count}) run past the last block ({last - 1}) of dataset "
                    f"{work.dataset_id!r}"
                )
            step = piece_blocks_for(self.piece_blocks, work.run_scenarios)
            if work.detail is not None:
                outputs = len(package.interface.outputs)
                step = detail_piece_blocks(work.detail, outputs=outputs, run_scenarios=work.run_scenarios, usual=step)
            lead = self.pool.threads if first == 0 and work.detail is None else 0
            pieces = piece_ranges(first, last, step, lead=lead)
            total_blocks = count
        yield _progress(0, total_blocks, 0)
        queue: asyncio.Queue[_Piece | BaseException] = asyncio.Queue(maxsize=1)
        reading = self._read_ahead(package, work, pieces=pieces, rows=rows, dataset_rows=dataset_rows, queue=queue)
        reader = asyncio.ensure_future(reading)
        runner = PipelineRunner(self.pool, package.binaries)
        done_blocks = 0
        try:
            async with self._gate:
                for _ in pieces:
                    waited = time.monotonic()
                    item = await queue.get()
                    stats.read_wait_seconds += time.monotonic() - waited
                    if isinstance(item, BaseException):
                        raise item
                    given = work.scenario_set
                    if given is not None:
                        given.check_covers(item.records, item.row_of)
                    window = slice(work.first_scenario, work.scenarios.count)
                    data = {k: a[window] for k, a in given.arrays.items()} if given else None
                    generating = given is None and work.first_scenario == 0
                    if generating:
                        data = self.generated.get(package.package_hash, work.scenarios, item.records.horizon_months)
                    result, seconds = await self._compute(runner, package, item, work, control=control,
                                                          scenario_data=data)  # fmt: skip
                    if generating and data is None:
                        self._keep_generated(package, work, result)
                    steps = steps_of(item.records, work.run_scenarios)
                    stats.steps += steps
                    stats.policies += len(item.records)
                    self.metrics.steps.inc(steps)
                    if self._on_speed is not None:
                        self._on_speed(steps, seconds)
                    for message in self._messages(package, item, result, work):
                        yield message
                    done_blocks += 1 if work.is_sample and not work.sample_groups else result.partials.shape[0]
                    stats.blocks = done_blocks
                    yield _progress(done_blocks, total_blocks, stats.steps)
        finally:
            reader.cancel()

    def _messages(
        self, package: LoadedPackage, piece: _Piece, result: PipelineResult, work: ChunkWork
    ) -> list[engine_service_pb2.RunChunkResponse]:
        """A piece's partials, each block's detail (when asked) just before its partial."""
        partials = self._partials(piece, result, work)
        if work.detail is None:
            return [engine_service_pb2.RunChunkResponse(partial=p) for p in partials]
        out = []
        for p in partials:
            if p.first_scenario == work.first_scenario:  # a block's detail goes once, before its first partial message
                out += self._detail(package, piece, result, work, p)
            out.append(engine_service_pb2.RunChunkResponse(partial=p))
        return out

    @staticmethod
    def _detail(
        package: LoadedPackage, piece: _Piece, result: PipelineResult, work: ChunkWork, p: engine_pb2.BlockPartial
    ) -> list[engine_service_pb2.RunChunkResponse]:
        """Block ``p``'s RowValues and BlockCashFlows, as ``work.detail`` asks."""
        ask = work.detail
        assert ask is not None
        out = []
        start, count = int(p.first_row) - piece.first_row, int(p.row_count)
        if ask.row_values:
            if result.row_values is None:
                raise Internal("the pipeline answered no row values")
            key = package.interface.key
            ids = piece.records.columns.get(key) if key else None
            names = [str(v) for v in ids[start : start + count].tolist()] if ids is not None else []
            rows = result.row_values[start : start + count]
            messages = row_value_messages(int(p.block_index), int(p.first_row), rows, ask.scenarios,
                                          first_scenario=work.first_scenario, policy_ids=names)  # fmt: skip
            out += [engine_service_pb2.RunChunkResponse(row_values=m) for m in messages]
        if ask.wants_cash_flows:
            if result.cash_flows is None:
                raise Internal("the pipeline answered no cash flows")
            flows = result.cash_flows[int(p.block_index) - piece.first_block]
            total = work.job_scenarios or work.scenarios.count
            message = cash_flow_message(int(p.block_index), result.monthly_outputs, flows, ask, total,
                                        first_scenario=work.first_scenario)  # fmt: skip
            out.append(engine_service_pb2.RunChunkResponse(cash_flows=message))
        return out

    @staticmethod
    def _partials(piece: _Piece, result: PipelineResult, work: ChunkWork) -> list[engine_pb2.BlockPartial]:
        parts = result.partials  # f64 [blocks][K][N], K declared outputs
        if work.is_sample and not work.sample_groups:
            # one partial: the sample's blocks folded in block order (a fixed, reproducible order)
            folded = np.stack([fold(parts[:, i, :]) for i in range(parts.shape[1])])
            return block_partials(0, 0, len(piece.records), folded)
        # blocks of the dataset, or groups of a sample (its blocks, or one group a run)
        out = []
        n_rows = len(piece.records)
        for i in range(parts.shape[0]):
            rows = min(BLOCK_SIZE, n_rows - i * BLOCK_SIZE)
            out += block_partials(piece.first_block + i, piece.first_row + i * BLOCK_SIZE, rows, parts[i],
                                  first_scenario=work.first_scenario)  # fmt: skip
        return out

    async def _read_ahead(
        self,
        package: LoadedPackage,
        work: ChunkWork,
        *,
        pieces: Sequence[tuple[int, int]],
        rows: RowSource,
        dataset_rows: int,
        queue: asyncio.Queue[_Piece | BaseException],
    ) -> None:
        # the declared columns only: a dataset may carry columns no model reads (notes, spec ids)
        declared = [c.name for c in package.interface.columns]
        try:
            if work.is_sample:
                sample = await rows.sample(work.dataset_id, work.dataset_version, work.sample_n, work.sample_seed,
                                           columns=declared)  # fmt: skip
                numbers = sample.rows
                records = await asyncio.to_thread(records_at, sample.table, package, lambda r: int(numbers[r]))
                if not work.sample_groups:
                    await queue.put(_Piece(0, 0, records, numbers))
                    return
                q = work.sample_group_rows
                for g0, g1 in pieces:
                    at = slice(g0 * q, min(len(records), g1 * q))
                    await queue.put(_Piece(g0, g0 * q, records.take(at), numbers[at]))
                return
            await self._read_blocks(
                package, work, pieces=pieces, rows=rows, columns=declared, dataset_rows=dataset_rows, queue=queue
            )
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            await queue.put(exc)

    @staticmethod
    async def _read_blocks(
        package: LoadedPackage,
        work: ChunkWork,
        *,
        pieces: Sequence[tuple[int, int]],
        rows: RowSource,
        columns: Sequence[str],
        dataset_rows: int,
        queue: asyncio.Queue[_Piece | BaseException],
    ) -> None:
        """Each piece's rows (``columns`` of them) read and checked, in order; the next piece's read is in flight while
        this one's rows are checked (the data service serves while the engine validates)."""
        spans = [(b0, b0 * BLOCK_SIZE, min(b1 * BLOCK_SIZE, dataset_rows)) for b0, b1 in pieces]
        if not spans:
            return

        def read(i: int) -> asyncio.Future[pa.Table]:
            _, start, end = spans[i]
            return asyncio.ensure_future(rows.read(work.dataset_id, work.dataset_version, start, end, columns=columns))

        ahead = read(0)
        try:
            for i, (b0, start, _) in enumerate(spans):
                table = await ahead
                if i + 1 < len(spans):
                    ahead = read(i + 1)
                records = await asyncio.to_thread(records_at, table, package, functools.partial(operator.add, start))
                await queue.put(_Piece(b0, start, records))
        finally:
            if not ahead.done():
                ahead.cancel()
            ahead.add_done_callback(_consume)

    async def _compute(
        self, runner: PipelineRunner, package: LoadedPackage, piece: _Piece, chunk: ChunkWork, *,
        control: RunControl, scenario_data: Mapping[str, F64] | None = None,
    ) -> tuple[PipelineResult, float]:  # fmt: skip
        row_of = piece.row_of
        detail = chunk.detail

        def inputs_of(records: Records) -> RunInputs:
            return RunInputs(package.interface, records, package.assets, chunk.scenarios, scenario_data or {},
                             first_row=row_of(0), first_scenario=chunk.first_scenario)  # fmt: skip

        def rerun(records: Records) -> F64:
            return runner.run(package.nodes, inputs_of(records), control=control).partials

        def work() -> tuple[PipelineResult, float]:
            self.metrics.wasm_calls_in_flight.inc()
            started = time.monotonic()
            try:
                asked = None if detail is None else RunDetail(detail.row_values, detail.wants_cash_flows)
                result = runner.run(package.nodes, inputs_of(piece.records), control=control, detail=asked)
                if not is_finite(result.partials):
                    raise locate(piece.records, result.partials, rerun, row_of, result.outputs.names)
                return result, time.monotonic() - started
            finally:
                self.metrics.wasm_calls_in_flight.dec()
                self.metrics.last_wasm_end.set(time.time())

        return await in_thread(work, control)


async def in_thread(fn: Callable[[], T], control: RunControl) -> T:
    """Run ``fn`` in a worker thread; if the awaiting task is cancelled, cancel ``control`` (the
    WASM stops within an epoch tick) and re-raise at once, leaving the thread to end on its own."""
    future = asyncio.get_running_loop().run_in_executor(None, fn)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        control.cancel.set()
        future.add_done_callback(_consume)
        raise


def _consume(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # retrieved, so asyncio does not log "exception was never retrieved"


def _progress(done: int, total: int, steps: int) -> engine_service_pb2.RunChunkResponse:
    return engine_service_pb2.RunChunkResponse(
        progress=engine_pb2.ChunkProgress(blocks_done=done, blocks_total=total, steps_done=steps)
    )
