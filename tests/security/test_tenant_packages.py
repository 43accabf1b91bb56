"""Issue 13: packages are scoped by tenant. Two tenants side by side on one authenticated
mesh: GetPackage, DownloadPackage and SubmitJob with the other tenant's package hash answer
NOT_FOUND with the message of an unknown hash, ListPackages lists one's own, the same bytes
uploaded by both are stored for each (idempotent within a tenant), and a job runs on its
tenant's package (the engine downloads it acting for the job's tenant)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from livecalc.gateway.v1 import package_service_pb2, package_service_pb2_grpc
from services.common.auth.roles import ACT_FOR_TENANT
from services.common.errors import NotFound
from services.common.storage.local import LocalStorage
from services.gateway.cli import upload_requests
from services.gateway.package_store import PackageStore, namespace
from tests.gateway.jobmesh import spec
from tests.security.authmesh import SCENARIOS, AuthMesh, bearer, start_auth_mesh

pytestmark = pytest.mark.timeout(300)

UNKNOWN = "0" * 64
PackageCall = Callable[[package_service_pb2_grpc.PackageServiceStub, str, list[tuple[str, str]]], Any]

#: Every PackageService RPC that names a package: (name, call with a package hash).
PACKAGE_RPCS: list[tuple[str, PackageCall]] = [
    (
        "GetPackage",
        lambda s, h, m: s.GetPackage(package_service_pb2.GetPackageRequest(package_hash=h), timeout=30, metadata=m),
    ),
    (
        "DownloadPackage",
        lambda s, h, m: list(
            s.DownloadPackage(package_service_pb2.DownloadPackageRequest(package_hash=h), timeout=30, metadata=m)
        ),
    ),
]


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthMesh]:
    yield from start_auth_mesh(tmp_path_factory.mktemp("tenant-packages"))


def not_found(call: Callable[[], Any], package_hash: str) -> str:
    """The NOT_FOUND message of `call`, with the hash it names replaced by `<hash>`."""
    with pytest.raises(grpc.RpcError) as err:
        call()
    assert err.value.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]
    return str(err.value.details()).replace(package_hash, "<hash>")  # type: ignore[attr-defined]


def upload(mesh: AuthMesh, token: str) -> package_service_pb2.UploadPackageResponse:
    with grpc.insecure_channel(mesh.gateway.address) as channel:
        reply: package_service_pb2.UploadPackageResponse = package_service_pb2_grpc.PackageServiceStub(
            channel
        ).UploadPackage(upload_requests(mesh.archive), timeout=60, metadata=bearer(token))
    return reply


def test_packages_are_scoped_by_tenant(mesh: AuthMesh) -> None:
    acme = mesh.token("acme", "read", "submit", "upload", subject="acme-user")
    globex = mesh.token("globex", "read", "submit", "upload", subject="globex-user")
    first = upload(mesh, acme)
    assert not first.already_existed
    package_hash = first.package.package_hash
    assert upload(mesh, acme).already_existed  # idempotent within the tenant
    with grpc.insecure_channel(mesh.gateway.address) as channel:
        stub = package_service_pb2_grpc.PackageServiceStub(channel)
        for name, rpc in PACKAGE_RPCS:
            rpc(stub, package_hash, bearer(acme))  # one's own package: fine
            unknown = not_found(lambda: rpc(stub, UNKNOWN, bearer(globex)), UNKNOWN)  # noqa: B023
            other = not_found(lambda: rpc(stub, package_hash, bearer(globex)), package_hash)  # noqa: B023
            assert other == unknown, name
        listed = stub.ListPackages(package_service_pb2.ListPackagesRequest(), timeout=30, metadata=bearer(acme))
        assert [p.package_hash for p in listed.packages] == [package_hash]
        listed = stub.ListPackages(package_service_pb2.ListPackagesRequest(), timeout=30, metadata=bearer(globex))
        assert list(listed.packages) == []
    # SubmitJob with the other tenant's package: NOT_FOUND, as for an unknown hash
    unknown = not_found(lambda: mesh.submit(globex, spec(UNKNOWN, "pol", SCENARIOS)), UNKNOWN)
    other = not_found(lambda: mesh.submit(globex, spec(package_hash, "pol", SCENARIOS)), package_hash)
    assert other == unknown
    # a job of acme runs on acme's package: the engine downloads it with its service token
    events = mesh.submit(acme, spec(package_hash, "pol", SCENARIOS))
    assert events[-1].WhichOneof("event") == "result"
    # the same bytes uploaded by globex: stored for globex too, each lists its own
    second = upload(mesh, globex)
    assert not second.already_existed and second.package.package_hash == package_hash
    assert upload(mesh, globex).already_existed
    with grpc.insecure_channel(mesh.gateway.address) as channel:
        stub = package_service_pb2_grpc.PackageServiceStub(channel)
        for token in (acme, globex):
            for _, rpc in PACKAGE_RPCS:
                rpc(stub, package_hash, bearer(token))
            listed = stub.ListPackages(package_service_pb2.ListPackagesRequest(), timeout=30, metadata=bearer(token))
            assert [p.package_hash for p in listed.packages] == [package_hash]
    events = mesh.submit(globex, spec(package_hash, "pol", SCENARIOS))
    assert events[-1].WhichOneof("event") == "result"


def test_only_admin_acts_for_another_tenant(mesh: AuthMesh) -> None:
    """What the gateway's and engines' service tokens do: `admin` acting for the job's tenant
    (x-livecalc-tenant) reads that tenant's package; without the header, an admin token sees
    its own tenant's only; any other token sending the header is refused."""
    owner = mesh.token("initech", "upload", "read")
    package_hash = upload(mesh, owner).package.package_hash
    admin = mesh.token("livecalc-mesh", "admin", subject="livecalc-engine")
    reader = mesh.token("livecalc-mesh", "read", subject="someone")
    acting = [(ACT_FOR_TENANT, "initech")]
    with grpc.insecure_channel(mesh.gateway.address) as channel:
        stub = package_service_pb2_grpc.PackageServiceStub(channel)
        download = PACKAGE_RPCS[1][1]
        pieces = download(stub, package_hash, bearer(admin) + acting)
        assert b"".join(p.chunk for p in pieces) == mesh.archive
        assert not_found(lambda: download(stub, package_hash, bearer(admin)), package_hash)
        assert not_found(lambda: download(stub, package_hash, bearer(reader)), package_hash)
        for token in (reader, owner):  # even for one's own tenant's name: the header is admin's
            with pytest.raises(grpc.RpcError) as err:
                download(stub, package_hash, bearer(token) + acting)
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_store_keeps_one_copy_per_tenant(tmp_path: Path) -> None:
    from tests.engine.mesh import stochastic_package

    archive = stochastic_package(tmp_path / "model")
    root = tmp_path / "store"
    root.mkdir()
    store = PackageStore(LocalStorage(root))
    record, existed = await store.put(archive)
    assert not existed
    package_hash = record.package_hash
    assert (await store.put(archive, "acme"))[1] is False
    assert (await store.put(archive, "acme"))[1] is True
    names = sorted(p.name for p in root.iterdir())
    assert names == sorted(
        f"{prefix}{package_hash}.{ext}" for prefix in (namespace(""), namespace("acme")) for ext in ("json", "zip")
    )
    assert namespace("") == "package-"  # auth off: the names of stores from before tenants
    with pytest.raises(NotFound):
        await store.get(package_hash, "globex")
    assert [r.package_hash for r in (await store.list(0, "", "globex"))[0]] == []
    assert [r.package_hash for r in (await store.list(0, "", ""))[0]] == [package_hash]
    with pytest.raises(NotFound):
        [piece async for piece in store.download(package_hash, tenant="globex")]
    pieces = [piece async for *_, piece in store.download(package_hash, tenant="acme")]
    assert b"".join(pieces) == archive
