"""DataService over the caller's tenant's Catalog (tenants.py): request checks, memory
admission, answers, message sizes.

Handlers raise the typed errors of services.common.errors; the server interceptor maps
them to gRPC statuses. Every request that reads rows first reserves its estimated peak
memory from the service's MemoryBudget (see limits.py). Every streamed ReadRows message
stays under MAX_MESSAGE_BYTES and `max_message_rows`, splitting a batch when the rows turn
out wider than estimated.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from typing import Any, Final

import anyio
import anyio.to_thread
import pyarrow as pa

from livecalc.data.v1 import data_service_pb2, data_service_pb2_grpc
from services.common.errors import FailedPrecondition, InvalidArgument, LivecalcError, ResourceExhausted
from services.data.catalog import Catalog, DatasetEntry
from services.data.ids import validate_dataset_id
from services.data.limits import DataLimits, MemoryBudget, mib
from services.data.metrics import DataMetrics
from services.data.reading import SPAN_BYTES, default_batch_rows, fetch_rows, iter_range
from services.data.sampling import SampleCache, add_rows, sample_indices
from services.data.tenants import TenantCatalogs
from services.data.upload import receive_upload
from services.data.validation import judge_of, memory_estimate, validate

#: Largest message this service sends; the gRPC default limit is 4 MiB.
MAX_MESSAGE_BYTES: Final = 4 << 20
#: ReadRows batches are split until their IPC payload is below this.
BATCH_BYTES_LIMIT: Final = 3 << 20
MAX_SAMPLE_ROWS: Final = 100_000
#: Peak memory of a sample per raw row byte (lines, Arrow table, Python values, messages),
#: measured with the load test in tests/data/test_load.py and rounded up.
SAMPLE_OVERHEAD: Final = 12
#: Peak memory of a sample per sampled row and per column (Python values, cells).
SAMPLE_CELL_BYTES: Final = 100
#: ... and per sampled row, whatever its width (row numbers, the sampler's set).
SAMPLE_ROW_BYTES: Final = 200

Context = Any  # grpc.aio.ServicerContext; handlers only pass it through


def ipc_bytes(table: pa.Table) -> bytes:
    """One Arrow IPC stream: the schema and a single record batch."""
    sink = io.BytesIO()
    batch = table.combine_chunks().to_batches()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        for b in batch or [pa.RecordBatch.from_pylist([], schema=table.schema)]:
            writer.write_batch(b)
    return sink.getvalue()


def _split_to_fit(table: pa.Table) -> list[tuple[int, int, bytes]]:
    """(offset, rows, IPC bytes) pieces of `table`, each below BATCH_BYTES_LIMIT: as many equal
    slices as its Arrow size calls for (a batch's IPC bytes are about its Arrow bytes, which a
    Parquet-based row estimate may undercount fourfold), each halved again if still over, so a
    batch is serialized about once, not once whole and again in halves."""
    rows = table.num_rows
    parts = min(max(1, -(-table.nbytes * 9 // (8 * BATCH_BYTES_LIMIT))), max(rows, 1))
    step = max(1, -(-rows // parts))
    out = []
    for offset in range(0, rows, step) or [0]:
        out += [(offset + o, n, p) for o, n, p in _halved_to_fit(table.slice(offset, step))]
    return out


def _halved_to_fit(table: pa.Table) -> list[tuple[int, int, bytes]]:
    """(offset, rows, IPC bytes) pieces of `table`, halving until each is below BATCH_BYTES_LIMIT."""
    payload = ipc_bytes(table)
    if len(payload) <= BATCH_BYTES_LIMIT or table.num_rows <= 1:
        if len(payload) > BATCH_BYTES_LIMIT:
            raise ResourceExhausted(f"one row needs {len(payload)} bytes, more than a message may carry")
        return [(0, table.num_rows, payload)]
    half = table.num_rows // 2
    left = _halved_to_fit(table.slice(0, half))
    right = _halved_to_fit(table.slice(half))
    return [*left, *((half + o, n, p) for o, n, p in right)]


def row_bytes(entry: DatasetEntry) -> float:
    """Average bytes of one stored row (CSV text, or uncompressed Parquet)."""
    if entry.csv is not None:
        return max((entry.csv.data_end - entry.csv.data_start) / max(entry.rows, 1), 1.0)
    assert entry.parquet is not None
    return max(entry.parquet.uncompressed_bytes_per_row(), 1.0)


def read_overhead(entry: DatasetEntry) -> int:
    """Peak memory of reading rows in order: the biggest span or row group, parsed and re-encoded."""
    if entry.csv is not None:
        span = max(SPAN_BYTES, entry.csv.checkpoint_rows * entry.csv.widest_row)
        return 4 * span + 4 * BATCH_BYTES_LIMIT
    assert entry.parquet is not None
    return 3 * entry.parquet.largest_row_group_bytes() + 4 * BATCH_BYTES_LIMIT


class _CountedChunks:
    """An upload's request stream, counting the chunk bytes that pass (for the upload metrics)."""

    def __init__(self, requests: AsyncIterator[data_service_pb2.UploadDatasetRequest]) -> None:
        self._requests = aiter(requests)
        self.received = 0

    def __aiter__(self) -> _CountedChunks:
        return self

    async def __anext__(self) -> data_service_pb2.UploadDatasetRequest:
        message = await anext(self._requests)
        if message.WhichOneof("payload") == "chunk":
            self.received += len(message.chunk)
        return message


class DataServicer(data_service_pb2_grpc.DataServiceServicer):
    """The gRPC face of one catalog."""

    def __init__(
        self,
        catalog: Catalog,
        cache: SampleCache | None = None,
        *,
        limits: DataLimits | None = None,
        budget: MemoryBudget | None = None,
        metrics: DataMetrics | None = None,
    ) -> None:
        #: Tenant ''s catalog (auth off); each RPC works in `self.catalogs.current()`.
        self.catalog = catalog
        self.catalogs = TenantCatalogs(catalog)
        self.cache = cache if cache is not None else SampleCache()
        self.limits = limits if limits is not None else DataLimits()
        self.budget = (
            budget
            if budget is not None
            else MemoryBudget(self.limits.memory_budget_bytes, wait_seconds=self.limits.admission_wait_seconds)
        )
        self.metrics = metrics
        if metrics is not None:
            metrics.track_budget(self.budget)

    async def ListDatasets(
        self, request: data_service_pb2.ListDatasetsRequest, context: Context
    ) -> data_service_pb2.ListDatasetsResponse:
        datasets, token = await self.catalogs.current().list_page(request.page_size, request.page_token)
        return data_service_pb2.ListDatasetsResponse(datasets=datasets, next_page_token=token)

    async def GetDataset(
        self, request: data_service_pb2.GetDatasetRequest, context: Context
    ) -> data_service_pb2.GetDatasetResponse:
        entry = await self.catalogs.current().get(request.dataset_id)
        return data_service_pb2.GetDatasetResponse(dataset=entry.to_proto())

    async def GetSchema(
        self, request: data_service_pb2.GetSchemaRequest, context: Context
    ) -> data_service_pb2.GetSchemaResponse:
        entry = await self.catalogs.current().get(request.dataset_id)
        return data_service_pb2.GetSchemaResponse(
            dataset_id=entry.dataset_id, version=entry.version, columns=[c.to_proto() for c in entry.columns]
        )

    async def SampleRows(
        self, request: data_service_pb2.SampleRowsRequest, context: Context
    ) -> data_service_pb2.SampleRowsResponse:
        validate_dataset_id(request.dataset_id)
        if request.n < 1:
            raise InvalidArgument(f"n must be ≥ 1, got {request.n}")
        if request.n > MAX_SAMPLE_ROWS:
            raise InvalidArgument(f"n must be at most {MAX_SAMPLE_ROWS} per request, got {request.n}")
        catalog = self.catalogs.current()
        entry = await catalog.get(request.dataset_id)
        if request.n > entry.rows:
            raise InvalidArgument(f"n = {request.n} exceeds the {entry.rows} rows of dataset {entry.dataset_id!r}")
        wanted = entry.check_columns(list(request.columns))
        specs = [c for c in entry.columns if wanted is None or c.name in wanted]  # schema order
        columns = [c.name for c in specs]
        key = (entry.location, entry.version, request.n, request.seed, tuple(columns))
        cached = self.cache.get(key)
        if cached is not None:
            return data_service_pb2.SampleRowsResponse.FromString(cached)
        raw = int(request.n * row_bytes(entry) * len(columns) / max(len(entry.columns), 1))
        if raw > self.limits.max_sample_bytes:
            raise ResourceExhausted(
                f"a sample of {request.n} rows holds about {mib(raw)} of row data, over the per-sample cap"
                f" of {mib(self.limits.max_sample_bytes)} (--max-sample-mb); ask for fewer rows or columns"
            )
        per_row = SAMPLE_ROW_BYTES + SAMPLE_CELL_BYTES * len(columns)
        estimate = read_overhead(entry) + raw * SAMPLE_OVERHEAD + request.n * per_row
        async with self.budget.reserve(estimate, f"a sample of {request.n} rows"):
            rows = await anyio.to_thread.run_sync(sample_indices, entry.rows, request.n, request.seed)
            table = await fetch_rows(catalog, entry, rows, columns)
            response = data_service_pb2.SampleRowsResponse(
                dataset_id=entry.dataset_id,
                version=entry.version,
                seed=request.seed,
                dataset_row_count=entry.rows,
                columns=[c.to_proto() for c in specs],
            )
            await anyio.to_thread.run_sync(add_rows, response, table, rows, specs)
            del table
            payload = await anyio.to_thread.run_sync(response.SerializeToString)
        if len(payload) > MAX_MESSAGE_BYTES - 1024:
            raise ResourceExhausted(
                f"a sample of {request.n} rows needs {len(payload)} bytes, over the {MAX_MESSAGE_BYTES}-byte"
                " message limit; ask for fewer rows or columns"
            )
        self.cache.put(key, payload)
        return response

    async def ReadRows(
        self, request: data_service_pb2.ReadRowsRequest, context: Context
    ) -> AsyncIterator[data_service_pb2.ReadRowsResponse]:
        validate_dataset_id(request.dataset_id)
        start, end = request.start_row, request.end_row
        if start < 0 or end < 0:
            raise InvalidArgument(f"row range [{start}, {end}) must not be negative")
        if end < start:
            raise InvalidArgument(f"row range [{start}, {end}) is reversed: end_row must be ≥ start_row")
        if request.batch_rows < 0:
            raise InvalidArgument("batch_rows must be ≥ 0")
        catalog = self.catalogs.current()
        entry = await catalog.get(request.dataset_id)
        if request.expected_version and request.expected_version != entry.version:
            raise FailedPrecondition(
                f"dataset {entry.dataset_id!r} is at version {entry.version}, not {request.expected_version}"
            )
        if end > entry.rows:
            raise InvalidArgument(f"end_row {end} exceeds the {entry.rows} rows of dataset {entry.dataset_id!r}")
        columns = entry.check_columns(list(request.columns))
        batch_rows = min(request.batch_rows or default_batch_rows(entry), self.limits.max_message_rows)
        async with self.budget.reserve(read_overhead(entry), f"reading rows of {entry.dataset_id!r}"):
            batches = iter_range(catalog, entry, start, end, columns=columns, batch_rows=batch_rows)
            async for first, table in batches:
                for offset, rows, payload in await anyio.to_thread.run_sync(_split_to_fit, table):
                    yield data_service_pb2.ReadRowsResponse(
                        start_row=first + offset, row_count=rows, arrow_ipc=payload, version=entry.version
                    )

    async def ValidateDataset(
        self, request: data_service_pb2.ValidateDatasetRequest, context: Context
    ) -> data_service_pb2.ValidateDatasetResponse:
        judge = await anyio.to_thread.run_sync(judge_of, request)  # before any read: a bad request costs none
        catalog = self.catalogs.current()
        entry = await catalog.get(request.dataset_id)
        # validation keeps one partition of the keys besides the spans it parses
        estimate = read_overhead(entry) + memory_estimate(entry.rows)
        async with self.budget.reserve(estimate, f"validating {entry.dataset_id!r}"):
            return await validate(catalog, entry, judge, request.max_violations)

    async def UploadDataset(
        self, request_iterator: AsyncIterator[data_service_pb2.UploadDatasetRequest], context: Context
    ) -> data_service_pb2.UploadDatasetResponse:
        counted = _CountedChunks(request_iterator)
        outcome = "internal"
        try:
            entry = await receive_upload(self.catalogs.current(), counted, budget=self.budget, context=context)
            outcome = "ok"
        except LivecalcError as exc:
            outcome = exc.code.name.lower()
            raise
        except anyio.get_cancelled_exc_class():
            outcome = "cancelled"
            raise
        finally:
            if self.metrics is not None:
                self.metrics.upload_ended(outcome, counted.received)
        return data_service_pb2.UploadDatasetResponse(dataset=entry.to_proto())

    async def DeleteDataset(
        self, request: data_service_pb2.DeleteDatasetRequest, context: Context
    ) -> data_service_pb2.DeleteDatasetResponse:
        await self.catalogs.current().delete(request.dataset_id)
        return data_service_pb2.DeleteDatasetResponse(dataset_id=request.dataset_id)
