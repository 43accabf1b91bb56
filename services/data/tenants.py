"""Datasets are a tenant's: each tenant has a catalog of its own over its own storage scope.

The implicit tenant '' (auth off, and every dataset stored before tenants) keeps the storage
root, so a mesh without auth sees exactly what it saw before. Tenant T's datasets live in the
scope `tenants/<t>`, where `<t>` is the first 32 hex digits of SHA-256(T): a directory under
the local root, a blob-name prefix in an Azure container. A tenant name is any string a token
carries, so it never becomes a path itself, and the root catalog never lists a scope (object
names hold no '/', and local directories are not objects).

Another tenant's dataset is therefore not there at all: every RPC answers NOT_FOUND with the
message a dataset that does not exist gets, and ListDatasets lists the caller's own.
"""

from __future__ import annotations

import hashlib
from typing import Final

from services.common.auth.interceptor import current_principal
from services.data.catalog import Catalog

#: The scope holding one directory (or prefix) per tenant.
TENANTS_SCOPE: Final = "tenants"


def tenant_scope(tenant: str) -> str:
    """The scope name of `tenant`'s datasets (not the tenant name: that could be anything)."""
    return hashlib.sha256(tenant.encode()).hexdigest()[:32]


class TenantCatalogs:
    """The root catalog for tenant '' and, made on first use, one catalog per tenant."""

    def __init__(self, root: Catalog) -> None:
        self.root = root
        self._by_tenant: dict[str, Catalog] = {"": root}

    def of(self, tenant: str) -> Catalog:
        catalog = self._by_tenant.get(tenant)
        if catalog is None:
            storage = self.root.storage.scope(TENANTS_SCOPE).scope(tenant_scope(tenant))
            catalog = Catalog(storage, checkpoint_rows=self.root.checkpoint_rows, max_row_bytes=self.root.max_row_bytes)
            self._by_tenant[tenant] = catalog
        return catalog

    def current(self) -> Catalog:
        """The catalog of the caller's tenant (the RPC's `current_principal()`)."""
        return self.of(current_principal().tenant)
