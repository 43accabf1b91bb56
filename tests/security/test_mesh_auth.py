"""Issue 13: the mesh's own calls carry service tokens, so a mesh with auth on all three
services runs jobs; engines take RunChunk only from the gateway (a token with `admin`)."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from livecalc.engine.v1 import engine_service_pb2_grpc
from tests.engine.mesh import chunk_request, in_process_hash
from tests.gateway.jobmesh import spec
from tests.security.authmesh import SCENARIOS, AuthMesh, bearer, start_auth_mesh

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthMesh]:
    yield from start_auth_mesh(tmp_path_factory.mktemp("authmesh"))


def test_a_job_runs_with_auth_on_every_service_and_gives_the_same_hash(mesh: AuthMesh) -> None:
    package_hash = mesh.upload_package(mesh.token("acme", "upload"))
    events = mesh.submit(mesh.token("acme", "submit", "read"), spec(package_hash, "pol", SCENARIOS))
    last = events[-1]
    assert last.WhichOneof("event") == "result", last
    # the hash of the same run without auth (the no-auth mesh tests compare with this too)
    assert last.result.result_hash == in_process_hash(mesh.archive, mesh.table, SCENARIOS)


@pytest.mark.parametrize(
    ("roles", "code"),
    [
        ((), grpc.StatusCode.UNAUTHENTICATED),
        (("read",), grpc.StatusCode.PERMISSION_DENIED),
        (("submit",), grpc.StatusCode.PERMISSION_DENIED),
        (("read", "submit", "upload"), grpc.StatusCode.PERMISSION_DENIED),
    ],
)
def test_run_chunk_is_for_the_gateway_only(mesh: AuthMesh, roles: tuple[str, ...], code: grpc.StatusCode) -> None:
    request = chunk_request("0" * 64, mesh.gateway.address, "pol", "")
    metadata = bearer(mesh.token("acme", *roles)) if roles else []
    with grpc.insecure_channel(mesh.engine.address) as channel:
        call = engine_service_pb2_grpc.EngineServiceStub(channel).RunChunk(request, timeout=30, metadata=metadata)
        with pytest.raises(grpc.RpcError) as err:
            list(call)
    assert err.value.code() == code  # type: ignore[attr-defined]
