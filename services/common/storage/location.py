"""Where a service keeps its objects, and the three settings that say so.

The data service (datasets) and the gateway (packages) each declare a root directory, an Azure
connection string and an Azure container under their own variables and flags, and group them
in a `StorageSettings`; resolving those gives a `StorageLocation`, whose `open` makes the
Storage the service then owns. The rules (both Azure settings or neither, container name
length, the root's default) and the opening (stale uploads removed first) are written here once.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from services.common.errors import InvalidArgument
from services.common.settings import Setting
from services.common.storage.azure_blob import AzureBlobStorage, AzureConfig
from services.common.storage.base import Storage
from services.common.storage.local import LocalStorage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StorageLocation:
    """A local root directory, or an Azure container when `azure` is set (the root unused then)."""

    root: Path
    azure: AzureConfig | None = None

    @property
    def where(self) -> str:
        """The container's name, or the root directory (for logs)."""
        return self.azure.container if self.azure is not None else str(self.root)

    async def open(self) -> Storage:
        """The storage at this location, owned by the caller (who closes it). A local root first
        loses the upload files of writers that are gone (a crashed or killed process)."""
        if self.azure is not None:
            return await AzureBlobStorage.open(self.azure)
        local = LocalStorage(self.root)
        removed = local.remove_stale_uploads()
        if removed:
            log.info("removed stale uploads", extra={"fields": {"count": removed}})
        return local


@dataclass(frozen=True)
class StorageSettings:
    """A service's storage settings: a root directory, or an Azure connection string and
    container (both or neither)."""

    root: Setting[str | None]
    connection_string: Setting[str | None]
    container: Setting[str | None]

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        for setting in (self.root, self.connection_string, self.container):
            setting.add_argument(parser)

    def resolve(self, args: argparse.Namespace, env: Mapping[str, str], default_root: Path) -> StorageLocation:
        """Flags win over the environment; without either, the root is `default_root`."""
        root = self.root.read(args, env)
        conn = self.connection_string.read(args, env)
        container = self.container.read(args, env)
        azure = None
        if conn or container:
            if not (conn and container):
                raise InvalidArgument("Azure Blob needs both a connection string and a container name")
            if not 3 <= len(container) <= 63:
                raise InvalidArgument(f"Azure container names have 3 to 63 characters, got {container!r}")
            azure = AzureConfig(connection_string=conn, container=container)
        return StorageLocation(root=Path(root) if root else default_root, azure=azure)
