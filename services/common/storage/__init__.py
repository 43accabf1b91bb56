"""Object storage shared by every service: a local directory or an Azure Blob container.

`Storage` (base.py) is the interface; `LocalStorage` and `AzureBlobStorage` implement it.
The data service's datasets and the gateway's package store build on it (the job store is
SQLite on the gateway's disk, apart); nothing here is specific to either. Each declares where
its objects live as `StorageSettings` and opens them through `StorageLocation` (location.py).
"""

from services.common.storage.base import (
    KINDS,
    CountingStorage,
    ObjectBusy,
    ObjectChanged,
    ObjectExists,
    ObjectInfo,
    Storage,
    StorageFull,
    StorageKind,
    UploadSink,
    read_sequential,
)

__all__ = [
    "KINDS",
    "CountingStorage",
    "ObjectBusy",
    "ObjectChanged",
    "ObjectExists",
    "ObjectInfo",
    "Storage",
    "StorageFull",
    "StorageKind",
    "UploadSink",
    "read_sequential",
]
