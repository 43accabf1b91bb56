"""Test doubles for the gateway's unit tests: an in-process fake engine stub and pool.

`FakeEngineStub.RunChunk` answers like EngineService.RunChunk (progress, one BlockPartial
per block, summary) from a fixed table of block partials, and can be told to fail; it is
not the real engine, only a stand-in for dispatcher and job-manager logic tests. A table is
f64 [blocks][K][N], the K outputs in the package's declared order: `FakePackages` serves the
reference package (term life's five, net_cf primary: `OUTPUTS`) or one whose declaration
declares other outputs (`declaring`). `fake_manager` and `fake_dispatcher` wire a real JobManager
and a real Dispatcher to these doubles.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from grpc import aio
from prometheus_client import CollectorRegistry

from livecalc.engine.v1 import engine_pb2, engine_service_pb2
from services.gateway.chunk_requests import ChunkRequests
from services.gateway.config import DispatchConfig, JobConfig
from services.gateway.dispatcher import Dispatcher
from services.gateway.engines import Engine, block_granule, median_slot_speed
from services.gateway.fold import JobFold
from services.gateway.inputs import DatasetInfo, Declaration, Validation
from services.gateway.job_kind import FULL_RUN
from services.gateway.jobs import JobManager
from services.gateway.metrics import GatewayMetrics
from services.gateway.planner import plan
from services.gateway.speeds import SpeedShape
from services.gateway.store import JobStore
from services.valuation.blocks import BLOCK_SIZE, block_rows
from services.valuation.interface.declaration import Outputs
from services.valuation.packages.archive import PackageLimits
from tests.gateway.archives import consistent, reference_archive, reference_parts

#: The reference package's outputs (term life's five in its declared order, net_cf primary).
OUTPUTS = Outputs(("premiums", "claims", "expenses", "commissions", "net_cf"), 4)
PRIMARY = OUTPUTS.primary
#: The one package hash `fake_manager`'s packages know.
HASH = "ab" * 32


def partial_table(blocks: int, scenarios: int, seed: int = 1, outputs: int = len(OUTPUTS.names)) -> np.ndarray:
    """f64 [blocks][K][N] of made-up partials (K outputs, the reference package's five by default)."""
    rng = np.random.default_rng(seed)
    return rng.normal(1000.0, 100.0, size=(blocks, outputs, scenarios))


def block_partial(
    table: np.ndarray, block: int, rows: int, first: int = 0, n: int | None = None
) -> engine_pb2.BlockPartial:
    """Block ``block`` of ``table`` (scenarios [first, first + n)) as an engine sends it."""
    n = table.shape[2] - first if n is None else n
    start, stop = block_rows(block, rows)
    return engine_pb2.BlockPartial(
        block_index=block,
        first_row=start,
        row_count=stop - start,
        first_scenario=first,
        output_count=table.shape[1],
        values=table[block, :, first : first + n].ravel().tolist(),
    )


class FakeError(aio.AioRpcError):
    def __init__(self, code: grpc.StatusCode, details: str, trailing: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(code, aio.Metadata(), aio.Metadata(*trailing), details=details)


class FakeCall:
    def __init__(self, gen: AsyncIterator[engine_service_pb2.RunChunkResponse]) -> None:
        self._gen = gen
        self.cancelled = False

    def __aiter__(self) -> AsyncIterator[engine_service_pb2.RunChunkResponse]:
        return self._gen

    def cancel(self) -> bool:
        self.cancelled = True
        return True


class FakeEngineStub:
    """RunChunk over `table`; `fail(request, block)` may return an error to raise before that block,
    `refuse(request)` one to raise before the call's first message (an engine that is not there).
    A sample (a preview) is answered with one partial per sample group, group g's being block
    g mod blocks of the table (block 0 alone when the request asks for no groups)."""

    def __init__(
        self,
        table: np.ndarray,
        rows: int,
        *,
        fail: Callable[[engine_service_pb2.RunChunkRequest, int], aio.AioRpcError | None] | None = None,
        delay: float = 0.0,
        piece: int = 0,
        refuse: Callable[[engine_service_pb2.RunChunkRequest], aio.AioRpcError | None] | None = None,
    ) -> None:
        self.table, self.rows, self.fail, self.delay, self.piece = table, rows, fail, delay, piece
        self.refuse = refuse
        self.requests: list[engine_service_pb2.RunChunkRequest] = []
        #: The metadata of each call (the service token and the tenant it acts for, when auth is on).
        self.metadata: list[Any] = []
        self.in_flight = 0
        self.max_in_flight = 0

    def RunChunk(
        self, request: engine_service_pb2.RunChunkRequest, timeout: float | None = None, metadata: Any = None
    ) -> FakeCall:
        self.requests.append(request)
        self.metadata.append(metadata)
        return FakeCall(self._run(request))

    async def _run(
        self, request: engine_service_pb2.RunChunkRequest
    ) -> AsyncIterator[engine_service_pb2.RunChunkResponse]:
        if self.refuse is not None and (err := self.refuse(request)) is not None:
            raise err
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if request.WhichOneof("selection") == "sample":
                n, q = request.sample.n, request.sample.group_rows or request.sample.n
                groups = -(-n // q)
                for g in range(groups):
                    await asyncio.sleep(self.delay)
                    partial = block_partial(self.table, g % self.table.shape[0], BLOCK_SIZE)
                    partial.block_index, partial.first_row, partial.row_count = g, g * q, min(q, n - g * q)
                    yield engine_service_pb2.RunChunkResponse(partial=partial)
                yield engine_service_pb2.RunChunkResponse(summary=engine_pb2.ChunkSummary(blocks=groups, steps=10))
                return
            first, count = request.blocks.first_block, request.blocks.block_count
            yield engine_service_pb2.RunChunkResponse(progress=engine_pb2.ChunkProgress(blocks_total=count))
            for b in range(first, first + count):
                await asyncio.sleep(self.delay)
                if self.fail is not None and (err := self.fail(request, b)) is not None:
                    raise err
                n = self.table.shape[2]
                step = self.piece or n
                for s0 in range(0, n, step):
                    partial = block_partial(self.table, b, self.rows, s0, min(step, n - s0))
                    yield engine_service_pb2.RunChunkResponse(partial=partial)
            summary = engine_pb2.ChunkSummary(blocks=count, steps=10 * count, elapsed_seconds=0.5 * count)
            yield engine_service_pb2.RunChunkResponse(summary=summary)
        finally:
            self.in_flight -= 1


def fake_engine(address: str, stub: FakeEngineStub, slots: int = 1) -> Engine:
    return Engine(address=address, channel=None, stub=stub, slots=slots, semaphore=asyncio.Semaphore(slots))  # type: ignore[arg-type]


class FakePool:
    def __init__(self, engines: list[Engine]) -> None:
        self._engines = engines

    async def refresh(self, *, force: bool = False) -> list[Engine]:
        return list(self._engines)

    def engines(self) -> list[Engine]:
        return list(self._engines)

    @property
    def total_slots(self) -> int:
        return sum(e.slots for e in self._engines)

    def block_granule(self) -> int:
        return block_granule(self._engines)

    def slot_steps_per_second(self, shape: SpeedShape) -> float:
        return median_slot_speed(self._engines, shape)

    async def close(self) -> None:
        pass


class FakeDatasets:
    """One dataset 'pol'; `validation` is its verdict against any declaration (valid by default)."""

    def __init__(self, rows: int, version: str = "v1", validation: Validation | None = None) -> None:
        self.rows, self.version = rows, version
        self.validation = validation or Validation("pol", version, 0)
        self.validations = 0

    async def get(self, dataset_id: str, tenant: str = "") -> DatasetInfo:
        from services.common.errors import NotFound

        if dataset_id != "pol":
            raise NotFound(f"dataset {dataset_id!r} does not exist")
        return DatasetInfo(dataset_id, self.version, self.rows)

    async def validate(self, dataset_id: str, declaration: Declaration, tenant: str = "") -> Validation:
        await self.get(dataset_id, tenant)
        self.validations += 1
        return self.validation


def declaring(outputs: Outputs) -> bytes:
    """The reference package with its declaration's outputs replaced by ``outputs``."""
    config, files = reference_parts()
    config["interface"]["outputs"] = [
        {"name": name, **({"primary": True} if k == outputs.primary else {})} for k, name in enumerate(outputs.names)
    ]
    return consistent(config, files)


class FakePackages:
    """PackageStore.get for one known hash; its download is ``archive`` (the reference package's
    by default)."""

    def __init__(self, known: str, archive: bytes | None = None) -> None:
        self.known = known
        self.archive = archive
        self.limits = PackageLimits()

    async def get(self, package_hash: str, tenant: str = "") -> Any:
        from services.common.errors import NotFound

        if package_hash != self.known:
            raise NotFound(f"package {package_hash} is not stored")
        return object()

    async def download(self, package_hash: str, tenant: str = "") -> AsyncIterator[tuple[int, str, int, bytes]]:
        await self.get(package_hash, tenant)
        archive = self.archive if self.archive is not None else reference_archive()
        yield len(archive), "", 0, archive


ROWS_3_BLOCKS = 3 * BLOCK_SIZE - 10


def fake_manager(
    directory: Path,
    engines: list[Engine],
    rows: int,
    *,
    validation: Validation | None = None,
    archive: bytes | None = None,
    store: JobStore | None = None,
    **config: Any,
) -> JobManager:
    """A real JobManager over fake `engines` (`fake_engine`'s), dataset 'pol' of `rows` rows
    (`FakeDatasets`, its verdict `validation`) and package `HASH` (`FakePackages`, downloading
    `archive`); its store `store`, or a new one at DIR/jobs.sqlite3; `config` are JobConfig's
    fields but package_address ("gw"). The caller closes the manager and its store."""
    return JobManager(
        store if store is not None else JobStore(directory / "jobs.sqlite3"),
        FakePool(engines),  # type: ignore[arg-type]
        FakePackages(HASH, archive),  # type: ignore[arg-type]
        datasets=FakeDatasets(rows, validation=validation),
        metrics=GatewayMetrics.create(CollectorRegistry()),
        config=JobConfig(package_address="gw", **config),
    )


def fake_dispatcher(
    engines: list[Engine],
    rows: int,
    scenarios: int,
    *,
    slots: int,
    window: int,
    chunk_blocks: int = 0,
    **config: Any,
) -> tuple[Dispatcher, JobFold]:
    """A real Dispatcher of a full run of `rows` rows and `scenarios` scenarios over fake
    `engines`, planned for `slots` slots (`chunk_blocks` as `plan` takes it) with `window`
    blocks ahead, and the JobFold it folds into; `config` are DispatchConfig's fields."""
    job_plan = plan(rows, slots=slots, scenarios=scenarios, chunk_blocks=chunk_blocks)
    fold = JobFold(rows, job_plan.blocks_total, scenarios, outputs=5)
    dispatcher = Dispatcher(
        FakePool(engines),  # type: ignore[arg-type]
        ChunkRequests(
            engine_service_pb2.RunChunkRequest(
                job_id="j", package_hash="p", scenarios=engine_pb2.ScenarioSpec(count=scenarios)
            ),
            FULL_RUN,
            job_plan,
        ),
        job_plan,
        fold,
        config=DispatchConfig(**config),
        metrics=GatewayMetrics.create(CollectorRegistry()),
        window_blocks=window,
    )
    return dispatcher, fold
