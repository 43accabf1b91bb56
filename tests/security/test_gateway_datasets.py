"""Issue 22 (2): the gateway serves DataService by forwarding it to the data service, and tenant
scoping is what it is at the data service itself: a tenant sees, reads, samples and validates
its own datasets only (another's is NOT_FOUND, exactly like one that does not exist), uploads
land in the uploader's tenant, roles are checked at the gateway (read cannot upload, only admin
deletes), a user cannot act for another tenant, and each mutating call leaves one audit line on
the gateway naming the user. The CLI's saved context carries a token to its own address only,
and prefixes of ids match the caller's own objects only."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from livecalc.data.v1 import data_service_pb2, data_service_pb2_grpc
from services.common.auth.roles import ACT_FOR_TENANT
from tests.data.test_service_backends import requests_for
from tests.gateway.jobmesh import spec
from tests.security.authmesh import SCENARIOS, AuthMesh, bearer, start_auth_mesh
from tests.support import ROOT, VENV_BIN

pytestmark = pytest.mark.timeout(300)

Stub = data_service_pb2_grpc.DataServiceStub
MISSING = "no-such-dataset"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthMesh]:
    yield from start_auth_mesh(tmp_path_factory.mktemp("gateway-datasets"))


def stub(address: str) -> Stub:
    return Stub(grpc.insecure_channel(address))


def failure(call: Callable[[], Any]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value.code(), str(err.value.details())  # type: ignore[attr-defined]


def upload(address: str, token: str, dataset_id: str, path: Path, rid: str = "") -> Any:
    metadata = bearer(token) + ([("x-request-id", rid)] if rid else [])
    return stub(address).UploadDataset(
        iter(requests_for(path.read_bytes(), dataset_id, "csv")), timeout=60, metadata=metadata
    )


def test_the_gateway_forwards_datasets_within_the_callers_tenant(mesh: AuthMesh) -> None:
    acme = mesh.token("acme", "read", "upload", "submit", subject="acme-user")
    globex = mesh.token("globex", "read", "upload", "submit", subject="globex-user")
    gw, data = mesh.gateway.address, mesh.data.address
    rid = uuid.uuid4().hex
    reply = upload(gw, acme, "acme-only", mesh.tmp / "pol.csv", rid)
    assert reply.dataset.row_count == mesh.table.num_rows
    (line,) = [json.loads(x) for x in mesh.gateway_audit.read_text().splitlines() if rid in x]
    assert (line["subject"], line["tenant"], line["action"], line["object"], line["outcome"]) == (
        "acme-user",
        "acme",
        "dataset.upload",
        "acme-only",
        "ok",
    )

    def ids(address: str, token: str) -> set[str]:
        listed = stub(address).ListDatasets(data_service_pb2.ListDatasetsRequest(), timeout=30, metadata=bearer(token))
        return {d.dataset_id for d in listed.datasets}

    assert ids(gw, acme) == ids(data, acme) == {"pol", "acme-only"}  # the uploader's tenant, as at the data service
    assert ids(gw, globex) == ids(data, globex) == {"pol"}

    reads: dict[str, Callable[[Stub, str, str], Any]] = {
        "GetDataset": lambda s, d, t: s.GetDataset(
            data_service_pb2.GetDatasetRequest(dataset_id=d), timeout=30, metadata=bearer(t)
        ),
        "GetSchema": lambda s, d, t: s.GetSchema(
            data_service_pb2.GetSchemaRequest(dataset_id=d), timeout=30, metadata=bearer(t)
        ),
        "SampleRows": lambda s, d, t: s.SampleRows(
            data_service_pb2.SampleRowsRequest(dataset_id=d, n=3, seed=1), timeout=30, metadata=bearer(t)
        ),
        "ReadRows": lambda s, d, t: list(
            s.ReadRows(
                data_service_pb2.ReadRowsRequest(dataset_id=d, start_row=0, end_row=10), timeout=30, metadata=bearer(t)
            )
        ),
        "ValidateDataset": lambda s, d, t: s.ValidateDataset(
            data_service_pb2.ValidateDatasetRequest(dataset_id=d), timeout=60, metadata=bearer(t)
        ),
    }
    for name, call in reads.items():
        assert call(stub(gw), "acme-only", acme) == call(stub(data), "acme-only", acme), name
        theirs = failure(lambda c=call: c(stub(gw), "acme-only", globex))  # type: ignore[misc]
        missing = failure(lambda c=call: c(stub(gw), MISSING, globex))  # type: ignore[misc]
        assert theirs[0] == grpc.StatusCode.NOT_FOUND, (name, theirs)
        assert (theirs[0], theirs[1].replace("acme-only", "<id>")) == (missing[0], missing[1].replace(MISSING, "<id>"))


def test_roles_and_tenants_are_checked_at_the_gateway(mesh: AuthMesh) -> None:
    gw = mesh.gateway.address
    reader = mesh.token("acme", "read", subject="acme-reader")
    uploader = mesh.token("acme", "read", "upload", subject="acme-uploader")
    globex_admin = mesh.token("globex", "read", "upload", "admin", subject="globex-admin")
    code, _ = failure(lambda: upload(gw, reader, "nope", mesh.tmp / "pol.csv"))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    delete = data_service_pb2.DeleteDatasetRequest(dataset_id="pol")
    assert failure(lambda: stub(gw).DeleteDataset(delete, timeout=30, metadata=bearer(uploader)))[0] == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    assert failure(lambda: stub(gw).ListDatasets(data_service_pb2.ListDatasetsRequest(), timeout=30))[0] == (
        grpc.StatusCode.UNAUTHENTICATED
    )
    acting = [*bearer(uploader), (ACT_FOR_TENANT, "globex")]  # only admin may act for a tenant
    listed = lambda: stub(gw).ListDatasets(data_service_pb2.ListDatasetsRequest(), timeout=30, metadata=acting)  # noqa: E731
    assert failure(listed)[0] == grpc.StatusCode.PERMISSION_DENIED
    upload(gw, uploader, "acme-two", mesh.tmp / "pol.csv")
    gone = data_service_pb2.DeleteDatasetRequest(dataset_id="acme-two")
    code, _ = failure(lambda: stub(gw).DeleteDataset(gone, timeout=30, metadata=bearer(globex_admin)))
    assert code == grpc.StatusCode.NOT_FOUND  # another tenant's admin cannot reach it either
    get = data_service_pb2.GetDatasetRequest(dataset_id="acme-two")
    assert stub(gw).GetDataset(get, timeout=30, metadata=bearer(uploader)).dataset.dataset_id == "acme-two"


def test_the_cli_through_one_address_with_a_context_token(mesh: AuthMesh, tmp_path: Path) -> None:
    acme = mesh.token("acme", "read", "upload", "submit", subject="acme-cli")
    globex = mesh.token("globex", "read", "submit", subject="globex-cli")
    package_hash = mesh.upload_package(acme)
    job_id = mesh.submit(acme, spec(package_hash, "pol", SCENARIOS))[0].job_id
    env = {**os.environ, "LIVECALC_CONFIG": str(tmp_path / "config.json"), "LIVECALC_ADDRESS": ""}
    env.pop("LIVECALC_TOKEN", None)

    def livecalc(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(VENV_BIN / "livecalc"), *argv],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
            env=env,
            check=False,
        )

    for name, token in (("acme", acme), ("globex", globex)):
        set_context = livecalc("config", "set-context", name, "--address", mesh.gateway.address, "--token", token)
        assert set_context.returncode == 0, set_context.stderr
    assert livecalc("config", "use-context", "acme").returncode == 0
    listed = livecalc("datasets", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert "pol" in {d["dataset_id"] for d in json.loads(listed.stdout)["datasets"]}
    got = livecalc("jobs", "get", job_id[:-3])  # a prefix of acme's own job
    assert got.returncode == 0 and job_id in got.stdout, got.stderr
    assert livecalc("package", "show", package_hash[:10]).returncode == 0
    # the context's token goes to its own address only: the data service named by flag gets none
    direct = livecalc("datasets", "list", "--address", mesh.data.address)
    assert direct.returncode == 1 and "unauthenticated" in direct.stderr.lower(), direct.stderr
    # globex's prefixes never reach acme's objects
    assert livecalc("config", "use-context", "globex").returncode == 0
    theirs = livecalc("jobs", "get", job_id[:-3])
    assert theirs.returncode == 1 and f"no job id matches '{job_id[:-3]}'" in theirs.stderr
    assert "no package hash matches" in livecalc("package", "show", package_hash[:10]).stderr
