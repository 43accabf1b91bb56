"""The small async object-storage interface every backend implements.

Datasets (the data service) and model packages (the gateway's package store) see storage
only through `Storage` (the job store is SQLite on the gateway's disk, apart): flat object
names in one namespace (a directory or a blob container), stat, ranged reads, small whole
writes, and uploads that stay invisible until `commit()`. Keeping reads ranged everywhere
is what lets a 50 GB object be served by a process with little memory. Nothing here knows
what the objects mean: callers map `Storage.kind` to their own vocabulary.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal, Protocol

from services.common.errors import ResourceExhausted

StorageKind = Literal["local", "azure_blob"]
KINDS: Final[tuple[StorageKind, ...]] = ("local", "azure_blob")


@dataclass(frozen=True)
class ObjectInfo:
    """What a stat of one stored object tells: enough to notice that it changed."""

    name: str
    size: int
    modified: datetime
    #: A token that changes whenever the content may have changed: the blob ETag, or
    #: "size:mtime_ns" for a local file.
    change_token: str
    #: True when `change_token` is an ETag the backend can check on ranged reads.
    is_etag: bool = False


class UploadSink(Protocol):
    """An object being written; nothing is visible under its name before `commit()`."""

    async def write(self, data: bytes) -> None:
        """Append the next bytes."""

    async def commit(self, *, overwrite: bool) -> ObjectInfo:
        """Make the object visible under its name atomically; returns the committed object's info.

        The info (change token included) describes exactly the bytes written, even if another
        writer replaces the object right after.
        """

    async def abort(self) -> None:
        """Discard everything written; idempotent, also after a failed commit."""

    def discard_now(self) -> None:
        """Synchronous last-resort `abort()` for done-callbacks (no awaiting possible there)."""


class Storage(Protocol):
    """Flat namespace of objects; every method may raise OSError-like backend errors, and a
    write that finds no room raises `StorageFull`."""

    @property
    def kind(self) -> StorageKind:
        """Which backend this is (callers map it to their own enums and metric labels)."""

    def location(self, name: str) -> str:
        """Where the object lives, for people: a path or a URL without credentials."""

    async def list(self) -> list[ObjectInfo]:
        """All visible objects, in no particular order."""

    async def stat(self, name: str) -> ObjectInfo | None:
        """The object's info, or None if it does not exist."""

    async def read_range(self, name: str, offset: int, length: int, *, change_token: str | None = None) -> bytes:
        """Bytes [offset, offset + length) (fewer at the end of the object).

        With `change_token`, the read fails with `ObjectChanged` if the object no longer
        has that token (checked by the backend where it can).
        """

    async def put(self, name: str, data: bytes) -> None:
        """Write a small object whole, replacing any previous one (index sidecars)."""

    async def delete(self, name: str) -> bool:
        """Delete the object; False if it did not exist."""

    async def open_upload(self, name: str) -> UploadSink:
        """Start writing `name`; see UploadSink."""

    def scope(self, name: str) -> Storage:
        """The objects of the sub-namespace `name` (a subdirectory, a blob-name prefix).

        One path segment; chain calls for deeper ones. The parent's `list()` does not show
        the child's objects, and closing a child releases nothing the parent still uses.
        """

    async def close(self) -> None:
        """Release connections."""


class StorageFull(ResourceExhausted):
    """The backend had no room for a write (a full disk, a quota): RESOURCE_EXHAUSTED.

    ``name`` is the object being written, ``where`` the directory or container; callers that
    know what the object is re-raise with their own words (a dataset, a package).
    """

    def __init__(self, name: str, where: str, reason: str = "no space left on device") -> None:
        super().__init__(f"{reason} writing {name} under {where}")
        self.name = name
        self.where = where
        self.reason = reason


class ObjectChanged(Exception):
    """The object changed (or vanished) while it was being read."""


class ObjectExists(Exception):
    """A commit without overwrite found the name taken."""


class ObjectBusy(Exception):
    """Another upload of the same name is in progress where the backend allows only one."""


def check_segment(name: str) -> str:
    """`name` if it is one safe path segment (a scope name), else ValueError."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or name.startswith("."):
        raise ValueError(f"bad scope name {name!r}")
    return name


async def read_sequential(
    storage: Storage, name: str, size: int, *, chunk: int = 8 << 20, change_token: str | None = None
) -> AsyncIterator[bytes]:
    """The object's bytes in order, `chunk` bytes at a time (one ranged read each)."""
    offset = 0
    while offset < size:
        data = await storage.read_range(name, offset, min(chunk, size - offset), change_token=change_token)
        if not data:
            raise ObjectChanged(f"{name} ended at {offset} bytes, expected {size}")
        offset += len(data)
        yield data


class CountingStorage:
    """Wraps a Storage and counts bytes and calls of ranged reads (benchmarks, tests)."""

    def __init__(self, inner: Storage) -> None:
        self.inner = inner
        self.bytes_read = 0
        self.reads = 0

    def reset(self) -> None:
        self.bytes_read = 0
        self.reads = 0

    @property
    def kind(self) -> StorageKind:
        return self.inner.kind

    def location(self, name: str) -> str:
        return self.inner.location(name)

    async def list(self) -> list[ObjectInfo]:
        return await self.inner.list()

    async def stat(self, name: str) -> ObjectInfo | None:
        return await self.inner.stat(name)

    async def read_range(self, name: str, offset: int, length: int, *, change_token: str | None = None) -> bytes:
        data = await self.inner.read_range(name, offset, length, change_token=change_token)
        self.bytes_read += len(data)
        self.reads += 1
        return data

    async def put(self, name: str, data: bytes) -> None:
        await self.inner.put(name, data)

    async def delete(self, name: str) -> bool:
        return await self.inner.delete(name)

    async def open_upload(self, name: str) -> UploadSink:
        return await self.inner.open_upload(name)

    def scope(self, name: str) -> Storage:
        return CountingStorage(self.inner.scope(name))

    async def close(self) -> None:
        await self.inner.close()
