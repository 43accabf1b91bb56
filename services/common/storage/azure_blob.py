"""Azure Blob storage (azure-storage-blob aio): the scale-out backend.

Objects are block blobs in one container. Reads are ranged GETs, checked against the
ETag the caller saw (If-Match), so a dataset replaced mid-read fails instead of mixing
versions. Uploads stage blocks and commit the block list at the end: until the commit,
Azure keeps the blocks uncommitted and invisible, which is the backend's atomic rename.
Uncommitted blocks belong to the blob, and any commit of the blob discards those it does
not list, so two uploads of one name at once would destroy each other: a process allows
one at a time (ObjectBusy), and a commit that lost its blocks to another process is
reported the same way.
"""

from __future__ import annotations

import base64
import io
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.storage.blob import BlobBlock
from azure.storage.blob.aio import BlobPrefix, BlobServiceClient, ContainerClient, ExponentialRetry

from services.common.errors import InvalidArgument, Unavailable
from services.common.storage.base import (
    ObjectBusy,
    ObjectChanged,
    ObjectExists,
    ObjectInfo,
    StorageKind,
    UploadSink,
    check_segment,
)


@dataclass(frozen=True)
class AzureConfig:
    """A blob container; the connection string holds the credentials."""

    connection_string: str
    container: str

    def __repr__(self) -> str:  # never print the account key
        return f"AzureConfig(container={self.container!r})"


class AzureBlobStorage:
    """Objects as block blobs in one container; create with `await AzureBlobStorage.open(config)`."""

    def __init__(
        self, service: BlobServiceClient, container: ContainerClient, *, prefix: str = "", owner: bool = True
    ) -> None:
        self._service = service
        self._container = container
        #: Blob-name prefix of a scope ('' for the container itself), ending in '/'.
        self._prefix = prefix
        #: Only the storage that opened the service client closes it; scopes share it.
        self._owner = owner
        self._uploading: set[str] = set()

    def scope(self, name: str) -> AzureBlobStorage:
        """The blobs named `<prefix><name>/…`, sharing this storage's connection."""
        return AzureBlobStorage(
            self._service, self._container, prefix=f"{self._prefix}{check_segment(name)}/", owner=False
        )

    def _blob_name(self, name: str) -> str:
        return self._prefix + name

    @classmethod
    async def open(cls, config: AzureConfig) -> AzureBlobStorage:
        """Connect and create the container if it does not exist."""
        try:
            # Few, short retries: a data service that cannot reach its storage should say so
            # within seconds (callers retry RPCs themselves), not after minutes of backoff.
            service = BlobServiceClient.from_connection_string(
                config.connection_string,
                retry_policy=ExponentialRetry(
                    initial_backoff=1, increment_base=2, retry_total=3, random_jitter_range=1
                ),
                connection_timeout=10,
            )
        except ValueError as exc:
            raise InvalidArgument(f"Azure connection string is malformed: {exc}") from None
        container = service.get_container_client(config.container)
        try:
            await container.create_container()
        except ResourceExistsError:
            pass
        except AzureError as exc:
            await service.close()
            raise Unavailable(f"cannot open Azure container {config.container!r}: {exc.message}") from None
        except BaseException:
            await service.close()
            raise
        return cls(service, container)

    @property
    def kind(self) -> StorageKind:
        return "azure_blob"

    def location(self, name: str) -> str:
        return f"{self._container.url}/{self._blob_name(name)}"

    async def list(self) -> list[ObjectInfo]:
        out = []
        # one level only: a scope's blobs come back as one BlobPrefix each, never listed blob by blob
        async for item in self._container.walk_blobs(name_starts_with=self._prefix or None, delimiter="/"):
            if isinstance(item, BlobPrefix):
                continue
            out.append(_info(item.name[len(self._prefix) :], item.size, item.last_modified, item.etag))
        return out

    async def stat(self, name: str) -> ObjectInfo | None:
        try:
            props = await self._container.get_blob_client(self._blob_name(name)).get_blob_properties()
        except ResourceNotFoundError:
            return None
        return _info(name, props.size, props.last_modified, props.etag)

    async def read_range(self, name: str, offset: int, length: int, *, change_token: str | None = None) -> bytes:
        if length <= 0:
            return b""
        blob = self._container.get_blob_client(self._blob_name(name))
        # If-Match only when asked: the SDK forwards unused condition kwargs to the transport
        conditions: dict[str, Any] = {}
        if change_token is not None:
            conditions = {"etag": change_token, "match_condition": MatchConditions.IfNotModified}
        try:
            stream = await blob.download_blob(offset=offset, length=length, **conditions)
            data: bytes = await stream.readall()
        except ResourceNotFoundError:
            raise ObjectChanged(f"{name} vanished") from None
        except ResourceModifiedError:
            raise ObjectChanged(f"{name} changed") from None
        except HttpResponseError as exc:
            if exc.status_code == 416:  # range starts at or past the end
                return b""
            raise
        return data

    async def put(self, name: str, data: bytes) -> None:
        # a stream, not bytes: aiohttp sends large byte bodies in one blocking call
        blob = self._container.get_blob_client(self._blob_name(name))
        await blob.upload_blob(io.BytesIO(data), length=len(data), overwrite=True)

    async def delete(self, name: str) -> bool:
        try:
            await self._container.get_blob_client(self._blob_name(name)).delete_blob()
        except ResourceNotFoundError:
            return False
        return True

    async def open_upload(self, name: str) -> UploadSink:
        if name in self._uploading:
            raise ObjectBusy(f"another upload of {name} is in progress")
        self._uploading.add(name)
        return _BlockUpload(self._container, self._blob_name(name), name, lambda: self._uploading.discard(name))

    async def close(self) -> None:
        if self._owner:
            await self._service.close()


def _info(name: str, size: int, modified: datetime | None, etag: str) -> ObjectInfo:
    return ObjectInfo(
        name=name,
        size=int(size),
        modified=modified or datetime.fromtimestamp(0, UTC),
        change_token=etag,
        is_etag=True,
    )


class _BlockUpload:
    """Staged blocks with ids unique to this upload; committed as one block list."""

    def __init__(self, container: ContainerClient, blob_name: str, name: str, release: Callable[[], None]) -> None:
        self._release = release
        self._name = name  # the object's name in its storage (the blob's, less the scope prefix)
        self._blob = container.get_blob_client(blob_name)
        self._prefix = secrets.token_hex(8)
        self._blocks: list[BlobBlock] = []
        self._size = 0

    async def write(self, data: bytes) -> None:
        if not data:
            return
        raw = f"{self._prefix}-{len(self._blocks):08d}".encode()
        block_id = base64.b64encode(raw).decode()
        await self._blob.stage_block(block_id, io.BytesIO(data), length=len(data))
        self._blocks.append(BlobBlock(block_id=block_id))
        self._size += len(data)

    async def commit(self, *, overwrite: bool) -> ObjectInfo:
        conditions: dict[str, Any] = {} if overwrite else {"match_condition": MatchConditions.IfMissing}
        try:
            result = await self._blob.commit_block_list(self._blocks, **conditions)
        except (ResourceExistsError, ResourceModifiedError):
            raise ObjectExists(self._blob.blob_name) from None
        except HttpResponseError as exc:
            if getattr(exc, "error_code", None) == "InvalidBlockList":  # another writer's commit dropped our blocks
                raise ObjectBusy(f"another upload of {self._blob.blob_name} committed meanwhile") from None
            raise
        finally:
            self._release()
        # The ETag of this commit names these bytes, whatever a later writer does.
        modified = result.get("last_modified")
        return _info(
            self._name,
            self._size,
            modified if isinstance(modified, datetime) else None,
            str(result["etag"]),
        )

    async def abort(self) -> None:
        # Uncommitted blocks are invisible and Azure discards them (at the next commit of
        # the blob, or after a week); there is nothing visible to remove.
        self.discard_now()

    def discard_now(self) -> None:
        self._blocks.clear()
        self._release()
