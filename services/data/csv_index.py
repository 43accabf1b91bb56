"""The CSV row index: row count, column types and byte offsets of every K-th row.

Built once per version of a CSV object in one sequential pass (8 MiB ranged reads, so
memory does not grow with the file) and kept in a sidecar (see `sidecar.py`). With it,
row r lives in the byte span [offsets[r // K], offsets[r // K + 1]) and a reader fetches
only that span: metadata, samples and row ranges never read the whole file again.

Rows are lines: a line break inside a quoted field is refused (the index would split the
row), and so is an empty line before the last row. Trailing empty lines are ignored.
A line (the header included) longer than `max_row_bytes`, or any NUL byte, is refused
as soon as the scan meets it: every later read fetches whole checkpoint blocks, so the
row cap is what bounds the memory of reading any row of an indexed file.
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass, field
from typing import Any, Final

import anyio.to_thread
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.csv as pacsv

from livecalc.data.v1 import data_pb2
from services.common.errors import FailedPrecondition
from services.common.storage.base import ObjectInfo, Storage, read_sequential
from services.data import sidecar
from services.data.schema import ColumnSpec, ColumnTypeValue, settle_csv_type

#: Rows between two checkpoints: a sampled row costs one span of about K rows.
CHECKPOINT_ROWS: Final = 256
#: Bytes at the head of the file that column types are inferred from.
TYPE_SAMPLE_BYTES: Final = 1 << 20
READ_CHUNK: Final = 8 << 20
FORMAT_VERSION: Final = 2
#: Default cap on the bytes of one line (header or row); policy rows are about 100 bytes.
MAX_ROW_BYTES: Final = 64 << 10


@dataclass(frozen=True)
class CsvIndex:
    """What the index knows about one version of a CSV object."""

    change_token: str
    sha256: str | None
    rows: int
    columns: tuple[ColumnSpec, ...]
    checkpoint_rows: int
    #: Byte offset of the first data row and of the end of the last one.
    data_start: int
    data_end: int
    #: Bytes of the longest line (header included), line break included.
    widest_row: int = 0
    #: offsets[i] is the byte offset of row i·K; the last entry is data_end.
    offsets: npt.NDArray[np.int64] | None = field(default=None, compare=False, repr=False)

    def header(self) -> dict[str, Any]:
        return {
            "format": "csv",
            "format_version": FORMAT_VERSION,
            "change_token": self.change_token,
            "sha256": self.sha256,
            "rows": self.rows,
            "columns": [[c.name, int(c.type), c.nullable] for c in self.columns],
            "checkpoint_rows": self.checkpoint_rows,
            "data_start": self.data_start,
            "data_end": self.data_end,
            "widest_row": self.widest_row,
        }

    @classmethod
    def from_header(cls, header: dict[str, Any]) -> CsvIndex | None:
        if header.get("format") != "csv" or header.get("format_version") != FORMAT_VERSION:
            return None
        try:
            return cls(
                change_token=str(header["change_token"]),
                sha256=header["sha256"],
                rows=int(header["rows"]),
                columns=tuple(ColumnSpec(str(n), _column_type(t), bool(b)) for n, t, b in header["columns"]),
                checkpoint_rows=int(header["checkpoint_rows"]),
                data_start=int(header["data_start"]),
                data_end=int(header["data_end"]),
                widest_row=int(header["widest_row"]),
            )
        except (KeyError, TypeError, ValueError):
            return None

    def with_offsets(self, offsets: npt.NDArray[np.int64]) -> CsvIndex:
        expected = -(-self.rows // self.checkpoint_rows) + 1
        if len(offsets) != expected:
            raise ValueError(f"index has {len(offsets)} offsets, expected {expected}")
        return CsvIndex(**{**self.__dict__, "offsets": offsets})

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


def _column_type(value: object) -> ColumnTypeValue:
    number = int(value)  # type: ignore[call-overload]
    if number not in data_pb2.ColumnType.values():
        raise ValueError(f"unknown column type {number}")
    return data_pb2.ColumnType.ValueType(number)


class _Scanner:
    """The sequential pass, fed chunk by chunk (runs in a worker thread)."""

    def __init__(self, name: str, k: int, hash_content: bool, max_row_bytes: int = MAX_ROW_BYTES) -> None:
        self.name = name
        self.k = k
        self.max_row_bytes = max_row_bytes
        self.widest = 0  # bytes of the longest complete line so far
        self.sha = hashlib.sha256() if hash_content else None
        self.pos = 0  # bytes consumed so far
        self.last_byte = -1  # the byte just before `pos`
        self.header_end = -1  # offset just after the header line
        self.head = bytearray()  # header line + the first bytes of data (types)
        self.rows = 0  # complete data lines seen, trailing empty ones included
        self.empty_run = 0  # consecutive empty lines at the end so far
        self.line_start = 0  # offset where the current (unfinished) line starts
        self.last_full_end = -1  # offset just after the last non-empty line
        self.quotes_odd = False  # an unclosed quote is open at the current position
        self.checkpoints: list[int] = []

    def feed(self, chunk: bytes) -> None:
        if not chunk:
            return
        if self.sha is not None:
            self.sha.update(chunk)
        base = self.pos
        buf = np.frombuffer(chunk, dtype=np.uint8)
        if (buf == 0).any():
            nul = base + int(np.flatnonzero(buf == 0)[0])
            raise FailedPrecondition(f"CSV {self.name}: NUL byte at offset {nul}; a CSV is text")
        if len(self.head) < TYPE_SAMPLE_BYTES:
            self.head += chunk[: TYPE_SAMPLE_BYTES - len(self.head)]
        newlines = np.flatnonzero(buf == 10)
        self._check_quotes(buf, newlines)
        self.pos += len(chunk)
        previous_byte, self.last_byte = self.last_byte, int(buf[-1])
        if newlines.size and self.header_end < 0:
            self._check_width(base + int(newlines[0]) + 1, -1)
            self.header_end = base + int(newlines[0]) + 1
            self.line_start = self.last_full_end = self.header_end
            self.checkpoints.append(self.header_end)
            newlines = newlines[1:]
        if newlines.size == 0:
            self._check_width(self.pos - self.line_start, self.rows if self.header_end >= 0 else -1)
            return
        ends = newlines + base  # absolute offsets of the line breaks
        starts = np.empty_like(ends)
        starts[0] = self.line_start
        starts[1:] = ends[:-1] + 1
        lengths = ends - starts
        widest = int(np.argmax(lengths))
        self._check_width(int(lengths[widest]) + 1, self.rows + widest)
        self._check_width(self.pos - int(ends[-1]) - 1, self.rows + ends.size)
        before = np.where(newlines > 0, buf[np.maximum(newlines - 1, 0)], previous_byte)
        empty = (lengths == 0) | ((lengths == 1) & (before == 13))
        self._track_empty(empty)
        full = np.flatnonzero(~empty)
        if full.size:
            self.last_full_end = int(ends[full[-1]]) + 1
        first = self.rows
        self.rows += ends.size
        # a checkpoint is the start of row r with r % k == 0: the byte after row r - 1
        numbers = np.arange(first + 1, first + ends.size + 1)
        self.checkpoints.extend((ends[numbers % self.k == 0] + 1).tolist())
        self.line_start = int(ends[-1]) + 1

    def _check_width(self, width: int, row: int) -> None:
        """Refuse a line over the cap (`row` -1 is the header), and remember the widest."""
        if width > self.max_row_bytes:
            what = "the header row" if row < 0 else f"row {row}"
            raise FailedPrecondition(
                f"CSV {self.name}: {what} has more than {self.max_row_bytes} bytes, the limit per row"
            )
        self.widest = max(self.widest, width)

    def _track_empty(self, empty: npt.NDArray[np.bool_]) -> None:
        full = np.flatnonzero(~empty)
        if full.size == 0:
            self.empty_run += int(empty.size)
            return
        first_empty = np.flatnonzero(empty[: full[-1]])
        if self.empty_run:
            self._fail_empty(self.rows - self.empty_run)
        if first_empty.size:
            self._fail_empty(self.rows + int(first_empty[0]))
        self.empty_run = int(empty.size - full[-1] - 1)

    def _fail_empty(self, row: int) -> None:
        raise FailedPrecondition(f"CSV {self.name}: row {row} is an empty line; remove empty lines inside the data")

    def _check_quotes(self, buf: npt.NDArray[np.uint8], newlines: npt.NDArray[np.intp]) -> None:
        quotes = np.flatnonzero(buf == 34)
        if quotes.size == 0:
            if self.quotes_odd and newlines.size:
                self._fail_quotes()
            return
        # parity of quotes before each line break: odd means the break is inside a field
        before = np.searchsorted(quotes, newlines) + (1 if self.quotes_odd else 0)
        if (before % 2 == 1).any():
            self._fail_quotes()
        self.quotes_odd = (quotes.size + (1 if self.quotes_odd else 0)) % 2 == 1

    def _fail_quotes(self) -> None:
        raise FailedPrecondition(
            f"CSV {self.name}: a quoted field holds a line break, which the row index does not support"
        )

    def finish(self, change_token: str) -> CsvIndex:
        if self.header_end < 0:
            if self.pos == 0:
                raise FailedPrecondition(f"CSV {self.name} is empty: it needs a header row")
            self.header_end = self.line_start = self.last_full_end = self.pos  # header only, no break
            self.checkpoints.append(self.pos)
        rows = self.rows - self.empty_run
        data_end = self.last_full_end
        tail = self.pos - self.line_start
        if tail > 0 and not (tail == 1 and self.last_byte == 13):
            if self.empty_run:
                self._fail_empty(rows)
            rows += 1  # a last row without a final line break
            data_end = self.pos
        blocks = -(-rows // self.k)
        offsets = [*self.checkpoints[:blocks], data_end] if rows else [self.header_end, self.header_end]
        return CsvIndex(
            change_token=change_token,
            sha256=self.sha.hexdigest() if self.sha is not None else None,
            rows=rows,
            columns=self._columns(),
            checkpoint_rows=self.k,
            data_start=self.header_end,
            data_end=data_end if rows else self.header_end,
            widest_row=self.widest,
            offsets=np.asarray(offsets, dtype=np.int64),
        )

    def _columns(self) -> tuple[ColumnSpec, ...]:
        head = bytes(self.head)
        header_line = head[: self.header_end] if self.header_end <= len(head) else head
        try:
            text = header_line.decode("utf-8-sig").rstrip("\r\n")
        except UnicodeDecodeError:
            raise FailedPrecondition(f"CSV {self.name}: the header row is not UTF-8") from None
        try:
            names = next(csv.reader([text]), [])
        except csv.Error as exc:
            raise FailedPrecondition(f"CSV {self.name}: cannot parse the header row: {exc}") from None
        if not names or any(not n.strip() for n in names):
            raise FailedPrecondition(f"CSV {self.name}: the header row needs a non-empty name for every column")
        if len(set(names)) != len(names):
            raise FailedPrecondition(f"CSV {self.name}: the header row repeats a column name")
        sample = head[self.header_end :] if self.header_end <= len(head) else b""
        cut = sample.rfind(b"\n")
        sample = sample[: cut + 1] if cut >= 0 else b""
        inferred: dict[str, pa.DataType] = {}
        if sample:
            try:
                table = pacsv.read_csv(
                    io.BytesIO(sample),
                    read_options=pacsv.ReadOptions(column_names=names, use_threads=False),
                )
                inferred = {name: table.schema.field(name).type for name in names}
            except pa.ArrowInvalid as exc:
                raise FailedPrecondition(f"CSV {self.name}: cannot parse the first rows: {exc}") from None
        return tuple(ColumnSpec(n, settle_csv_type(n, inferred.get(n, pa.null())), True) for n in names)


class CsvIndexer:
    """The index built from chunks as they come (an upload), before the object exists."""

    def __init__(self, name: str, *, checkpoint_rows: int = CHECKPOINT_ROWS, max_row_bytes: int = MAX_ROW_BYTES):
        self._scanner = _Scanner(name, checkpoint_rows, hash_content=False, max_row_bytes=max_row_bytes)

    async def feed(self, chunk: bytes) -> None:
        await anyio.to_thread.run_sync(self._scanner.feed, chunk)

    def finish(self, change_token: str = "") -> CsvIndex:
        return self._scanner.finish(change_token)


async def build_csv_index(
    storage: Storage,
    info: ObjectInfo,
    *,
    checkpoint_rows: int = CHECKPOINT_ROWS,
    hash_content: bool = True,
    max_row_bytes: int = MAX_ROW_BYTES,
) -> CsvIndex:
    """One sequential pass over the object: the index, and its SHA-256 if asked."""
    scanner = _Scanner(info.name, checkpoint_rows, hash_content, max_row_bytes)
    token = info.change_token
    async for chunk in read_sequential(storage, info.name, info.size, chunk=READ_CHUNK, change_token=token):
        await anyio.to_thread.run_sync(scanner.feed, chunk)
    return scanner.finish(token)


def source_name(source: data_pb2.DatasetSource.ValueType) -> str:
    return data_pb2.DatasetSource.Name(source)


async def save_csv_index(storage: Storage, object_name: str, index: CsvIndex) -> None:
    assert index.offsets is not None
    await storage.put(sidecar.sidecar_name(object_name), sidecar.encode(index.header(), index.offsets))
