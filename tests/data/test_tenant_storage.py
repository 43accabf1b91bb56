"""Storage scopes (a subdirectory, a blob-name prefix) and the per-tenant dataset catalogs built
on them, on a local directory and on a real Azurite container alike."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.auth.interceptor import _PRINCIPAL
from services.common.auth.tokens import Principal
from services.common.errors import NotFound
from services.common.storage.base import CountingStorage, read_sequential
from services.data.catalog import Catalog
from services.data.tenants import TENANTS_SCOPE, TenantCatalogs, tenant_scope

pytestmark = pytest.mark.anyio


async def names(storage: CountingStorage | object) -> set[str]:
    return {info.name for info in await storage.list()}  # type: ignore[attr-defined]


async def test_a_scope_is_its_own_namespace(storage: CountingStorage) -> None:
    await storage.put("a.csv", b"root")
    child = storage.scope("tenants").scope("t1")
    sibling = storage.scope("tenants").scope("t2")
    await child.put("a.csv", b"child")
    sink = await child.open_upload("b.csv")
    await sink.write(b"uploaded")
    info = await sink.commit(overwrite=False)
    assert info.name == "b.csv"  # names inside a scope are the scope's, not the full path
    assert await names(storage) == {"a.csv"}  # the parent never lists a scope's objects
    assert await names(child) == {"a.csv", "b.csv"}
    assert await names(sibling) == set()
    stat = await child.stat("a.csv")
    assert stat is not None and stat.size == 5
    assert b"".join([p async for p in read_sequential(child, "a.csv", 5)]) == b"child"
    assert await storage.read_range("a.csv", 0, 10) == b"root"
    assert await sibling.stat("a.csv") is None
    assert child.location("a.csv") != storage.location("a.csv")
    assert await child.delete("a.csv") and await names(child) == {"b.csv"}
    assert await storage.stat("a.csv") is not None
    await child.close()  # releases nothing the parent uses
    assert await names(storage) == {"a.csv"}
    for bad in ("", ".", "..", "a/b", ".hidden"):
        with pytest.raises(ValueError, match="bad scope name"):
            storage.scope(bad)


async def test_tenant_catalogs_see_their_own_datasets(tmp_path: Path) -> None:
    from tests.engine.mesh import policies_csv

    root = tmp_path / "datasets"
    root.mkdir()
    policies_csv(root / "shared.csv", 20)
    acme_dir = root / TENANTS_SCOPE / tenant_scope("acme")
    acme_dir.mkdir(parents=True)
    policies_csv(acme_dir / "mine.csv", 30)
    from services.common.storage.local import LocalStorage

    catalogs = TenantCatalogs(Catalog(LocalStorage(root)))
    assert catalogs.of("") is catalogs.root and catalogs.of("acme") is catalogs.of("acme")
    assert (await catalogs.of("acme").get("mine")).rows == 30
    for tenant, missing in (("", "mine"), ("globex", "mine"), ("acme", "shared")):
        with pytest.raises(NotFound, match=f"dataset '{missing}' not found"):
            await catalogs.of(tenant).get(missing)
    listed, _ = await catalogs.of("acme").list_page(0, "")
    assert [d.dataset_id for d in listed] == ["mine"]
    listed, _ = await catalogs.root.list_page(0, "")
    assert [d.dataset_id for d in listed] == ["shared"]
    token = _PRINCIPAL.set(Principal("u", "acme", frozenset({"read"})))
    try:
        assert catalogs.current() is catalogs.of("acme")
    finally:
        _PRINCIPAL.reset(token)
    assert catalogs.current() is catalogs.root  # auth off: tenant ''
