"""Per-policy detail and cash flows of a finished job as Arrow tables and pandas DataFrames.

GetJobDetail streams a header (the outputs K, the scenarios S, the key column) and then rows
in row order, each row's values f64 [K][S]; this module turns them into columns:

- ``row``: the dataset row (0-based);
- the key column (named as the model declares it, ``policy_id`` for term life) when the model
  declares one: integers when every id is one, else text;
- ``{output}_s{scenario}``, one per output and scenario, outputs in declared order, each
  output's scenarios ascending: ``net_cf_s17`` is policy's net_cf under scenario 17.

pyarrow (and pandas for DataFrames) are imported only here and only when used: the light client
installs with grpcio and protobuf alone (`pip install livecalc-client[frames]` adds them).
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from livecalc.gateway.v1 import job_pb2, job_service_pb2
from livecalc_client.errors import InvalidArgument, Unavailable

#: pyarrow's RecordBatch and pandas' DataFrame: the light client's own dependencies are grpcio and
#: protobuf, so pyarrow and pandas are imported only when used (`need`), and typed Any here.
RecordBatch = Any
DataFrame = Any

#: Rows in one RecordBatch of a detail (a Parquet row group when written batch by batch).
BATCH_ROWS: Final = 65536


def need(module: str) -> Any:
    """``module`` imported, or a clear error saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(
            f"{module} is needed for job detail and cash-flow tables: pip install pyarrow pandas "
            "(or livecalc-client[frames])"
        ) from None


def value_column(output: str, scenario: int) -> str:
    """The column of ``output``'s values under ``scenario``: ``net_cf_s17``."""
    return f"{output}_s{scenario}"


def blocks_span(blocks: range | slice | None) -> tuple[int, int]:
    """(first_block, block_count) of GetJobDetailRequest for ``blocks``: ``range(a, b)`` or
    ``slice(a, b)`` for blocks a … b−1, ``slice(a, None)`` from a through the last, None for all."""
    if blocks is None:
        return 0, 0
    if isinstance(blocks, slice):
        start = 0 if blocks.start is None else int(blocks.start)
        if blocks.step not in (None, 1) or start < 0 or (blocks.stop is not None and blocks.stop <= start):
            raise InvalidArgument(f"blocks must be a slice a:b of blocks with 0 ≤ a < b, got {blocks}")
        return start, 0 if blocks.stop is None else int(blocks.stop) - start
    if blocks.step != 1 or blocks.start < 0 or len(blocks) == 0:
        raise InvalidArgument(f"blocks must be a non-empty range of blocks ≥ 0 with step 1, got {blocks}")
    return blocks.start, len(blocks)


def detail_columns(header: job_service_pb2.DetailHeader) -> list[str]:
    """The detail's columns: ``row``, the key column when there is one, ``{output}_s{scenario}``."""
    key = [header.key_column] if header.key_column else []
    return ["row", *key, *(value_column(o, int(s)) for o in header.outputs for s in header.scenarios)]


@dataclass
class DetailBatches:
    """Builds RecordBatches of ``batch_rows`` rows from a detail stream's messages."""

    header: job_service_pb2.DetailHeader
    batch_rows: int = BATCH_ROWS
    rows_seen: int = 0
    _pending: list[job_service_pb2.PolicyRows] = field(default_factory=list)
    _pending_rows: int = 0

    @property
    def columns(self) -> list[str]:
        return detail_columns(self.header)

    def add(self, rows: job_service_pb2.PolicyRows) -> RecordBatch | None:
        """Take one PolicyRows; a batch once ``batch_rows`` rows are in."""
        expected = self.header.first_block * self.header.block_size + self.rows_seen
        if rows.first_row != expected:
            raise Unavailable(f"detail rows from {rows.first_row}, expected from {expected}: the stream lost rows")
        self.rows_seen += int(rows.row_count)
        self._pending.append(rows)
        self._pending_rows += int(rows.row_count)
        return self.flush() if self._pending_rows >= self.batch_rows else None

    def flush(self) -> RecordBatch | None:
        """The rows taken and not yet batched, as a batch (None when there are none)."""
        if not self._pending:
            return None
        pending, self._pending, self._pending_rows = self._pending, [], 0
        return self.batch(pending)

    def batch(self, pieces: Sequence[job_service_pb2.PolicyRows]) -> RecordBatch:
        pa = need("pyarrow")
        np = need("numpy")
        h = self.header
        k, s = len(h.outputs), len(h.scenarios)
        values = np.concatenate([np.asarray(p.values, dtype=np.float64) for p in pieces]).reshape(-1, k, s)
        rows = np.concatenate([np.arange(p.first_row, p.first_row + p.row_count, dtype=np.int64) for p in pieces])
        arrays = [pa.array(rows)]
        if h.key_column:
            arrays.append(policy_ids([i for p in pieces for i in p.policy_ids]))
        arrays += [pa.array(values[:, i, j]) for i in range(k) for j in range(s)]
        return pa.RecordBatch.from_arrays(arrays, names=self.columns)


def policy_ids(ids: list[str]) -> Any:
    """The key column: int64 when every id is an integer, else text."""
    pa = need("pyarrow")
    text = pa.array(ids, type=pa.string())
    try:
        return text.cast(pa.int64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return text


async def detail_batches(
    messages: AsyncIterator[job_service_pb2.GetJobDetailResponse],
    *,
    batch_rows: int = BATCH_ROWS,
    on_progress: Callable[[job_pb2.JobProgress], None] | None = None,
) -> AsyncIterator[tuple[job_service_pb2.DetailHeader, RecordBatch]]:
    """(header, batch) pairs of a GetJobDetail stream, rows in row order; checks every row came.
    ``on_progress`` is called with the stream's progress messages."""
    builder: DetailBatches | None = None
    async for message in messages:
        kind = message.WhichOneof("event")
        if kind == "header":
            builder = DetailBatches(message.header, batch_rows)
        elif kind == "rows":
            if builder is None:
                raise Unavailable("the detail stream sent rows before its header")
            batch = builder.add(message.rows)
            if batch is not None:
                yield builder.header, batch
        elif kind == "progress" and on_progress is not None:
            on_progress(message.progress)
    if builder is None:
        raise Unavailable("the detail stream ended before its header")
    last = builder.flush()
    if last is not None:
        yield builder.header, last
    if builder.rows_seen != builder.header.row_count:
        raise Unavailable(f"the detail stream ended after {builder.rows_seen} of {builder.header.row_count} rows")


def cash_flow_frame(flows: job_service_pb2.CashFlows) -> DataFrame:
    """The profiles as a DataFrame: one row per month, a column per output and scenario
    (``premiums_s0``, ``net_cf_mean`` for the mean), months 0 … T−1 as the index."""
    pd = need("pandas")
    columns: dict[str, Iterable[float]] = {}
    for p in flows.profiles:
        label = "mean" if p.scenario < 0 else f"s{p.scenario}"
        columns[f"{p.name}_{label}"] = list(p.values)
    frame = pd.DataFrame(columns)
    frame.index.name = "month"
    return frame
