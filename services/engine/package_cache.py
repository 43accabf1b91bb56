"""The engine's on-disk cache of package archives, bounded in bytes, least recently used out.

Archives are stored as ``<root>/<packageHash>.zip`` (written to a temporary file, then renamed,
so a reader never sees half an archive). The cache only saves downloads: every archive read
from it is verified again by the loader, so a corrupt or tampered file costs a download, never
a wrong result. Recency survives restarts through the files' modification times (touched on
every hit). Thread safety: one lock around the index and the files.
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
import time
from pathlib import Path

_HASH = re.compile(r"[0-9a-f]{64}")


class PackageCache:
    """Archives by package hash under ``root``; at most ``limit_bytes`` in all."""

    def __init__(self, root: Path, limit_bytes: int) -> None:
        self.root = root
        self.limit_bytes = max(0, int(limit_bytes))
        self._lock = threading.Lock()
        self._sizes: dict[str, int] = {}  # hash → bytes, least recently used first
        self._usable = True
        try:
            root.mkdir(parents=True, exist_ok=True)
            found = []
            for path in root.iterdir():
                if path.suffix == ".zip" and _HASH.fullmatch(path.stem):
                    stat = path.stat()
                    found.append((stat.st_mtime, path.stem, stat.st_size))
                elif path.name.endswith(".tmp"):
                    path.unlink(missing_ok=True)  # left by a process that died mid-write
            for _, digest, size in sorted(found):
                self._sizes[digest] = size
            with self._lock:
                self._evict()
        except OSError:
            self._usable = False  # a read-only or missing cache dir only costs downloads

    def _path(self, package_hash: str) -> Path:
        return self.root / f"{package_hash}.zip"

    @property
    def size_bytes(self) -> int:
        with self._lock:
            return sum(self._sizes.values())

    def hashes(self) -> list[str]:
        """Cached package hashes, most recently used first."""
        with self._lock:
            return list(reversed(self._sizes))

    def get(self, package_hash: str) -> bytes | None:
        """The archive, or None when it is not cached (a hit makes it the most recently used)."""
        if not _HASH.fullmatch(package_hash):
            return None
        with self._lock:
            if package_hash not in self._sizes:
                return None
            path = self._path(package_hash)
            try:
                data = path.read_bytes()
                now = time.time()
                os.utime(path, (now, now))
            except OSError:
                self._sizes.pop(package_hash, None)
                return None
            self._sizes[package_hash] = self._sizes.pop(package_hash)
            return data

    def discard(self, package_hash: str) -> None:
        """Forget an archive (e.g. one that failed verification)."""
        with self._lock:
            self._sizes.pop(package_hash, None)
            if _HASH.fullmatch(package_hash):
                self._path(package_hash).unlink(missing_ok=True)

    def put(self, package_hash: str, data: bytes) -> bool:
        """Store an archive, evicting the least recently used beyond the limit; False if not kept."""
        if not self._usable or not _HASH.fullmatch(package_hash) or len(data) > self.limit_bytes:
            return False
        with self._lock:
            try:
                fd, tmp = tempfile.mkstemp(dir=self.root, suffix=".tmp")
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                os.replace(tmp, self._path(package_hash))
            except OSError:
                return False
            self._sizes.pop(package_hash, None)
            self._sizes[package_hash] = len(data)
            self._evict()
            return package_hash in self._sizes

    def _evict(self) -> None:
        total = sum(self._sizes.values())
        while total > self.limit_bytes and self._sizes:
            oldest = next(iter(self._sizes))
            total -= self._sizes.pop(oldest)
            self._path(oldest).unlink(missing_ok=True)
