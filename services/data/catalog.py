"""The dataset catalog: which datasets exist, their versions and metadata.

A dataset `NAME` is the object `NAME.csv` or `NAME.parquet` in the configured storage.
Its metadata comes from the Parquet footer or the CSV index sidecar, never from reading
the data: each request costs a stat (to notice a changed object) and, the first time a
process sees a version, a small sidecar or footer read. Indexes and content hashes are
built once per version and saved beside the data for every process to reuse.

Versions: on local storage the SHA-256 of the content where it comes for free (a CSV's
index pass reads every byte anyway; an upload is verified against it); for a Parquet file
placed by hand, an ETag-like `etag:` digest of its size, mtime and footer, so that even the
first sight of a 50 GB file reads only its footer. On Azure Blob the blob's ETag.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import logging
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, TypeAlias

import anyio
import anyio.to_thread
import numpy as np
import numpy.typing as npt
from google.protobuf.timestamp_pb2 import Timestamp

from livecalc.data.v1 import data_pb2
from services.common.errors import FailedPrecondition, InvalidArgument, LivecalcError, NotFound
from services.common.storage.base import ObjectChanged, ObjectInfo, Storage, StorageKind
from services.data import sidecar
from services.data.csv_index import CHECKPOINT_ROWS, MAX_ROW_BYTES, CsvIndex, build_csv_index, save_csv_index
from services.data.ids import validate_dataset_id
from services.data.parquet_meta import ParquetMeta, read_parquet_meta
from services.data.schema import ColumnSpec

FormatValue: TypeAlias = data_pb2.DatasetFormat.ValueType
EXTENSIONS: Final[Mapping[FormatValue, str]] = {
    data_pb2.DATASET_FORMAT_CSV: ".csv",
    data_pb2.DATASET_FORMAT_PARQUET: ".parquet",
}
#: The DatasetSource each storage backend is.
SOURCES: Final[Mapping[StorageKind, data_pb2.DatasetSource.ValueType]] = {
    "local": data_pb2.DATASET_SOURCE_LOCAL,
    "azure_blob": data_pb2.DATASET_SOURCE_AZURE_BLOB,
}
log = logging.getLogger(__name__)
DEFAULT_PAGE_SIZE: Final = 100
#: Page tokens carry this prefix, so a token from elsewhere is refused, not misread.
TOKEN_PREFIX: Final = "after:"
MAX_PAGE_SIZE: Final = 1000
#: CSV offset arrays kept in memory (a 2M-row CSV's is 62 KiB).
OFFSETS_CACHED: Final = 16


def object_name(dataset_id: str, fmt: FormatValue) -> str:
    return dataset_id + EXTENSIONS[fmt]


def split_object_name(name: str) -> tuple[str, FormatValue] | None:
    """(dataset id, format) for a dataset object name, None for anything else."""
    if name.startswith("."):
        return None
    for fmt, ext in EXTENSIONS.items():
        if name.endswith(ext) and len(name) > len(ext):
            return name[: -len(ext)], fmt
    return None


@dataclass(frozen=True)
class DatasetEntry:
    """One version of one dataset, as the catalog knows it."""

    dataset_id: str
    object_name: str
    format: FormatValue
    source: data_pb2.DatasetSource.ValueType
    info: ObjectInfo
    version: str
    rows: int
    columns: tuple[ColumnSpec, ...]
    location: str
    csv: CsvIndex | None = None
    parquet: ParquetMeta | None = None

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def to_proto(self) -> data_pb2.Dataset:
        modified = Timestamp()
        modified.FromDatetime(self.info.modified)
        return data_pb2.Dataset(
            dataset_id=self.dataset_id,
            source=self.source,
            format=self.format,
            row_count=self.rows,
            size_bytes=self.info.size,
            version=self.version,
            columns=[c.to_proto() for c in self.columns],
            modify_time=modified,
            location=self.location,
        )

    def check_columns(self, wanted: list[str], field: str = "columns") -> list[str] | None:
        """The requested columns (None for all), refusing unknown or repeated names."""
        if not wanted:
            return None
        known = set(self.column_names)
        unknown = [c for c in wanted if c not in known]
        if unknown:
            raise InvalidArgument(f"dataset {self.dataset_id!r} has no column(s) {', '.join(map(repr, unknown))}")
        if len(set(wanted)) != len(wanted):
            raise InvalidArgument(f"{field} lists a column twice")
        return list(wanted)


class Catalog:
    """Datasets of one storage backend; safe to share between concurrent RPCs."""

    def __init__(
        self, storage: Storage, *, checkpoint_rows: int = CHECKPOINT_ROWS, max_row_bytes: int = MAX_ROW_BYTES
    ) -> None:
        self.storage = storage
        self.checkpoint_rows = checkpoint_rows
        self.max_row_bytes = max_row_bytes
        self._entries: dict[str, DatasetEntry] = {}
        #: Commits of one dataset id (all its formats) happen one at a time, each together
        #: with the index it installs, so a version always describes the bytes it names.
        self._commit_locks: dict[str, anyio.Lock] = {}
        self._offsets: OrderedDict[tuple[str, str], npt.NDArray[np.int64]] = OrderedDict()
        self._locks: dict[str, anyio.Lock] = {}
        #: Versions that could not be indexed, by object: (change token, reason).
        self._failures: dict[str, tuple[str, str]] = {}
        # Local versions are content hashes (or Parquet etags); Azure has ETags of its own.
        self.source = SOURCES[storage.kind]
        self._local = storage.kind == "local"

    async def find(self, dataset_id: str) -> ObjectInfo:
        """The object behind a dataset id: NOT_FOUND if none, FAILED_PRECONDITION if two."""
        validate_dataset_id(dataset_id)
        found = []
        for fmt in EXTENSIONS:
            info = await self.storage.stat(object_name(dataset_id, fmt))
            if info is not None:
                found.append(info)
        if not found:
            raise NotFound(f"dataset {dataset_id!r} not found")
        if len(found) > 1:
            names = " and ".join(i.name for i in found)
            raise FailedPrecondition(f"dataset {dataset_id!r} is ambiguous: both {names} exist; delete one")
        return found[0]

    async def get(self, dataset_id: str, *, known_sha256: str | None = None) -> DatasetEntry:
        """The dataset's current metadata (building its index on first sight of a version)."""
        return await self.describe(await self.find(dataset_id), known_sha256=known_sha256)

    async def describe(self, info: ObjectInfo, *, known_sha256: str | None = None) -> DatasetEntry:
        cached = self._entries.get(info.name)
        if cached is not None and cached.info.change_token == info.change_token:
            return cached
        failed = self._failures.get(info.name)
        if failed is not None and failed[0] == info.change_token:
            raise FailedPrecondition(failed[1])  # this version was refused before: not again
        lock = self._locks.setdefault(info.name, anyio.Lock())
        async with lock:
            cached = self._entries.get(info.name)
            if cached is not None and cached.info.change_token == info.change_token:
                return cached
            try:
                entry = await self._load(info, known_sha256)
            except ObjectChanged:
                raise FailedPrecondition(f"{info.name} changed while it was being indexed; retry") from None
            except FailedPrecondition as exc:
                self._failures[info.name] = (info.change_token, exc.message)
                raise
            self._entries[info.name] = entry
            self._failures.pop(info.name, None)
            return entry

    async def _load(self, info: ObjectInfo, known_sha256: str | None) -> DatasetEntry:
        parts = split_object_name(info.name)
        assert parts is not None
        _, fmt = parts
        side = await sidecar.read_header(self.storage, info.name)
        header = side.header if side is not None and side.header.get("change_token") == info.change_token else None
        csv_index: CsvIndex | None = None
        parquet: ParquetMeta | None = None
        sha: str | None = None
        if fmt == data_pb2.DATASET_FORMAT_CSV:
            csv_index = CsvIndex.from_header(header) if header is not None else None
            if csv_index is None or (self._local and not csv_index.sha256):
                hash_it = self._local and known_sha256 is None
                csv_index = await build_csv_index(
                    self.storage,
                    info,
                    checkpoint_rows=self.checkpoint_rows,
                    hash_content=hash_it,
                    max_row_bytes=self.max_row_bytes,
                )
                if known_sha256 is not None and self._local:
                    csv_index = CsvIndex(**{**csv_index.__dict__, "sha256": known_sha256})
                await save_csv_index(self.storage, info.name, csv_index)
                assert csv_index.offsets is not None
                self._remember_offsets(info, csv_index.offsets)
                csv_index = CsvIndex(**{**csv_index.__dict__, "offsets": None})
            sha = csv_index.sha256
        else:
            parquet = await read_parquet_meta(self.storage, info)
            if self._local:
                sha = header.get("sha256") if header is not None and header.get("format") == "parquet" else None
                if sha is None and known_sha256 is not None:
                    sha = known_sha256
                    marker = {"format": "parquet", "change_token": info.change_token, "sha256": sha}
                    await self.storage.put(sidecar.sidecar_name(info.name), sidecar.encode(marker))
        if sha is not None:
            version = f"sha256:{sha}"
        elif parquet is not None and self._local:
            # Hashing the content would read the whole file; the footer (row groups, chunk
            # offsets and sizes, statistics) plus size and mtime changes whenever it does.
            digest = hashlib.sha256(info.change_token.encode() + parquet.footer_bytes).hexdigest()
            version = f"etag:{digest[:40]}"
        else:
            version = info.change_token.strip('"')
        return self._entry(info, version, csv_index, parquet)

    def commit_lock(self, dataset_id: str) -> anyio.Lock:
        """The lock that serializes commits (and their index installs) of `dataset_id`."""
        return self._commit_locks.setdefault(dataset_id, anyio.Lock())

    async def install(
        self, info: ObjectInfo, *, csv: CsvIndex | None, parquet: ParquetMeta | None, sha256: str
    ) -> DatasetEntry:
        """Record a just-committed object whose index was built from the uploaded bytes.

        `info` is what the commit returned, so the sidecar names exactly these bytes; call it
        under `commit_lock` so no other commit of the id can slip in between.
        """
        if csv is not None:
            assert csv.offsets is not None
            offsets = csv.offsets
            csv = dataclasses.replace(csv, change_token=info.change_token, sha256=sha256 if self._local else None)
            await save_csv_index(self.storage, info.name, csv)
            self._remember_offsets(info, offsets)
            csv = dataclasses.replace(csv, offsets=None)
        else:
            assert parquet is not None
            parquet = parquet.with_change_token(info.change_token)
            if self._local:
                marker = {"format": "parquet", "change_token": info.change_token, "sha256": sha256}
                await self.storage.put(sidecar.sidecar_name(info.name), sidecar.encode(marker))
            else:
                await self.storage.delete(sidecar.sidecar_name(info.name))  # a stale one from before
        version = f"sha256:{sha256}" if self._local else info.change_token.strip('"')
        entry = self._entry(info, version, csv, parquet)
        self._entries[info.name] = entry
        return entry

    def _entry(self, info: ObjectInfo, version: str, csv: CsvIndex | None, parquet: ParquetMeta | None) -> DatasetEntry:
        """This catalog's entry for object `info`, whose rows and columns its CSV index or its
        Parquet footer (whichever it has) describes."""
        parts = split_object_name(info.name)
        assert parts is not None
        described = csv if csv is not None else parquet
        assert described is not None
        return DatasetEntry(
            dataset_id=parts[0],
            object_name=info.name,
            format=parts[1],
            source=self.source,
            info=info,
            version=version,
            rows=described.rows,
            columns=described.columns,
            location=self.storage.location(info.name),
            csv=csv,
            parquet=parquet,
        )

    def _remember_offsets(self, info: ObjectInfo, offsets: npt.NDArray[np.int64]) -> None:
        key = (info.name, info.change_token)
        self._offsets[key] = offsets
        self._offsets.move_to_end(key)
        while len(self._offsets) > OFFSETS_CACHED:
            self._offsets.popitem(last=False)

    async def csv_offsets(self, entry: DatasetEntry) -> npt.NDArray[np.int64]:
        """The CSV's checkpoint offsets (from memory, else from its sidecar)."""
        key = (entry.object_name, entry.info.change_token)
        offsets = self._offsets.get(key)
        if offsets is not None:
            self._offsets.move_to_end(key)
            return offsets
        side = await sidecar.read_header(self.storage, entry.object_name)
        if side is None or side.header.get("change_token") != entry.info.change_token:
            raise FailedPrecondition(f"dataset {entry.dataset_id!r} changed while it was being read; retry")
        offsets = await sidecar.read_offsets(self.storage, entry.object_name, side)
        self._remember_offsets(entry.info, offsets)
        return offsets

    async def list_page(self, page_size: int, page_token: str) -> tuple[list[data_pb2.Dataset], str]:
        """One page of datasets ordered by id, and the token of the next page ('' at the end).

        A dataset that cannot be served is listed with its `error`, never fails the page.
        """
        if page_size < 0:
            raise InvalidArgument("page_size must be ≥ 0")
        size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        after = _decode_token(page_token)
        by_id: dict[str, list[ObjectInfo]] = {}
        for info in await self.storage.list():
            parts = split_object_name(info.name)
            if parts is not None and parts[0] > after:
                try:
                    validate_dataset_id(parts[0])
                except InvalidArgument:
                    continue  # objects whose names are not ids are not datasets
                by_id.setdefault(parts[0], []).append(info)
        ids = sorted(by_id)
        page, more = ids[:size], len(ids) > size
        listed = []
        for dataset_id in page:
            infos = by_id[dataset_id]
            if len(infos) != 1:
                names = " and ".join(sorted(i.name for i in infos))
                listed.append(self._unreadable(infos[0], f"ambiguous: both {names} exist; delete one"))
                continue
            try:
                listed.append((await self.describe(infos[0])).to_proto())
            except LivecalcError as exc:
                listed.append(self._unreadable(infos[0], exc.message))
            except Exception:
                log.exception("cannot describe %s", infos[0].name)
                listed.append(self._unreadable(infos[0], "internal error while indexing; see the server log"))
        return listed, _encode_token(page[-1]) if more and page else ""

    def _unreadable(self, info: ObjectInfo, reason: str) -> data_pb2.Dataset:
        parts = split_object_name(info.name)
        assert parts is not None
        modified = Timestamp()
        modified.FromDatetime(info.modified)
        return data_pb2.Dataset(
            dataset_id=parts[0],
            source=self.source,
            format=parts[1],
            size_bytes=info.size,
            modify_time=modified,
            location=self.storage.location(info.name),
            error=reason,
        )

    async def delete(self, dataset_id: str) -> None:
        info = await self.find(dataset_id)
        await self.remove_object(info.name)

    async def remove_object(self, name: str) -> None:
        """Delete a dataset object and its sidecar (absent ones are fine)."""
        await self.storage.delete(name)
        await self.storage.delete(sidecar.sidecar_name(name))
        self._entries.pop(name, None)
        self._failures.pop(name, None)


def _encode_token(last_id: str) -> str:
    return base64.urlsafe_b64encode((TOKEN_PREFIX + last_id).encode()).decode()


def _decode_token(token: str) -> str:
    if not token:
        return ""
    bad = InvalidArgument("page_token is not a token from a previous ListDatasets answer")
    try:
        raw = base64.b64decode(token.encode(), altchars=b"-_", validate=True).decode()
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise bad from None
    if not raw.startswith(TOKEN_PREFIX):
        raise bad
    last_id = raw[len(TOKEN_PREFIX) :]
    try:
        validate_dataset_id(last_id, "page_token")
    except InvalidArgument:
        raise bad from None
    return last_id
