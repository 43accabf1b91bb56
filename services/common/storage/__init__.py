"""Object storage shared by every service: a local directory or an Azure Blob container.

`Storage` (base.py) is the interface; `LocalStorage` and `AzureBlobStorage` implement it.
Dataset, package and job stores build on it; nothing here is specific to any of them.
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
