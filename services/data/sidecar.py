"""Index sidecars: what the catalog learned about a stored object, kept beside it.

A sidecar is the object `.<name>.idx` in the same namespace (a hidden file, or a blob
next to the data blob), so it travels with the data and is shared by every data service
process on that storage. Layout (little-endian):

    8 bytes   magic b"LCIDX001"
    8 bytes   u64 length H of the JSON header
    H bytes   JSON header: the object's change token, its version, row count, columns, ...
    rest      i64 array: CSV byte offsets of every `checkpoint_rows`-th row, then the end

The header is read on its own (metadata answers read a few hundred bytes); the offsets
only when rows are read. A sidecar whose change token differs from the object's is stale
and is rebuilt.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from services.common.storage.base import Storage

MAGIC: Final = b"LCIDX001"
PREFIX: Final = len(MAGIC) + 8
#: First read of a sidecar: enough for the header of any ordinary dataset.
HEAD_READ: Final = 4 << 10


def sidecar_name(object_name: str) -> str:
    return f".{object_name}.idx"


@dataclass(frozen=True)
class Sidecar:
    header: dict[str, Any]
    #: Byte position of the offsets array within the sidecar.
    offsets_at: int
    offsets_count: int


def encode(header: dict[str, Any], offsets: npt.NDArray[np.int64] | None = None) -> bytes:
    body = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    arr = b"" if offsets is None else np.asarray(offsets, dtype="<i8").tobytes()
    return MAGIC + struct.pack("<Q", len(body)) + body + arr


async def read_header(storage: Storage, object_name: str) -> Sidecar | None:
    """The sidecar's header, or None if there is none or it is unreadable."""
    name = sidecar_name(object_name)
    info = await storage.stat(name)
    if info is None or info.size < PREFIX:
        return None
    try:
        head = await storage.read_range(name, 0, min(HEAD_READ, info.size))
    except Exception:  # noqa: BLE001 - a broken sidecar is rebuilt, never fatal
        return None
    if head[: len(MAGIC)] != MAGIC:
        return None
    (length,) = struct.unpack("<Q", head[len(MAGIC) : PREFIX])
    if PREFIX + length > info.size:
        return None
    if PREFIX + length > len(head):
        head += await storage.read_range(name, len(head), PREFIX + length - len(head))
    try:
        header = json.loads(head[PREFIX : PREFIX + length])
    except ValueError:
        return None
    if not isinstance(header, dict):
        return None
    rest = info.size - PREFIX - length
    return Sidecar(header=header, offsets_at=PREFIX + length, offsets_count=rest // 8)


async def read_offsets(storage: Storage, object_name: str, sidecar: Sidecar) -> npt.NDArray[np.int64]:
    raw = await storage.read_range(sidecar_name(object_name), sidecar.offsets_at, sidecar.offsets_count * 8)
    if len(raw) != sidecar.offsets_count * 8:
        raise ValueError(f"index of {object_name} is truncated")
    return np.frombuffer(raw, dtype="<i8").astype(np.int64)
