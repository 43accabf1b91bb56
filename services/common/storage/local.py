"""Local-directory storage: the embedded default backend.

Objects are files directly in the root directory. Uploads are written to a hidden
`.upload-<random>-<name>` file in the same directory and renamed into place on commit,
so a crash or an aborted stream never leaves a partial object visible; an upload that ends
any other way removes its file at once (`abort`, or `discard_now` from a done-callback),
a full disk included: that write raises `StorageFull` (RESOURCE_EXHAUSTED), not OSError.
File I/O runs in worker threads so the event loop keeps serving other RPCs.

Every upload file is `flock`ed by its writer for as long as it is open, so the kernel tells
a live upload from one whose process died: `remove_stale_uploads` (at start) deletes every
upload file nobody holds, in the root and its scopes, however young.

Change tokens are `size:mtime_ns:inode`: two writes of the same size within one clock tick
have equal mtimes, but every committed upload is a new file and so a new inode.
"""

from __future__ import annotations

import errno
import fcntl
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import anyio.to_thread

from services.common.errors import InvalidArgument
from services.common.storage.base import (
    ObjectChanged,
    ObjectExists,
    ObjectInfo,
    StorageFull,
    StorageKind,
    UploadSink,
    check_segment,
)

UPLOAD_PREFIX = ".upload-"
_FULL = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded"}


@contextmanager
def _room(path: Path) -> Iterator[None]:
    """OSError of a full disk or quota while writing object `path` → `StorageFull` naming it."""
    try:
        yield
    except OSError as exc:
        reason = _FULL.get(exc.errno or 0)
        if reason is None:
            raise
        raise StorageFull(path.name, str(path.parent), reason) from None


def _locked_temp(path: Path) -> tuple[Path, BinaryIO]:
    """A new upload file for `path`, open and `flock`ed (see the module docstring)."""
    while True:
        tmp = path.with_name(f"{UPLOAD_PREFIX}{secrets.token_hex(8)}-{path.name}")
        with _room(path):
            handle = tmp.open("xb")
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            if os.stat(tmp).st_ino == os.fstat(handle.fileno()).st_ino:
                return tmp, handle
        except FileNotFoundError:
            pass
        handle.close()  # a start-up clean-up removed it between open and flock: take another name


def _discard(tmp: Path, handle: BinaryIO) -> None:
    """Close and delete an upload file; a failed flush of bytes being thrown away is no loss."""
    try:
        handle.close()
    except OSError:
        pass
    finally:
        tmp.unlink(missing_ok=True)


def _token(st: os.stat_result) -> str:
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"


def _info(name: str, st: os.stat_result) -> ObjectInfo:
    return ObjectInfo(
        name=name,
        size=st.st_size,
        modified=datetime.fromtimestamp(st.st_mtime, UTC),
        change_token=_token(st),
    )


class LocalStorage:
    """Objects as files in one directory (created if missing)."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        if self.root.exists() and not self.root.is_dir():
            raise InvalidArgument(f"dataset root {self.root} is not a directory")
        self.root.mkdir(parents=True, exist_ok=True)

    @property
    def kind(self) -> StorageKind:
        return "local"

    def _path(self, name: str) -> Path:
        # Names come from validated ids plus fixed suffixes; this guards the invariant.
        if "/" in name or "\\" in name or name in ("", ".", ".."):
            raise ValueError(f"bad object name {name!r}")
        return self.root / name

    def location(self, name: str) -> str:
        return str(self._path(name))

    def scope(self, name: str) -> LocalStorage:
        """The subdirectory `name` (files only are objects, so the parent never lists it)."""
        return LocalStorage(self.root / check_segment(name))

    async def list(self) -> list[ObjectInfo]:
        def scan() -> list[ObjectInfo]:
            out = []
            with os.scandir(self.root) as entries:
                for entry in entries:
                    if entry.is_file():
                        try:
                            out.append(_info(entry.name, entry.stat()))
                        except FileNotFoundError:
                            continue
            return out

        return await anyio.to_thread.run_sync(scan)

    async def stat(self, name: str) -> ObjectInfo | None:
        path = self._path(name)

        def stat() -> ObjectInfo | None:
            try:
                st = path.stat()
            except FileNotFoundError:
                return None
            return _info(name, st) if path.is_file() else None

        return await anyio.to_thread.run_sync(stat)

    async def read_range(self, name: str, offset: int, length: int, *, change_token: str | None = None) -> bytes:
        path = self._path(name)

        def read() -> bytes:
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                raise ObjectChanged(f"{name} vanished") from None
            try:
                if change_token is not None:
                    st = os.fstat(fd)
                    if _token(st) != change_token:
                        raise ObjectChanged(f"{name} changed")
                return os.pread(fd, length, offset)
            finally:
                os.close(fd)

        return await anyio.to_thread.run_sync(read)

    async def put(self, name: str, data: bytes) -> None:
        path = self._path(name)

        def write() -> None:
            tmp, handle = _locked_temp(path)
            try:
                with _room(path):
                    handle.write(data)
                    handle.flush()
                    os.replace(tmp, path)
            finally:
                _discard(tmp, handle)

        await anyio.to_thread.run_sync(write)

    async def delete(self, name: str) -> bool:
        path = self._path(name)

        def delete() -> bool:
            try:
                path.unlink()
            except FileNotFoundError:
                return False
            return True

        return await anyio.to_thread.run_sync(delete)

    async def open_upload(self, name: str) -> UploadSink:
        path = self._path(name)
        tmp, handle = await anyio.to_thread.run_sync(_locked_temp, path)
        return _LocalUpload(path, tmp, handle)

    def remove_stale_uploads(self) -> int:
        """Delete the upload files of writers that are gone (a killed or crashed process), here
        and in every scope below; returns how many.

        A live writer holds its file's lock, so its upload is left alone whatever its age.
        """
        removed = 0
        for path in self.root.rglob(f"{UPLOAD_PREFIX}*"):
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            try:
                path.unlink()  # while holding the lock: a writer that locks it next sees it gone
                removed += 1
            except FileNotFoundError:
                pass
            finally:
                os.close(fd)
        return removed

    async def close(self) -> None:
        return None


class _LocalUpload:
    def __init__(self, path: Path, tmp: Path, handle: BinaryIO) -> None:
        self._path = path
        self._tmp = tmp
        self._handle = handle
        self._done = False

    async def write(self, data: bytes) -> None:
        handle, path = self._handle, self._path

        def write() -> None:
            with _room(path):
                handle.write(data)

        await anyio.to_thread.run_sync(write)

    async def commit(self, *, overwrite: bool) -> ObjectInfo:
        handle, tmp, path = self._handle, self._tmp, self._path

        def finish() -> ObjectInfo:
            handle.flush()
            os.fsync(handle.fileno())
            # stat before the rename: the same inode afterwards, and no later writer's file
            info = _info(path.name, os.fstat(handle.fileno()))
            if overwrite:
                os.replace(tmp, path)
                return info
            try:
                os.link(tmp, path)  # atomic "create if absent"
            except FileExistsError:
                raise ObjectExists(path.name) from None
            return info

        try:
            with _room(path):  # a rename can need room too (a directory that grows)
                return await anyio.to_thread.run_sync(finish)
        finally:
            await self.abort()

    async def abort(self) -> None:
        # Synchronous on purpose: closing and unlinking are quick, and an awaited clean-up
        # can be skipped by a second cancellation of a task that is already being torn down.
        self.discard_now()

    def discard_now(self) -> None:
        if self._done:
            return
        self._done = True
        _discard(self._tmp, self._handle)
