"""UploadDataset: a header, then chunks, checked in full before anything is visible.

The bytes go to an upload sink of the storage (a hidden temporary file, or uncommitted
blob blocks) while their SHA-256 is computed and the dataset's index is built from them as
they pass (the CSV row index, or the Parquet footer kept from the tail). Only when the
stream ends with exactly the announced size and hash and the index is complete is the
object committed, atomically and under the dataset id's commit lock, together with the
index that describes exactly those bytes. So a refused upload changes nothing (an existing
dataset stays readable byte for byte), and concurrent overwrites of one id never mix one
upload's bytes with another's version. Whatever way the stream ends without a commit,
the temporary object is removed at once; a full disk answers RESOURCE_EXHAUSTED naming
the dataset and the directory (`StorageFull`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from typing import Any, Final

import anyio

from livecalc.data.v1 import data_pb2, data_service_pb2
from services.common.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    ResourceExhausted,
)
from services.common.storage.base import ObjectBusy, ObjectExists, StorageFull, UploadSink
from services.data.catalog import EXTENSIONS, Catalog, DatasetEntry, object_name
from services.data.csv_index import CsvIndex, CsvIndexer
from services.data.ids import validate_dataset_id
from services.data.limits import MemoryBudget
from services.data.parquet_meta import MAX_FOOTER_BYTES, ParquetMeta, parse_footer

#: Largest chunk payload accepted; with the message framing it stays under the 4 MiB
#: default message limit (a 4 MiB payload does not: 4194309 > 4194304 bytes).
CHUNK_LIMIT: Final = (4 << 20) - (64 << 10)
MAX_UPLOAD_BYTES: Final = 1 << 40
_SHA256 = re.compile(r"[0-9a-f]{64}")


def check_header(header: data_service_pb2.UploadHeader) -> None:
    validate_dataset_id(header.dataset_id, "header.dataset_id")
    problems = []
    if header.format not in EXTENSIONS:
        problems.append(FieldViolation("header.format", "must be DATASET_FORMAT_CSV or DATASET_FORMAT_PARQUET"))
    if not 0 < header.size_bytes <= MAX_UPLOAD_BYTES:
        problems.append(FieldViolation("header.size_bytes", f"must be in 1..{MAX_UPLOAD_BYTES}"))
    if not _SHA256.fullmatch(header.sha256):
        problems.append(FieldViolation("header.sha256", "must be 64 lower-case hex digits"))
    if problems:
        raise InvalidArgument("invalid upload header", tuple(problems))


class _ParquetTail:
    """Keeps the last bytes of the stream: the footer is parsed from them at the end."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._head = b""
        self._tail = bytearray()

    async def feed(self, chunk: bytes) -> None:
        if len(self._head) < 4:
            self._head += chunk[: 4 - len(self._head)]
        self._tail += chunk
        if len(self._tail) > MAX_FOOTER_BYTES + 8:
            del self._tail[: len(self._tail) - MAX_FOOTER_BYTES - 8]

    def finish(self, size: int) -> ParquetMeta:
        if self._head != b"PAR1":
            raise FailedPrecondition("upload announced as Parquet lacks the Parquet magic bytes")
        return parse_footer(self._name, "", size, bytes(self._tail))


async def receive_upload(
    catalog: Catalog,
    requests: AsyncIterator[data_service_pb2.UploadDatasetRequest],
    *,
    budget: MemoryBudget | None = None,
    context: Any = None,
) -> DatasetEntry:
    """Store the uploaded dataset and return its metadata; nothing changes on any failure."""
    first = await anext(requests, None)
    if first is None or first.WhichOneof("payload") != "header":
        raise InvalidArgument("the first message of an upload must be its header")
    header = first.header
    check_header(header)
    name = object_name(header.dataset_id, header.format)
    if not header.overwrite:
        await _refuse_existing(catalog, header.dataset_id, "exists")
    # A Parquet upload holds its footer candidate; a CSV one a chunk in flight.
    reserve = CHUNK_LIMIT * 2 + (MAX_FOOTER_BYTES if header.format == data_pb2.DATASET_FORMAT_PARQUET else 0)
    if budget is None:
        budget = MemoryBudget(1 << 62)
    async with budget.reserve(reserve, f"an upload of {header.dataset_id!r}"):
        try:
            sink = await catalog.storage.open_upload(name)
        except ObjectBusy as exc:
            raise FailedPrecondition(f"dataset {header.dataset_id!r}: {exc}; retry when it has finished") from None
        except StorageFull as exc:
            raise ResourceExhausted(f"{exc.reason} writing dataset {header.dataset_id!r} under {exc.where}") from None
        if context is not None:
            # grpc.aio may never resume a handler whose client went away mid-stream; the
            # done-callback runs however the RPC ends, so the temporary object goes with it.
            context.add_done_callback(lambda _: sink.discard_now())
        try:
            return await _stream_and_commit(catalog, header, name, requests, sink)
        except StorageFull as exc:
            raise ResourceExhausted(
                f"{exc.reason} writing dataset {header.dataset_id!r} under {exc.where}; nothing new is visible"
            ) from None
        finally:
            with anyio.CancelScope(shield=True):
                await sink.abort()  # a no-op after a commit


async def _refuse_existing(catalog: Catalog, dataset_id: str, verb: str) -> None:
    names = [object_name(dataset_id, f) for f in EXTENSIONS]
    existing = [n for n in names if await catalog.storage.stat(n) is not None]
    if existing:
        raise AlreadyExists(f"dataset {dataset_id!r} {verb} ({', '.join(existing)}); set overwrite to replace it")


async def _stream_and_commit(
    catalog: Catalog,
    header: data_service_pb2.UploadHeader,
    name: str,
    requests: AsyncIterator[data_service_pb2.UploadDatasetRequest],
    sink: UploadSink,
) -> DatasetEntry:
    fmt = header.format
    indexer: CsvIndexer | _ParquetTail = (
        CsvIndexer(name, checkpoint_rows=catalog.checkpoint_rows, max_row_bytes=catalog.max_row_bytes)
        if fmt == data_pb2.DATASET_FORMAT_CSV
        else _ParquetTail(name)
    )
    sha = hashlib.sha256()
    received = 0
    try:
        async for message in requests:
            if message.WhichOneof("payload") != "chunk":
                raise InvalidArgument("only chunks may follow the upload header")
            chunk = message.chunk
            if len(chunk) > CHUNK_LIMIT:
                raise InvalidArgument(f"chunks must be at most {CHUNK_LIMIT} bytes, got {len(chunk)}")
            received += len(chunk)
            if received > header.size_bytes:
                raise InvalidArgument(f"upload is larger than the announced {header.size_bytes} bytes")
            sha.update(chunk)
            await indexer.feed(chunk)
            await sink.write(chunk)
        if received != header.size_bytes:
            raise InvalidArgument(f"upload ended after {received} of {header.size_bytes} bytes")
        digest = sha.hexdigest()
        if digest != header.sha256:
            raise InvalidArgument(f"SHA-256 mismatch: announced {header.sha256}, received {digest}")
        csv: CsvIndex | None = None
        parquet: ParquetMeta | None = None
        if isinstance(indexer, CsvIndexer):
            csv = indexer.finish()
        else:
            parquet = await anyio.to_thread.run_sync(indexer.finish, received)
    except (FailedPrecondition, InvalidArgument) as exc:
        # A dataset the service could not serve is bad input here, and nothing was kept.
        raise InvalidArgument(f"{exc.message}; nothing was stored") from None
    async with catalog.commit_lock(header.dataset_id):
        others = [object_name(header.dataset_id, f) for f in EXTENSIONS if f != fmt]
        if not header.overwrite:
            await _refuse_existing(catalog, header.dataset_id, "was created meanwhile")
        try:
            info = await sink.commit(overwrite=header.overwrite)
        except ObjectExists:
            raise AlreadyExists(f"dataset {header.dataset_id!r} was created meanwhile") from None
        except ObjectBusy as exc:
            raise FailedPrecondition(f"dataset {header.dataset_id!r}: {exc}; nothing was stored, retry") from None
        with anyio.CancelScope(shield=True):  # the commit happened: finish the bookkeeping
            try:
                entry = await catalog.install(info, csv=csv, parquet=parquet, sha256=digest)
            except StorageFull as exc:
                raise ResourceExhausted(
                    f"{exc.reason} writing the index of dataset {header.dataset_id!r} under {exc.where}; the "
                    "dataset itself was stored, and its index is built again when it is first read"
                ) from None
            for other in others:
                await catalog.remove_object(other)
    return entry
