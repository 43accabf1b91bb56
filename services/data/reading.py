"""Reading rows: row ranges and scattered rows, from CSV spans and Parquet row groups.

Everything here reads through ranged storage reads located by the catalog's metadata:
CSV rows by the index's checkpoint offsets (a span of whole checkpoint blocks is fetched
and parsed with the column types the catalog reports), Parquet rows by row group. Memory
is bounded by one span or row group plus what the caller keeps.
"""

from __future__ import annotations

import io
import re
from collections.abc import AsyncIterator, Sequence
from typing import Final

import anyio.to_thread
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from livecalc.data.v1 import data_pb2
from services.common.errors import FailedPrecondition
from services.common.storage.base import ObjectChanged
from services.data.catalog import Catalog, DatasetEntry
from services.data.parquet_meta import read_row_group
from services.data.schema import ColumnSpec, arrow_type_of

#: Bytes of CSV fetched and parsed at a time by range reads.
SPAN_BYTES: Final = 4 << 20
#: Scattered CSV rows closer than this (bytes) are fetched in one request.
SAMPLE_GAP: Final = 256 << 10
#: What a default ReadRows batch aims at, and the bounds on its row count.
TARGET_BATCH_BYTES: Final = 1 << 20
MAX_BATCH_ROWS: Final = 65536

_PATTERNS: Final = {
    data_pb2.COLUMN_TYPE_INT64: re.compile(r"^\s*[+-]?\d+\s*$").pattern,
    data_pb2.COLUMN_TYPE_FLOAT64: re.compile(
        r"^\s*[+-]?((\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[Nn]a[Nn]|[Ii]nf(inity)?)\s*$"
    ).pattern,
    data_pb2.COLUMN_TYPE_BOOL: re.compile(r"^\s*(true|false|True|False|TRUE|FALSE|1|0)\s*$").pattern,
}


def csv_convert_options(
    columns: Sequence[ColumnSpec], include: list[str] | None, as_text: bool = False
) -> pacsv.ConvertOptions:
    """How CSV cells become Arrow values: the catalog's types, '' as missing."""
    return pacsv.ConvertOptions(
        column_types={c.name: pa.string() if as_text else arrow_type_of(c.type) for c in columns},
        include_columns=include or [],
        null_values=[""],
        strings_can_be_null=False,
        quoted_strings_can_be_null=False,
    )


def type_mismatches(text: pa.Array, column_type: data_pb2.ColumnType.ValueType) -> npt.NDArray[np.bool_]:
    """Cells of a text column that do not parse as `column_type` (empty cells are missing, not bad)."""
    pattern = _PATTERNS.get(column_type)
    if pattern is None:
        return np.zeros(len(text), dtype=bool)
    ok = pc.or_(pc.equal(text, ""), pc.match_substring_regex(text, pattern))
    return np.asarray(pc.invert(ok).to_numpy(zero_copy_only=False), dtype=bool)


def parse_csv(
    entry: DatasetEntry, data: bytes, include: list[str] | None, row_numbers: Sequence[int] | int
) -> pa.Table:
    """Parse header-less CSV rows of `entry`; a cell of the wrong type is a clear error.

    `row_numbers` are the dataset rows of the lines (or the first row of consecutive lines),
    so the error can name the row.
    """
    names = entry.column_names
    read = pacsv.ReadOptions(column_names=names, use_threads=False, block_size=max(len(data), 1 << 20) + 1)
    try:
        return pacsv.read_csv(
            io.BytesIO(data), read_options=read, convert_options=csv_convert_options(entry.columns, include)
        )
    except pa.ArrowInvalid as exc:
        raise _locate_error(entry, data, include, row_numbers, exc) from None


def _locate_error(
    entry: DatasetEntry, data: bytes, include: list[str] | None, row_numbers: Sequence[int] | int, exc: Exception
) -> FailedPrecondition:
    def row_of(i: int) -> int:
        return row_numbers + i if isinstance(row_numbers, int) else int(row_numbers[i])

    try:
        text = pacsv.read_csv(
            io.BytesIO(data),
            read_options=pacsv.ReadOptions(column_names=entry.column_names, use_threads=False),
            convert_options=csv_convert_options(entry.columns, include, as_text=True),
        )
    except pa.ArrowInvalid as again:
        first = row_of(0)
        return FailedPrecondition(f"dataset {entry.dataset_id!r}: malformed CSV at or after row {first}: {again}")
    for spec in entry.columns:
        if spec.name not in text.column_names:
            continue
        bad = np.flatnonzero(type_mismatches(text.column(spec.name).combine_chunks(), spec.type))
        if bad.size:
            i = int(bad[0])
            value = text.column(spec.name)[i].as_py()
            kind = data_pb2.ColumnType.Name(spec.type).removeprefix("COLUMN_TYPE_").lower()
            return FailedPrecondition(
                f"dataset {entry.dataset_id!r} row {row_of(i)} column {spec.name!r}: {value!r:.40} is not {kind}"
                " (run `livecalc datasets validate` for every problem)"
            )
    return FailedPrecondition(f"dataset {entry.dataset_id!r}: cannot parse CSV rows: {exc}")


def default_batch_rows(entry: DatasetEntry) -> int:
    if entry.csv is not None:
        per_row = max((entry.csv.data_end - entry.csv.data_start) / max(entry.rows, 1), 1.0) * 1.5
    elif entry.parquet is not None:
        per_row = max(entry.parquet.uncompressed_bytes_per_row(), 1.0)
    else:  # pragma: no cover - every entry has one of the two
        per_row = 100.0
    return int(min(max(TARGET_BATCH_BYTES // per_row, 1), MAX_BATCH_ROWS))


async def iter_range(
    catalog: Catalog, entry: DatasetEntry, start: int, end: int, *, columns: list[str] | None, batch_rows: int
) -> AsyncIterator[tuple[int, pa.Table]]:
    """Rows [start, end) as (first row, table of ≤ batch_rows rows), in order."""
    pieces = (
        _csv_pieces(catalog, entry, start, end, columns)
        if entry.csv
        else parquet_pieces(catalog, entry, start, end, columns)
    )
    pending: list[pa.Table] = []
    pending_rows = 0
    next_row = start
    try:
        async for piece in pieces:
            pending.append(piece)
            pending_rows += piece.num_rows
            if pending_rows < batch_rows:
                continue
            table = pa.concat_tables(pending)
            offset = 0
            while table.num_rows - offset >= batch_rows:
                yield next_row, table.slice(offset, batch_rows)
                next_row += batch_rows
                offset += batch_rows
            rest = table.slice(offset)
            pending, pending_rows = ([rest] if rest.num_rows else []), rest.num_rows
    except ObjectChanged:
        raise FailedPrecondition(f"dataset {entry.dataset_id!r} changed while it was being read; retry") from None
    if pending_rows:
        yield next_row, pa.concat_tables(pending)


async def csv_spans(
    catalog: Catalog, entry: DatasetEntry, start: int, end: int
) -> AsyncIterator[tuple[int, int, bytes]]:
    """Whole checkpoint blocks covering rows [start, end): (first row, row count, bytes)."""
    assert entry.csv is not None
    k = entry.csv.checkpoint_rows
    offsets = await catalog.csv_offsets(entry)
    block = start // k
    last_block = -(-end // k)
    while block < last_block:
        stop = block + 1  # at least one block, then as many as fit in SPAN_BYTES
        while stop < last_block and offsets[stop + 1] - offsets[block] <= SPAN_BYTES:
            stop += 1
        lo, hi = int(offsets[block]), int(offsets[stop])
        data = await catalog.storage.read_range(entry.object_name, lo, hi - lo, change_token=entry.info.change_token)
        first = block * k
        yield first, min(stop * k, entry.rows) - first, data
        block = stop


async def _csv_pieces(
    catalog: Catalog, entry: DatasetEntry, start: int, end: int, columns: list[str] | None
) -> AsyncIterator[pa.Table]:
    async for first, expected, data in csv_spans(catalog, entry, start, end):
        table = await anyio.to_thread.run_sync(parse_csv, entry, data, columns, first)
        if table.num_rows != expected:
            raise FailedPrecondition(
                f"dataset {entry.dataset_id!r}: rows {first}..{first + expected - 1} parsed as {table.num_rows} rows"
            )
        a, b = max(start, first) - first, min(end, first + table.num_rows) - first
        yield table.slice(a, b - a)


async def parquet_pieces(
    catalog: Catalog, entry: DatasetEntry, start: int, end: int, columns: list[str] | None
) -> AsyncIterator[pa.Table]:
    meta = entry.parquet
    assert meta is not None
    group = meta.row_group_of(start)
    while group < len(meta.row_starts) - 1 and meta.row_starts[group] < end:
        first = meta.row_starts[group]
        if meta.row_starts[group + 1] > first:  # skip empty row groups
            table = await read_row_group(catalog.storage, entry.object_name, meta, group, columns)
            a, b = max(start, first) - first, min(end, first + table.num_rows) - first
            yield table.slice(a, b - a)
        group += 1


async def fetch_rows(
    catalog: Catalog, entry: DatasetEntry, rows: npt.NDArray[np.int64], columns: list[str] | None
) -> pa.Table:
    """The given rows (any order, no repeats) as one table in that order."""
    order = np.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    try:
        if entry.csv is not None:
            table = await _csv_scattered(catalog, entry, sorted_rows, columns)
        else:
            table = await _parquet_scattered(catalog, entry, sorted_rows, columns)
    except ObjectChanged:
        raise FailedPrecondition(f"dataset {entry.dataset_id!r} changed while it was being read; retry") from None
    inverse = np.empty_like(order)
    inverse[order] = np.arange(order.size)
    return table.take(pa.array(inverse))


async def _csv_scattered(
    catalog: Catalog, entry: DatasetEntry, rows: npt.NDArray[np.int64], columns: list[str] | None
) -> pa.Table:
    assert entry.csv is not None
    k = entry.csv.checkpoint_rows
    offsets = await catalog.csv_offsets(entry)
    blocks = np.unique(rows // k)
    lines: list[bytes] = []
    i = 0
    while i < blocks.size:
        j = i + 1  # merge following hit blocks while the gap is small and the span bounded
        while (
            j < blocks.size
            and offsets[blocks[j]] - offsets[blocks[j - 1] + 1] <= SAMPLE_GAP
            and offsets[blocks[j] + 1] - offsets[blocks[i]] <= SPAN_BYTES
        ):
            j += 1
        b0, b1 = int(blocks[i]), int(blocks[j - 1]) + 1
        lo, hi = int(offsets[b0]), int(offsets[b1])
        data = await catalog.storage.read_range(entry.object_name, lo, hi - lo, change_token=entry.info.change_token)
        wanted = rows[(rows >= b0 * k) & (rows < b1 * k)] - b0 * k
        lines.extend(await anyio.to_thread.run_sync(_pick_lines, data, wanted))
        i = j
    data = b"".join(line if line.endswith(b"\n") else line + b"\n" for line in lines)
    return await anyio.to_thread.run_sync(parse_csv, entry, data, columns, rows.tolist())


def _pick_lines(data: bytes, wanted: npt.NDArray[np.int64]) -> list[bytes]:
    breaks = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10)
    starts = np.concatenate(([0], breaks + 1))
    ends = np.concatenate((breaks + 1, [len(data)]))
    if wanted.size and int(wanted[-1]) >= starts.size:
        raise FailedPrecondition("the CSV index does not match the data; it will be rebuilt when the file changes")
    return [data[int(starts[w]) : int(ends[w])] for w in wanted]


async def _parquet_scattered(
    catalog: Catalog, entry: DatasetEntry, rows: npt.NDArray[np.int64], columns: list[str] | None
) -> pa.Table:
    meta = entry.parquet
    assert meta is not None
    starts = np.asarray(meta.row_starts, dtype=np.int64)
    groups = np.searchsorted(starts, rows, side="right") - 1
    tables = []
    for group in np.unique(groups):
        table = await read_row_group(catalog.storage, entry.object_name, meta, int(group), columns)
        local = rows[groups == group] - starts[group]
        tables.append(table.take(pa.array(local)))
    if not tables:
        names = columns or entry.column_names
        return pa.table({n: pa.array([], pa.null()) for n in names})
    return pa.concat_tables(tables)
