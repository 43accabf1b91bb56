"""UploadDataset: a header, then chunks of at most 4 MiB, verified before anything is visible.

The bytes go to an upload sink of the storage (a hidden temporary file, or uncommitted
blob blocks) while their SHA-256 is computed. Only when the stream ends with exactly the
announced size and hash, and the object looks like the announced format, is it committed
under its name; any failure, cancellation or disconnect discards it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from typing import Final

import anyio

from livecalc.data.v1 import data_pb2, data_service_pb2
from services.common.errors import AlreadyExists, FieldViolation, InvalidArgument, LivecalcError
from services.common.storage.base import ObjectExists
from services.data.catalog import EXTENSIONS, Catalog, DatasetEntry, object_name
from services.data.ids import validate_dataset_id

CHUNK_LIMIT: Final = 4 << 20
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


async def receive_upload(
    catalog: Catalog, requests: AsyncIterator[data_service_pb2.UploadDatasetRequest]
) -> DatasetEntry:
    """Store the uploaded dataset and return its metadata; nothing is kept on any failure."""
    first = await anext(requests, None)
    if first is None or first.WhichOneof("payload") != "header":
        raise InvalidArgument("the first message of an upload must be its header")
    header = first.header
    check_header(header)
    fmt = header.format
    name = object_name(header.dataset_id, fmt)
    others = [object_name(header.dataset_id, f) for f in EXTENSIONS if f != fmt]
    existing = [n for n in (name, *others) if await catalog.storage.stat(n) is not None]
    if existing and not header.overwrite:
        raise AlreadyExists(
            f"dataset {header.dataset_id!r} exists ({', '.join(existing)}); set overwrite to replace it"
        )
    sink = await catalog.storage.open_upload(name)
    committed = False
    try:
        sha = hashlib.sha256()
        received = 0
        head = b""
        tail = b""
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
            if len(head) < 4096:
                head += chunk[: 4096 - len(head)]
            tail = (tail + chunk)[-8:]
            await sink.write(chunk)
        if received != header.size_bytes:
            raise InvalidArgument(f"upload ended after {received} of {header.size_bytes} bytes; nothing was stored")
        digest = sha.hexdigest()
        if digest != header.sha256:
            raise InvalidArgument(f"SHA-256 mismatch: announced {header.sha256}, received {digest}; nothing was stored")
        _check_format(fmt, head, tail)
        try:
            await sink.commit(overwrite=header.overwrite)
        except ObjectExists:
            raise AlreadyExists(f"dataset {header.dataset_id!r} was created meanwhile") from None
        committed = True
    finally:
        if not committed:
            with anyio.CancelScope(shield=True):
                await sink.abort()
    if header.overwrite:
        for other in others:
            await catalog.remove_object(other)
    try:
        return await catalog.get(header.dataset_id, known_sha256=digest)
    except LivecalcError as exc:  # e.g. a CSV the row index cannot handle: do not keep it
        with anyio.CancelScope(shield=True):
            await catalog.remove_object(name)
        raise type(exc)(f"{exc.message}; the upload was not kept") from None


def _check_format(fmt: data_pb2.DatasetFormat.ValueType, head: bytes, tail: bytes) -> None:
    if fmt == data_pb2.DATASET_FORMAT_PARQUET:
        if head[:4] != b"PAR1" or tail[-4:] != b"PAR1":
            raise InvalidArgument("upload announced as Parquet lacks the Parquet magic bytes; nothing was stored")
        return
    line = head.split(b"\n", 1)[0]
    try:
        line.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidArgument("upload announced as CSV has no UTF-8 header row; nothing was stored") from None
    if not line.strip() or head[:4] == b"PAR1":
        raise InvalidArgument("upload announced as CSV does not start with a header row; nothing was stored")
