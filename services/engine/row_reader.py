"""Policy rows for the engine, from the data service: row ranges (ReadRows) and seeded samples.

Rows come as Arrow: ReadRows streams Arrow IPC batches, checked by the data service against
the version the job was planned on (``expected_version``); SampleRows answers typed cells,
turned here into an Arrow table of the same columns. Failures become the project's errors: a
changed dataset FAILED_PRECONDITION, an unknown one NOT_FOUND, an unreachable service
UNAVAILABLE (the gateway may retry the chunk elsewhere).

A data service that restarts delays a chunk, never fails it (issue 12, item 3): GetDataset,
ReadRows and SampleRows are retried on UNAVAILABLE (or a reset connection) with exponential
backoff (`DATA_RETRY`: at most 30 s from the first failure); ReadRows resumes at the first row it has
not received, so rows already read are not read again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import numpy as np
import numpy.typing as npt
import pyarrow as pa
from grpc import aio

from livecalc.data.v1 import data_pb2, data_service_pb2, data_service_pb2_grpc
from services.common.auth.service import ServiceCredentials
from services.common.client import ChannelSecurity, open_aio_channel
from services.common.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    LivecalcError,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from services.common.retry import Backoff, Retry

log = logging.getLogger(__name__)

READ_TIMEOUT_SECONDS = 120.0
MAX_RECEIVE_BYTES = 16 << 20
T = TypeVar("T")


#: How long a read keeps trying a data service that does not answer: pauses from 0.1 s doubling
#: to 1 s, and UNAVAILABLE once the next pause would end more than 30 s after the first failure.
DATA_RETRY = Backoff(first=0.1, cap=1.0, seconds=30.0)


def _transient(exc: grpc.RpcError) -> bool:
    """The data service is down or restarting (not: the request is wrong)."""
    if not isinstance(exc, aio.AioRpcError):
        return False
    code = exc.code()
    if code == grpc.StatusCode.UNAVAILABLE:
        return True
    details = (exc.details() or "").lower()
    return code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN) and any(
        word in details for word in ("rst_stream", "reset", "goaway", "socket closed")
    )


async def _pause(retry: Retry, what: str) -> bool:
    """After a transient failure: log and sleep the backoff, True; False once the bound is spent."""
    pause = retry.failed()
    if pause is None:
        return False
    log.warning(
        "data service unavailable; retrying",
        extra={"fields": {"read": what, "attempt": retry.failures, "retry_in_s": round(pause, 3)}},
    )
    await asyncio.sleep(pause)
    return True


_ARROW_TYPES = {
    data_pb2.COLUMN_TYPE_INT64: pa.int64(),
    data_pb2.COLUMN_TYPE_FLOAT64: pa.float64(),
    data_pb2.COLUMN_TYPE_STRING: pa.string(),
    data_pb2.COLUMN_TYPE_BOOL: pa.bool_(),
}


@dataclass(frozen=True)
class Sample:
    """A seeded sample: the rows as a table (sample order) and their dataset row numbers."""

    table: pa.Table
    rows: npt.NDArray[np.int64]
    dataset_row_count: int


class RowReader:
    """Reads policy rows from the data service at ``address`` over one channel."""

    def __init__(
        self,
        address: str,
        retry: Backoff = DATA_RETRY,
        *,
        credentials: ServiceCredentials | None = None,
        security: ChannelSecurity | None = None,
    ) -> None:
        self.address = address
        self.retry = retry
        #: The engine's service token, sent on every call (none when auth is off).
        self.credentials = credentials or ServiceCredentials()
        # reconnect soon after a restart: gRPC's default backoff grows to minutes
        self._channel = open_aio_channel(
            address,
            security or ChannelSecurity(),
            options=[
                ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.min_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", 1000),
            ],
        )
        self._stub = data_service_pb2_grpc.DataServiceStub(self._channel)
        #: (row count, column names) per (tenant, id, version): a version names immutable content.
        self._known: dict[tuple[str, str, str], tuple[int, tuple[str, ...]]] = {}

    def acting_for(self, tenant: str) -> TenantRows:
        """This reader reading ``tenant``'s datasets (a job's; '' with auth off)."""
        return TenantRows(self, tenant)

    async def row_count(self, dataset_id: str, version: str, *, tenant: str = "") -> int:
        """Rows of the dataset (GetDataset), FAILED_PRECONDITION unless it is at ``version``."""
        rows, _ = await self._describe(dataset_id, version, tenant)
        return rows

    async def present(self, dataset_id: str, version: str, wanted: Sequence[str], *, tenant: str = "") -> list[str]:
        """The columns of ``wanted`` the dataset at ``version`` has, in the dataset's order ([]: it
        has none of them, so all of its columns are read and the row checks name what is missing)."""
        _, columns = await self._describe(dataset_id, version, tenant)
        asked = set(wanted)
        return [c for c in columns if c in asked]

    async def _describe(self, dataset_id: str, version: str, tenant: str) -> tuple[int, tuple[str, ...]]:
        """(row count, column names) of the dataset (GetDataset, remembered when ``version`` is
        named), FAILED_PRECONDITION unless it is at ``version``."""
        key = (tenant, dataset_id, version)
        known = self._known.get(key)
        if known is not None:
            return known
        request = data_service_pb2.GetDatasetRequest(dataset_id=dataset_id)
        answer = await self._unary(
            lambda: self._stub.GetDataset(
                request, timeout=READ_TIMEOUT_SECONDS, metadata=self.credentials.metadata(tenant)
            ),
            dataset_id,
        )
        found = answer.dataset
        if version and found.version != version:
            raise FailedPrecondition(
                f"dataset {dataset_id!r} changed: version {found.version}, the job needs {version}"
            )
        described = (int(found.row_count), tuple(c.name for c in found.columns))
        if version:
            self._known[key] = described
        return described

    async def read(
        self,
        dataset_id: str,
        version: str,
        start_row: int,
        end_row: int,
        *,
        tenant: str = "",
        columns: Sequence[str] = (),
    ) -> pa.Table:
        """Rows [start_row, end_row) of the dataset at ``version`` as one Arrow table (only
        ``columns``, in the dataset's order, when some are named)."""
        batches: list[pa.RecordBatch] = []
        schema: pa.Schema | None = None
        next_row = start_row
        # one bound for the whole read: rows delivered between failures do not renew it
        retry = Retry(self.retry)
        while True:
            request = data_service_pb2.ReadRowsRequest(
                dataset_id=dataset_id,
                start_row=next_row,
                end_row=end_row,
                expected_version=version,
                columns=list(columns),
            )
            call = self._stub.ReadRows(
                request, timeout=READ_TIMEOUT_SECONDS, metadata=self.credentials.metadata(tenant)
            )
            try:
                async for message in call:
                    if message.start_row != next_row:
                        raise Unavailable(f"data service sent rows from {message.start_row}, expected {next_row}")
                    if version and message.version and message.version != version:
                        raise FailedPrecondition(
                            f"dataset {dataset_id!r} changed: version {message.version}, the job needs {version}"
                        )
                    with pa.ipc.open_stream(message.arrow_ipc) as stream:
                        table = stream.read_all()
                    schema = schema or table.schema
                    batches.extend(table.cast(schema).to_batches())
                    next_row += message.row_count
                break
            except grpc.RpcError as exc:
                if not _transient(exc):
                    raise _read_error(exc, dataset_id, self.address) from None
                if not await _pause(retry, f"ReadRows {dataset_id}"):
                    raise _read_error(exc, dataset_id, self.address) from None
                # then go on from next_row
            finally:
                call.cancel()
        if next_row != end_row:
            raise Unavailable(f"data service ended the rows of {dataset_id!r} at {next_row}, expected {end_row}")
        if schema is None:
            return pa.table({})
        return pa.Table.from_batches(batches, schema)

    async def sample(
        self, dataset_id: str, version: str, n: int, seed: int, *, tenant: str = "", columns: Sequence[str] = ()
    ) -> Sample:
        """A seeded sample of n rows (SampleRows), as a table in sample order (only ``columns``
        when some are named)."""
        request = data_service_pb2.SampleRowsRequest(dataset_id=dataset_id, n=n, seed=seed, columns=list(columns))
        answer = await self._unary(
            lambda: self._stub.SampleRows(
                request, timeout=READ_TIMEOUT_SECONDS, metadata=self.credentials.metadata(tenant)
            ),
            dataset_id,
        )
        if version and answer.version != version:
            raise FailedPrecondition(
                f"dataset {dataset_id!r} changed: version {answer.version}, the job needs {version}"
            )
        cells: dict[str, list[Any]] = {c.name: [] for c in answer.columns}
        names = [c.name for c in answer.columns]
        for row in answer.rows:
            for name, cell in zip(names, row.cells, strict=True):
                kind = cell.WhichOneof("value")
                cells[name].append(None if kind is None else getattr(cell, kind))
        arrays = {c.name: pa.array(cells[c.name], type=_ARROW_TYPES.get(c.type, pa.string())) for c in answer.columns}
        rows = np.array([r.row for r in answer.rows], dtype=np.int64)
        return Sample(pa.table(arrays), rows, int(answer.dataset_row_count))

    async def _unary(self, call: Callable[[], Awaitable[T]], dataset_id: str) -> T:
        """One unary call, retried while the data service is unavailable (within the bound)."""
        retry = Retry(self.retry)
        while True:
            try:
                return await call()
            except grpc.RpcError as exc:
                if not _transient(exc):
                    raise _read_error(exc, dataset_id, self.address) from None
                if not await _pause(retry, dataset_id):
                    raise _read_error(exc, dataset_id, self.address) from None

    async def close(self) -> None:
        await self._channel.close()


class TenantRows:
    """A RowReader bound to one tenant: the `RowSource` a chunk of that tenant's job reads."""

    def __init__(self, reader: RowReader, tenant: str) -> None:
        self.reader = reader
        self.tenant = tenant

    async def row_count(self, dataset_id: str, version: str) -> int:
        return await self.reader.row_count(dataset_id, version, tenant=self.tenant)

    async def read(
        self, dataset_id: str, version: str, start_row: int, end_row: int, *, columns: Sequence[str] = ()
    ) -> pa.Table:
        """Rows [start_row, end_row); with ``columns``, only those of them the dataset has (a
        model's optional column may be absent), so columns no model reads are neither read from
        storage nor sent."""
        if columns:
            columns = await self.reader.present(dataset_id, version, columns, tenant=self.tenant)
        return await self.reader.read(dataset_id, version, start_row, end_row, tenant=self.tenant, columns=columns)

    async def sample(self, dataset_id: str, version: str, n: int, seed: int, *, columns: Sequence[str] = ()) -> Sample:
        """A seeded sample; with ``columns``, only those of them the dataset has (as `read`)."""
        if columns:
            columns = await self.reader.present(dataset_id, version, columns, tenant=self.tenant)
        return await self.reader.sample(dataset_id, version, n, seed, tenant=self.tenant, columns=columns)


def _read_error(exc: grpc.RpcError, dataset_id: str, address: str) -> LivecalcError:
    code = exc.code() if isinstance(exc, aio.AioRpcError) else grpc.StatusCode.UNKNOWN
    details = (exc.details() if isinstance(exc, aio.AioRpcError) else None) or code.name
    mapped: dict[grpc.StatusCode, type[LivecalcError]] = {
        grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
        grpc.StatusCode.NOT_FOUND: NotFound,
        grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
        grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
        grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    }
    kind = mapped.get(code)
    if kind is not None:
        return kind(f"data service: {details}")
    return Unavailable(f"cannot read dataset {dataset_id!r} from the data service at {address}: {details}")
