"""The package store: verified archives and their records over the shared storage backends.

Objects (flat names, local directory or Azure container): ``package-<hash>.zip``, the archive
as uploaded, and ``package-<hash>.json``, its record (the `Package` message as proto JSON).
A package becomes visible only when its record exists, and the record is written after the
archive is committed: a crash in between leaves an invisible archive that the next upload of
the same package completes. Nothing is stored before `verify_archive` accepted the bytes,
and a full disk is RESOURCE_EXHAUSTED naming the package and where (its upload file removed).

Packages are a tenant's: each tenant has its own names, ``package-<hash>.*`` for the implicit
tenant ``''`` (auth off, and every package stored before tenants) and
``tenant-<t>-package-<hash>.*`` for tenant T, where ``<t>`` is the first 32 hex digits of
SHA-256(T). The same package uploaded by two tenants is stored once for each; an upload is
idempotent within a tenant. Every read names the tenant (engines download a job's package
acting for the job's tenant: services/common/auth/roles.py ACT_FOR_TENANT).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Final

import anyio.to_thread
from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from livecalc.gateway.v1 import package_pb2
from services.common.errors import InvalidArgument, NotFound, ResourceExhausted
from services.common.storage.base import ObjectExists, Storage, StorageFull, read_sequential
from services.valuation.packages.archive import PackageLimits
from services.valuation.packages.config import pipeline_of
from services.valuation.packages.package import Package, verify_archive

PREFIX: Final = "package-"
_HASH: Final = re.compile(r"[0-9a-f]{64}")
_TYPES: Final = {
    "wasm": package_pb2.ASSET_TYPE_WASM,
    "assumption": package_pb2.ASSET_TYPE_ASSUMPTION,
    "python": package_pb2.ASSET_TYPE_PYTHON,
    "data": package_pb2.ASSET_TYPE_DATA,
}
DEFAULT_PAGE: Final = 50
MAX_PAGE: Final = 500
WRITE_PIECE: Final = 4 << 20


def namespace(tenant: str) -> str:
    """The object-name prefix of ``tenant``'s packages."""
    if not tenant:
        return PREFIX
    return f"tenant-{hashlib.sha256(tenant.encode()).hexdigest()[:32]}-{PREFIX}"


def not_stored(package_hash: str) -> NotFound:
    """The one answer for a package that is not stored and for another tenant's."""
    return NotFound(f"package {package_hash} is not stored")


def check_hash(package_hash: str) -> str:
    if not _HASH.fullmatch(package_hash):
        raise InvalidArgument("package_hash must be 64 lower-case hex digits", ())
    return package_hash


def record_of(package: Package, archive: bytes, uploaded: datetime) -> package_pb2.Package:
    """The stored record of a verified package."""
    stamp = Timestamp()
    stamp.FromDatetime(uploaded)
    config = package.config
    return package_pb2.Package(
        package_hash=package.package_hash,
        name=str(config["name"]),
        version=str(config["version"]),
        archive_sha256=hashlib.sha256(archive).hexdigest(),
        size_bytes=len(archive),
        assets=[
            package_pb2.Asset(path=a.path, sha256=a.sha256, size_bytes=a.size, type=_TYPES[a.type])
            for a in package.manifest.assets
        ],
        pipeline=[
            package_pb2.PipelineNode(id=n.id, engine=n.engine, inputs=n.inputs, outputs=n.outputs)
            for n in pipeline_of(config)
        ],
        default_scenario_count=int(config["scenarios"]["count"]),
        upload_time=stamp,
    )


class PackageStore:
    """Stores verified packages; concurrent uploads of one package store it once."""

    def __init__(self, storage: Storage, limits: PackageLimits | None = None) -> None:
        self.storage = storage
        self.limits = limits or PackageLimits()
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    @staticmethod
    def _archive(package_hash: str, prefix: str = PREFIX) -> str:
        return f"{prefix}{package_hash}.zip"

    @staticmethod
    def _record(package_hash: str, prefix: str = PREFIX) -> str:
        return f"{prefix}{package_hash}.json"

    async def put(self, archive: bytes, tenant: str = "") -> tuple[package_pb2.Package, bool]:
        """Verify and store ``archive`` for ``tenant``; returns its record and whether the
        tenant had it already."""
        package = await anyio.to_thread.run_sync(verify_archive, archive, self.limits)
        key, prefix = package.package_hash, namespace(tenant)
        lock = self._locks.setdefault((prefix, key), asyncio.Lock())
        async with lock:
            existing = await self.find(key, tenant)
            if existing is not None:
                return existing, True
            record = record_of(package, archive, datetime.now(UTC))
            try:
                sink = await self.storage.open_upload(self._archive(key, prefix))
                try:
                    for start in range(0, len(archive), WRITE_PIECE):
                        await sink.write(archive[start : start + WRITE_PIECE])
                    await sink.commit(overwrite=True)  # an invisible leftover of a crashed upload is replaced
                except ObjectExists:
                    pass
                finally:
                    await sink.abort()
                await self.storage.put(self._record(key, prefix), json_format.MessageToJson(record).encode())
            except StorageFull as exc:
                raise ResourceExhausted(
                    f"{exc.reason} writing package {key} under {exc.where}; the package was not stored"
                ) from None
        self._locks.pop((prefix, key), None)
        return record, False

    async def _find_in(self, package_hash: str, prefix: str) -> package_pb2.Package | None:
        info = await self.storage.stat(self._record(package_hash, prefix))
        if info is None:
            return None
        raw = await self.storage.read_range(info.name, 0, info.size)
        return json_format.Parse(raw, package_pb2.Package())

    async def find(self, package_hash: str, tenant: str = "") -> package_pb2.Package | None:
        """``tenant``'s record of the package, None when that tenant has not stored it."""
        check_hash(package_hash)
        return await self._find_in(package_hash, namespace(tenant))

    async def get(self, package_hash: str, tenant: str = "") -> package_pb2.Package:
        found = await self.find(package_hash, tenant)
        if found is None:
            raise not_stored(package_hash)
        return found

    async def list(self, page_size: int, page_token: str, tenant: str = "") -> tuple[list[package_pb2.Package], str]:
        """One page of ``tenant``'s packages, newest first; the token is the last (upload time,
        hash) seen."""
        if page_size < 0:
            raise InvalidArgument("page_size must be ≥ 0", ())
        size = min(page_size or DEFAULT_PAGE, MAX_PAGE)
        prefix = namespace(tenant)
        hashes = [
            o.name[len(prefix) : -len(".json")]
            for o in await self.storage.list()
            if o.name.startswith(prefix) and o.name.endswith(".json")
        ]
        records = []
        for package_hash in hashes:
            if not _HASH.fullmatch(package_hash):
                continue
            found = await self._find_in(package_hash, prefix)
            if found is not None:
                records.append(found)
        records.sort(key=lambda r: (-r.upload_time.ToNanoseconds(), r.package_hash))
        if page_token:
            try:
                nanos_text, after = page_token.split(":", 1)
                cursor = (-int(nanos_text), after)
            except ValueError:
                raise InvalidArgument("page_token is not one this service issued", ()) from None
            records = [r for r in records if (-r.upload_time.ToNanoseconds(), r.package_hash) > cursor]
        page = records[:size]
        token = ""
        if len(records) > size:
            last = page[-1]
            token = f"{last.upload_time.ToNanoseconds()}:{last.package_hash}"
        return page, token

    async def download(
        self, package_hash: str, piece: int = 1 << 20, tenant: str = ""
    ) -> AsyncIterator[tuple[int, str, int, bytes]]:
        """(size, sha256, offset, bytes) of ``tenant``'s stored archive, in order."""
        record, prefix = await self.get(package_hash, tenant), namespace(tenant)
        info = await self.storage.stat(self._archive(package_hash, prefix))
        if info is None:
            raise NotFound(f"package {package_hash} has a record but no archive")
        offset = 0
        async for data in read_sequential(
            self.storage, info.name, info.size, chunk=piece, change_token=info.change_token
        ):
            yield record.size_bytes, record.archive_sha256, offset, data
            offset += len(data)
