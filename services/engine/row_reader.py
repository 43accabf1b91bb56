"""Policy rows for the engine, from the data service: row ranges (ReadRows) and seeded samples.

Rows come as Arrow: ReadRows streams Arrow IPC batches, checked by the data service against
the version the job was planned on (``expected_version``); SampleRows answers typed cells,
turned here into an Arrow table of the same columns. Failures become the project's errors: a
changed dataset FAILED_PRECONDITION, an unknown one NOT_FOUND, an unreachable service
UNAVAILABLE (the gateway may retry the chunk elsewhere).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt
import pyarrow as pa
from grpc import aio

from livecalc.data.v1 import data_pb2, data_service_pb2, data_service_pb2_grpc
from services.common.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    LivecalcError,
    NotFound,
    ResourceExhausted,
    Unavailable,
)

READ_TIMEOUT_SECONDS = 120.0
MAX_RECEIVE_BYTES = 16 << 20

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

    def __init__(self, address: str) -> None:
        self.address = address
        self._channel = aio.insecure_channel(address, options=[("grpc.max_receive_message_length", MAX_RECEIVE_BYTES)])
        self._stub = data_service_pb2_grpc.DataServiceStub(self._channel)
        self._rows: dict[tuple[str, str], int] = {}

    async def row_count(self, dataset_id: str, version: str) -> int:
        """Rows of the dataset (GetDataset), FAILED_PRECONDITION unless it is at ``version``.

        Remembered per (id, version): a version names immutable content.
        """
        key = (dataset_id, version)
        known = self._rows.get(key)
        if known is not None:
            return known
        try:
            answer = await self._stub.GetDataset(
                data_service_pb2.GetDatasetRequest(dataset_id=dataset_id), timeout=READ_TIMEOUT_SECONDS
            )
        except grpc.RpcError as exc:
            raise _read_error(exc, dataset_id, self.address) from None
        found = answer.dataset
        if version and found.version != version:
            raise FailedPrecondition(
                f"dataset {dataset_id!r} changed: version {found.version}, the job needs {version}"
            )
        if version:
            self._rows[key] = int(found.row_count)
        return int(found.row_count)

    async def read(self, dataset_id: str, version: str, start_row: int, end_row: int) -> pa.Table:
        """Rows [start_row, end_row) of the dataset at ``version`` as one Arrow table."""
        request = data_service_pb2.ReadRowsRequest(
            dataset_id=dataset_id, start_row=start_row, end_row=end_row, expected_version=version
        )
        call = self._stub.ReadRows(request, timeout=READ_TIMEOUT_SECONDS)
        batches: list[pa.RecordBatch] = []
        schema: pa.Schema | None = None
        next_row = start_row
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
        except grpc.RpcError as exc:
            raise _read_error(exc, dataset_id, self.address) from None
        finally:
            call.cancel()
        if next_row != end_row:
            raise Unavailable(f"data service ended the rows of {dataset_id!r} at {next_row}, expected {end_row}")
        if schema is None:
            return pa.table({})
        return pa.Table.from_batches(batches, schema)

    async def sample(self, dataset_id: str, version: str, n: int, seed: int) -> Sample:
        """A seeded sample of n rows (SampleRows), as a table in sample order."""
        request = data_service_pb2.SampleRowsRequest(dataset_id=dataset_id, n=n, seed=seed)
        try:
            answer = await self._stub.SampleRows(request, timeout=READ_TIMEOUT_SECONDS)
        except grpc.RpcError as exc:
            raise _read_error(exc, dataset_id, self.address) from None
        if version and answer.version != version:
            raise FailedPrecondition(
                f"dataset {dataset_id!r} changed: version {answer.version}, the job needs {version}"
            )
        columns: dict[str, list[Any]] = {c.name: [] for c in answer.columns}
        names = [c.name for c in answer.columns]
        for row in answer.rows:
            for name, cell in zip(names, row.cells, strict=True):
                kind = cell.WhichOneof("value")
                columns[name].append(None if kind is None else getattr(cell, kind))
        arrays = {c.name: pa.array(columns[c.name], type=_ARROW_TYPES.get(c.type, pa.string())) for c in answer.columns}
        rows = np.array([r.row for r in answer.rows], dtype=np.int64)
        return Sample(pa.table(arrays), rows, int(answer.dataset_row_count))

    async def close(self) -> None:
        await self._channel.close()


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
