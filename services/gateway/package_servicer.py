"""PackageService: upload (verified before it becomes visible), get, list and download.

An upload is a header (size, SHA-256) then chunks of at most 4 MiB; the whole archive is held
in memory (packages are capped at `PackageLimits.max_archive_bytes`), checked against the
header, then verified by the store. Failures are typed errors that the interceptor maps.

Packages are the caller's tenant's (`current_principal()`; auth off is the one tenant ''):
another tenant's package answers NOT_FOUND exactly as an unknown hash does, and ListPackages
lists the caller's tenant's. Engines download a job's package acting for the job's tenant.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any, Final

from grpc import aio

from livecalc.gateway.v1 import package_service_pb2, package_service_pb2_grpc
from services.common.auth.interceptor import current_principal
from services.common.errors import InvalidArgument
from services.gateway.package_store import PackageStore, check_hash

MAX_CHUNK: Final = 4 << 20
DOWNLOAD_CHUNK: Final = 1 << 20


class PackageServicer(package_service_pb2_grpc.PackageServiceServicer):
    def __init__(self, store: PackageStore) -> None:
        self.store = store

    async def UploadPackage(
        self,
        request_iterator: AsyncIterator[package_service_pb2.UploadPackageRequest],
        context: aio.ServicerContext[Any, Any],
    ) -> package_service_pb2.UploadPackageResponse:
        header: package_service_pb2.PackageUploadHeader | None = None
        parts: list[bytes] = []
        received = 0
        cap = self.store.limits.max_archive_bytes
        digest = hashlib.sha256()
        async for message in request_iterator:
            which = message.WhichOneof("payload")
            if header is None:
                if which != "header":
                    raise InvalidArgument("the first message of an upload must be the header", ())
                header = message.header
                if not 0 < header.size_bytes <= cap:
                    raise InvalidArgument(f"header.size_bytes must be in 1..{cap}, got {header.size_bytes}", ())
                check_hash(header.sha256)
                continue
            if which != "chunk":
                raise InvalidArgument("an upload has one header, then chunks", ())
            if len(message.chunk) > MAX_CHUNK:
                raise InvalidArgument(f"chunks are at most {MAX_CHUNK} bytes, got {len(message.chunk)}", ())
            received += len(message.chunk)
            if received > header.size_bytes:
                raise InvalidArgument(
                    f"the upload sent more than the {header.size_bytes} bytes its header declared", ()
                )
            digest.update(message.chunk)
            parts.append(message.chunk)
        if header is None:
            raise InvalidArgument("empty upload: send a header, then chunks", ())
        if received < header.size_bytes:
            raise InvalidArgument(f"truncated upload: got {received} of the {header.size_bytes} bytes declared", ())
        if digest.hexdigest() != header.sha256:
            raise InvalidArgument(
                f"the archive's SHA-256 is {digest.hexdigest()}, the header declared {header.sha256}", ()
            )
        record, existed = await self.store.put(b"".join(parts), current_principal().tenant)
        return package_service_pb2.UploadPackageResponse(package=record, already_existed=existed)

    async def GetPackage(
        self, request: package_service_pb2.GetPackageRequest, context: aio.ServicerContext[Any, Any]
    ) -> package_service_pb2.GetPackageResponse:
        return package_service_pb2.GetPackageResponse(
            package=await self.store.get(request.package_hash, current_principal().tenant)
        )

    async def ListPackages(
        self, request: package_service_pb2.ListPackagesRequest, context: aio.ServicerContext[Any, Any]
    ) -> package_service_pb2.ListPackagesResponse:
        page, token = await self.store.list(request.page_size, request.page_token, current_principal().tenant)
        return package_service_pb2.ListPackagesResponse(packages=page, next_page_token=token)

    async def DownloadPackage(
        self, request: package_service_pb2.DownloadPackageRequest, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[package_service_pb2.DownloadPackageResponse]:
        tenant = current_principal().tenant
        async for size, sha, offset, data in self.store.download(request.package_hash, DOWNLOAD_CHUNK, tenant):
            yield package_service_pb2.DownloadPackageResponse(size_bytes=size, sha256=sha, offset=offset, chunk=data)
