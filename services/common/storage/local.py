"""Local-directory storage: the embedded default backend.

Objects are files directly in the root directory. Uploads are written to a hidden
`.upload-<random>-<name>` file in the same directory and renamed into place on commit,
so a crash or an aborted stream never leaves a partial object visible; an upload that ends
any other way removes its file at once (`abort`, or `discard_now` from a done-callback).
File I/O runs in worker threads so the event loop keeps serving other RPCs.

Change tokens are `size:mtime_ns:inode`: two writes of the same size within one clock tick
have equal mtimes, but every committed upload is a new file and so a new inode.
"""

from __future__ import annotations

import os
import secrets
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import anyio.to_thread

from services.common.errors import InvalidArgument
from services.common.storage.base import ObjectChanged, ObjectExists, ObjectInfo, StorageKind, UploadSink, check_segment

UPLOAD_PREFIX = ".upload-"
#: Orphaned upload files (from a killed process) older than this are removed at start.
STALE_UPLOAD_SECONDS = 3600.0


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
            tmp = path.with_name(f"{UPLOAD_PREFIX}{secrets.token_hex(8)}-{name}")
            try:
                tmp.write_bytes(data)
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)

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
        tmp = path.with_name(f"{UPLOAD_PREFIX}{secrets.token_hex(8)}-{name}")
        handle = await anyio.to_thread.run_sync(lambda: tmp.open("xb"))
        return _LocalUpload(path, tmp, handle)

    def remove_stale_uploads(self, older_than: float = STALE_UPLOAD_SECONDS) -> int:
        """Delete upload files left by a killed process; returns how many were removed."""
        cutoff = time.time() - older_than
        removed = 0
        for path in self.root.glob(f"{UPLOAD_PREFIX}*"):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
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
        handle = self._handle
        await anyio.to_thread.run_sync(lambda: handle.write(data))

    async def commit(self, *, overwrite: bool) -> ObjectInfo:
        handle, tmp, path = self._handle, self._tmp, self._path

        def finish() -> ObjectInfo:
            handle.flush()
            os.fsync(handle.fileno())
            # stat before the rename: the same inode afterwards, and no later writer's file
            info = _info(path.name, os.fstat(handle.fileno()))
            handle.close()
            if overwrite:
                os.replace(tmp, path)
                return info
            try:
                os.link(tmp, path)  # atomic "create if absent"
            except FileExistsError:
                raise ObjectExists(path.name) from None
            tmp.unlink()
            return info

        try:
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
        self._handle.close()
        self._tmp.unlink(missing_ok=True)
