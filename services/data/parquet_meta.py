"""Parquet metadata from the footer, and row-group reads through ranged fetches.

The footer (the last few KiB) gives row count, schema and where every column chunk of
every row group lies. `read_row_group` fetches just the byte ranges of the wanted column
chunks and hands pyarrow a sparse file that holds only those bytes: the same code reads
a local file and a blob, and never more of either than the rows asked for.
"""

from __future__ import annotations

import bisect
import io
import struct
from dataclasses import dataclass, field
from typing import Final

import anyio.to_thread
import pyarrow as pa
import pyarrow.parquet as pq

from services.common.errors import FailedPrecondition
from services.common.storage.base import ObjectInfo, Storage
from services.data.schema import ColumnSpec, column_type_of

MAGIC: Final = b"PAR1"
#: First read from the end: the footer of ordinary files fits, so metadata is one read.
TAIL_READ: Final = 64 << 10
#: Largest footer accepted: it is held in memory for as long as the version is in use.
MAX_FOOTER_BYTES: Final = 16 << 20
#: Neighbouring column chunks closer than this are fetched in one request.
COALESCE_GAP: Final = 1 << 20


@dataclass(frozen=True)
class ParquetMeta:
    """The footer of one version of a Parquet object, parsed."""

    change_token: str
    size: int
    metadata: pq.FileMetaData = field(compare=False, repr=False)
    columns: tuple[ColumnSpec, ...]
    #: row_starts[i] is the first row of row group i; the last entry is the row count.
    row_starts: tuple[int, ...]
    footer_bytes: bytes = field(compare=False, repr=False)

    @property
    def rows(self) -> int:
        return self.row_starts[-1]

    def row_group_of(self, row: int) -> int:
        return bisect.bisect_right(self.row_starts, row) - 1

    def largest_row_group_bytes(self) -> int:
        """Uncompressed bytes of the biggest row group: what reading one costs at least."""
        md = self.metadata
        return max((md.row_group(i).total_byte_size for i in range(md.num_row_groups)), default=0)

    def with_change_token(self, change_token: str) -> ParquetMeta:
        return ParquetMeta(change_token, self.size, self.metadata, self.columns, self.row_starts, self.footer_bytes)

    def uncompressed_bytes_per_row(self) -> float:
        md = self.metadata
        total = sum(md.row_group(i).total_byte_size for i in range(md.num_row_groups))
        return float(total) / max(self.rows, 1)


async def read_parquet_meta(storage: Storage, info: ObjectInfo) -> ParquetMeta:
    """Parse the footer with one ranged read (two if the footer is unusually large)."""
    name, size = info.name, info.size
    if size < 12:
        raise FailedPrecondition(f"Parquet {name} is too short to be a Parquet file ({size} bytes)")
    token = info.change_token
    tail = await storage.read_range(name, size - min(TAIL_READ, size), min(TAIL_READ, size), change_token=token)
    footer_len = footer_length(name, size, tail)
    if footer_len + 8 > len(tail):
        extra = footer_len + 8 - len(tail)
        tail = await storage.read_range(name, size - len(tail) - extra, extra, change_token=token) + tail
    return await anyio.to_thread.run_sync(parse_footer, name, token, size, tail)


def footer_length(name: str, size: int, tail: bytes) -> int:
    """The footer length the last 8 bytes announce, refused when absurd or over MAX_FOOTER_BYTES."""
    if size < 12 or tail[-4:] != MAGIC:
        raise FailedPrecondition(f"Parquet {name} does not end with the Parquet magic bytes")
    (footer_len,) = struct.unpack("<I", tail[-8:-4])
    if footer_len + 12 > size:
        raise FailedPrecondition(f"Parquet {name}: footer length {footer_len} exceeds the file")
    if footer_len > MAX_FOOTER_BYTES:
        raise FailedPrecondition(f"Parquet {name}: the footer has {footer_len} bytes, over the {MAX_FOOTER_BYTES}")
    return int(footer_len)


def parse_footer(name: str, change_token: str, size: int, tail: bytes) -> ParquetMeta:
    """The metadata of a Parquet object of `size` bytes from its last bytes (footer included)."""
    footer_len = footer_length(name, size, tail)
    if footer_len + 8 > len(tail):
        raise FailedPrecondition(f"Parquet {name}: footer of {footer_len} bytes but only {len(tail)} at hand")
    footer = bytes(tail[-(footer_len + 8) :])
    try:
        metadata = pq.read_metadata(pa.BufferReader(MAGIC + footer))
        schema = metadata.schema.to_arrow_schema()
    except (pa.ArrowException, OSError) as exc:
        raise FailedPrecondition(f"Parquet {name}: cannot read the footer: {exc}") from None
    columns = tuple(ColumnSpec(f.name, column_type_of(f.type), f.nullable) for f in schema)
    starts = [0]
    for i in range(metadata.num_row_groups):
        starts.append(starts[-1] + metadata.row_group(i).num_rows)
    return ParquetMeta(change_token, size, metadata, columns, tuple(starts), footer)


class _SparseFile(io.RawIOBase):
    """A read-only file of `size` bytes of which only some ranges are present."""

    def __init__(self, size: int, parts: list[tuple[int, bytes]]) -> None:
        super().__init__()
        self._size = size
        self._parts = sorted(parts)
        self._starts = [p[0] for p in self._parts]
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        want = min(len(buffer), self._size - self._pos)
        if want <= 0:
            return 0
        i = bisect.bisect_right(self._starts, self._pos) - 1
        if i < 0:
            raise OSError(f"sparse read at {self._pos} outside the fetched ranges")
        start, data = self._parts[i]
        inner = self._pos - start
        if inner + want > len(data):
            raise OSError(f"sparse read [{self._pos}, +{want}) outside the fetched ranges")
        buffer[:want] = data[inner : inner + want]
        self._pos += want
        return want


def _chunk_ranges(meta: ParquetMeta, group: int, columns: list[str] | None) -> list[tuple[int, int]]:
    rg = meta.metadata.row_group(group)
    ranges = []
    for j in range(rg.num_columns):
        col = rg.column(j)
        if columns is not None and col.path_in_schema.split(".")[0] not in columns:
            continue
        start = col.data_page_offset
        if col.has_dictionary_page and col.dictionary_page_offset is not None and col.dictionary_page_offset > 0:
            start = min(start, col.dictionary_page_offset)
        ranges.append((start, start + col.total_compressed_size))
    ranges.sort()
    merged: list[tuple[int, int]] = []
    for start, end in ranges:
        if merged and start - merged[-1][1] <= COALESCE_GAP:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


async def read_row_group(
    storage: Storage, name: str, meta: ParquetMeta, group: int, columns: list[str] | None
) -> pa.Table:
    """Row group `group` (the listed columns, or all), fetching only its column chunks."""
    parts = [(meta.size - len(meta.footer_bytes), meta.footer_bytes)]
    for start, end in _chunk_ranges(meta, group, columns):
        data = await storage.read_range(name, start, end - start, change_token=meta.change_token)
        parts.append((start, data))

    def decode() -> pa.Table:
        source = _SparseFile(meta.size, parts)
        reader = pq.ParquetFile(source, metadata=meta.metadata, pre_buffer=False)
        return reader.read_row_group(group, columns=columns, use_threads=False)

    try:
        return await anyio.to_thread.run_sync(decode)
    except (pa.ArrowException, OSError) as exc:
        raise FailedPrecondition(f"Parquet {name}: cannot read row group {group}: {exc}") from None
