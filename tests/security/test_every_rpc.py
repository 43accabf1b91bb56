"""Issue 13: two tenants side by side, through every RPC of the contract.

`acme` owns a dataset, a package and a finished job; `globex`, with every user role, tries
each RPC on acme's objects. Whatever it tries answers exactly as for an object that does not
exist (same code, same message once the id is blanked), lists show only one's own, and an
upload of the same name makes globex's own object without touching acme's. Engines take no
user tokens at all. The table of checks must name every RPC of the protos, so a new RPC
fails here until someone decides how it is scoped. Each mutating call carries its own
x-request-id and must leave exactly one audit line, naming its object.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from livecalc.data.v1 import data_service_pb2, data_service_pb2_grpc
from livecalc.engine.v1 import engine_service_pb2, engine_service_pb2_grpc
from livecalc.gateway.v1 import (
    job_service_pb2,
    job_service_pb2_grpc,
    package_service_pb2,
    package_service_pb2_grpc,
)
from services.common.auth.roles import ACT_FOR_TENANT
from services.gateway.cli import upload_requests
from tests.data.test_service_backends import requests_for
from tests.engine.mesh import chunk_request
from tests.gateway.jobmesh import spec
from tests.security.authmesh import SCENARIOS, AuthMesh, bearer, start_auth_mesh

pytestmark = pytest.mark.timeout(300)

Metadata = list[tuple[str, str]]
MISSING_DATASET = "no-such-dataset"
MISSING_PACKAGE = "0" * 64
MISSING_JOB = "job-that-does-not-exist"
USER_ROLES = ("read", "submit", "upload", "admin")


@dataclass
class World:
    mesh: AuthMesh
    acme: str  # every role
    globex: str  # every role, another tenant
    dataset: str  # acme's only
    package_hash: str  # acme's only
    job_id: str  # acme's, finished

    def metadata(self, token: str, request_id: str = "") -> Metadata:
        return bearer(token) + ([("x-request-id", request_id)] if request_id else [])

    @property
    def data(self) -> data_service_pb2_grpc.DataServiceStub:
        return data_service_pb2_grpc.DataServiceStub(grpc.insecure_channel(self.mesh.data.address))

    @property
    def jobs(self) -> job_service_pb2_grpc.JobServiceStub:
        return job_service_pb2_grpc.JobServiceStub(grpc.insecure_channel(self.mesh.gateway.address))

    @property
    def packages(self) -> package_service_pb2_grpc.PackageServiceStub:
        return package_service_pb2_grpc.PackageServiceStub(grpc.insecure_channel(self.mesh.gateway.address))

    @property
    def engine(self) -> engine_service_pb2_grpc.EngineServiceStub:
        return engine_service_pb2_grpc.EngineServiceStub(grpc.insecure_channel(self.mesh.engine.address))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    for mesh in start_auth_mesh(tmp_path_factory.mktemp("every-rpc")):
        acme = mesh.token("acme", *USER_ROLES, subject="acme-user")
        globex = mesh.token("globex", *USER_ROLES, subject="globex-user")
        mesh.upload_dataset(acme, "acme-only")
        package_hash = mesh.upload_package(acme)
        events = mesh.submit(acme, spec(package_hash, "acme-only", SCENARIOS))
        assert events[-1].WhichOneof("event") == "result", events[-1]
        yield World(mesh, acme, globex, "acme-only", package_hash, events[0].job_id)


def failure(call: Callable[[], Any]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value.code(), str(err.value.details())  # type: ignore[attr-defined]


def same_as_missing(call: Callable[[str], Any], theirs: str, missing: str) -> None:
    """`call` on another tenant's object fails exactly as on an object that does not exist."""
    code, message = failure(lambda: call(theirs))
    assert code == grpc.StatusCode.NOT_FOUND, message
    missing_code, missing_message = failure(lambda: call(missing))
    assert (code, message.replace(theirs, "<id>")) == (missing_code, missing_message.replace(missing, "<id>"))


def audit(path: Path, request_id: str) -> list[dict[str, Any]]:
    return [line for line in map(json.loads, path.read_text().splitlines()) if line["request_id"] == request_id]


# ---- DataService -----------------------------------------------------------------------


def check_list_datasets(w: World) -> None:
    def ids(token: str) -> set[str]:
        reply = w.data.ListDatasets(data_service_pb2.ListDatasetsRequest(), timeout=30, metadata=bearer(token))
        return {d.dataset_id for d in reply.datasets}

    assert ids(w.acme) == {"pol", w.dataset}
    assert ids(w.globex) == {"pol"}


def check_get_dataset(w: World) -> None:
    def call(token: str) -> Callable[[str], Any]:
        return lambda d: w.data.GetDataset(
            data_service_pb2.GetDatasetRequest(dataset_id=d), timeout=30, metadata=bearer(token)
        )

    assert call(w.acme)(w.dataset).dataset.row_count == w.mesh.table.num_rows
    same_as_missing(call(w.globex), w.dataset, MISSING_DATASET)


def check_get_schema(w: World) -> None:
    def call(token: str) -> Callable[[str], Any]:
        return lambda d: w.data.GetSchema(
            data_service_pb2.GetSchemaRequest(dataset_id=d), timeout=30, metadata=bearer(token)
        )

    assert call(w.acme)(w.dataset).columns
    same_as_missing(call(w.globex), w.dataset, MISSING_DATASET)


def check_sample_rows(w: World) -> None:
    def call(token: str) -> Callable[[str], Any]:
        return lambda d: w.data.SampleRows(
            data_service_pb2.SampleRowsRequest(dataset_id=d, n=5, seed=1), timeout=30, metadata=bearer(token)
        )

    assert len(call(w.acme)(w.dataset).rows) == 5
    same_as_missing(call(w.globex), w.dataset, MISSING_DATASET)


def check_read_rows(w: World) -> None:
    def call(token: str) -> Callable[[str], Any]:
        return lambda d: list(
            w.data.ReadRows(
                data_service_pb2.ReadRowsRequest(dataset_id=d, start_row=0, end_row=10),
                timeout=30,
                metadata=bearer(token),
            )
        )

    assert sum(m.row_count for m in call(w.acme)(w.dataset)) == 10
    same_as_missing(call(w.globex), w.dataset, MISSING_DATASET)


def check_validate_dataset(w: World) -> None:
    def call(token: str) -> Callable[[str], Any]:
        return lambda d: w.data.ValidateDataset(
            data_service_pb2.ValidateDatasetRequest(dataset_id=d), timeout=60, metadata=bearer(token)
        )

    assert call(w.acme)(w.dataset).valid
    same_as_missing(call(w.globex), w.dataset, MISSING_DATASET)


def check_upload_dataset(w: World) -> None:
    """globex uploading acme's dataset id makes globex's own: no ALREADY_EXISTS to hint."""
    before = w.data.GetDataset(
        data_service_pb2.GetDatasetRequest(dataset_id=w.dataset), timeout=30, metadata=bearer(w.acme)
    )
    other = w.mesh.tmp / "other.csv"
    other.write_text("\n".join(w.mesh.tmp.joinpath("pol.csv").read_text().splitlines()[:11]) + "\n")
    rid = uuid.uuid4().hex
    reply = w.data.UploadDataset(
        iter(requests_for(other.read_bytes(), w.dataset, "csv")), timeout=60, metadata=w.metadata(w.globex, rid)
    )
    assert reply.dataset.row_count == 10
    (line,) = audit(w.mesh.tmp / "dd" / "audit.log", rid)
    assert (line["tenant"], line["action"], line["object"], line["outcome"]) == (
        "globex",
        "dataset.upload",
        w.dataset,
        "ok",
    )
    after = w.data.GetDataset(
        data_service_pb2.GetDatasetRequest(dataset_id=w.dataset), timeout=30, metadata=bearer(w.acme)
    )
    assert after.dataset == before.dataset  # acme's is untouched
    w.data.DeleteDataset(
        data_service_pb2.DeleteDatasetRequest(dataset_id=w.dataset), timeout=30, metadata=bearer(w.globex)
    )


def check_delete_dataset(w: World) -> None:
    rid = uuid.uuid4().hex

    def call(d: str) -> Any:
        request = data_service_pb2.DeleteDatasetRequest(dataset_id=d)
        return w.data.DeleteDataset(request, timeout=30, metadata=w.metadata(w.globex, rid if d == w.dataset else ""))

    same_as_missing(call, w.dataset, MISSING_DATASET)
    (line,) = audit(w.mesh.tmp / "dd" / "audit.log", rid)
    assert (line["tenant"], line["action"], line["object"], line["outcome"]) == (
        "globex",
        "dataset.delete",
        w.dataset,
        "not_found",
    )
    w.data.GetDataset(data_service_pb2.GetDatasetRequest(dataset_id=w.dataset), timeout=30, metadata=bearer(w.acme))


# ---- JobService --------------------------------------------------------------------------


def check_submit_job(w: World) -> None:
    """Another tenant's package or dataset: NOT_FOUND as for unknown ones; no job is made.
    (Packages of another tenant: tests/security/test_tenant_packages.py.)"""
    own_package = w.mesh.upload_package(w.globex)  # the same bytes, now globex's too

    def submit(package_hash: str, dataset_id: str, rid: str = "") -> Any:
        request = job_service_pb2.SubmitJobRequest(spec=spec(package_hash, dataset_id, SCENARIOS))
        return list(w.jobs.SubmitJob(request, timeout=60, metadata=w.metadata(w.globex, rid)))

    gateway_audit = w.mesh.gateway_audit
    rid = uuid.uuid4().hex
    code, message = failure(lambda: submit(own_package, w.dataset, rid))
    missing = failure(lambda: submit(own_package, MISSING_DATASET))
    assert (code, message.replace(w.dataset, "<id>")) == (missing[0], missing[1].replace(MISSING_DATASET, "<id>"))
    assert code == grpc.StatusCode.NOT_FOUND
    (line,) = audit(gateway_audit, rid)
    assert (line["tenant"], line["action"], line["outcome"]) == ("globex", "job.submit", "not_found")
    listed = w.jobs.ListJobs(job_service_pb2.ListJobsRequest(), timeout=30, metadata=bearer(w.globex))
    assert list(listed.jobs) == []
    # globex's own job on its own dataset runs; its audit line names the job
    rid = uuid.uuid4().hex
    events = [r.event for r in submit(own_package, "pol", rid)]
    assert events[-1].WhichOneof("event") == "result"
    (line,) = audit(gateway_audit, rid)
    assert (line["tenant"], line["action"], line["object"], line["outcome"]) == (
        "globex",
        "job.submit",
        events[0].job_id,
        "ok",
    )


def job_call(w: World, name: str, token: str) -> Callable[[str], Any]:
    if name == "GetJob":
        return lambda j: w.jobs.GetJob(job_service_pb2.GetJobRequest(job_id=j), timeout=30, metadata=bearer(token))
    if name == "WatchJob":
        return lambda j: list(
            w.jobs.WatchJob(job_service_pb2.WatchJobRequest(job_id=j), timeout=30, metadata=bearer(token))
        )
    return lambda j: w.jobs.CancelJob(
        job_service_pb2.CancelJobRequest(job_id=j, reason="probe"), timeout=30, metadata=bearer(token)
    )


def check_get_job(w: World) -> None:
    assert job_call(w, "GetJob", w.acme)(w.job_id).job.job_id == w.job_id
    same_as_missing(job_call(w, "GetJob", w.globex), w.job_id, MISSING_JOB)


def check_watch_job(w: World) -> None:
    assert job_call(w, "WatchJob", w.acme)(w.job_id)
    same_as_missing(job_call(w, "WatchJob", w.globex), w.job_id, MISSING_JOB)


def check_cancel_job(w: World) -> None:
    before = job_call(w, "GetJob", w.acme)(w.job_id).job
    same_as_missing(job_call(w, "CancelJob", w.globex), w.job_id, MISSING_JOB)
    assert job_call(w, "GetJob", w.acme)(w.job_id).job == before


def check_list_jobs(w: World) -> None:
    def ids(token: str) -> list[str]:
        reply = w.jobs.ListJobs(job_service_pb2.ListJobsRequest(), timeout=30, metadata=bearer(token))
        return [j.job_id for j in reply.jobs]

    assert w.job_id in ids(w.acme)
    assert w.job_id not in ids(w.globex)


def check_get_job_detail(w: World) -> None:
    """A reader of acme gets every row of its job's detail (the engines read acme's rows for
    it); globex gets what a missing job gets."""

    def call(token: str) -> Callable[[str], Any]:
        request = lambda j: job_service_pb2.GetJobDetailRequest(job_id=j, scenarios=[0])  # noqa: E731
        return lambda j: list(w.jobs.GetJobDetail(request(j), timeout=60, metadata=bearer(token)))

    messages = call(w.mesh.token("acme", "read"))(w.job_id)
    assert messages[0].WhichOneof("event") == "header"
    assert sum(m.rows.row_count for m in messages if m.WhichOneof("event") == "rows") == w.mesh.table.num_rows
    same_as_missing(call(w.globex), w.job_id, MISSING_JOB)


def check_get_job_cash_flows(w: World) -> None:
    def call(token: str) -> Callable[[str], Any]:
        request = lambda j: job_service_pb2.GetJobCashFlowsRequest(job_id=j, scenarios=[0])  # noqa: E731
        return lambda j: list(w.jobs.GetJobCashFlows(request(j), timeout=60, metadata=bearer(token)))

    messages = call(w.mesh.token("acme", "read"))(w.job_id)
    assert messages[-1].WhichOneof("event") == "cash_flows" and messages[-1].cash_flows.profiles
    same_as_missing(call(w.globex), w.job_id, MISSING_JOB)


# ---- PackageService ----------------------------------------------------------------------


def check_upload_package(w: World) -> None:
    """The same bytes from another tenant: stored for it, `already_existed` false (no hint)."""
    rid = uuid.uuid4().hex
    other = w.mesh.token("initech", "upload", subject="initech-user")
    reply = w.packages.UploadPackage(upload_requests(w.mesh.archive), timeout=60, metadata=w.metadata(other, rid))
    assert reply.package.package_hash == w.package_hash and not reply.already_existed
    (line,) = audit(w.mesh.gateway_audit, rid)
    assert (line["tenant"], line["action"], line["object"], line["outcome"]) == (
        "initech",
        "package.upload",
        w.package_hash,
        "ok",
    )


def check_get_package(w: World) -> None:
    def call(token: str) -> Callable[[str], Any]:
        return lambda h: w.packages.GetPackage(
            package_service_pb2.GetPackageRequest(package_hash=h), timeout=30, metadata=bearer(token)
        )

    assert call(w.acme)(w.package_hash).package.package_hash == w.package_hash
    same_as_missing(call(w.mesh.token("hooli", "read")), w.package_hash, MISSING_PACKAGE)


def check_download_package(w: World) -> None:
    def call(token: str) -> Callable[[str], Any]:
        return lambda h: list(
            w.packages.DownloadPackage(
                package_service_pb2.DownloadPackageRequest(package_hash=h), timeout=30, metadata=bearer(token)
            )
        )

    assert b"".join(m.chunk for m in call(w.acme)(w.package_hash)) == w.mesh.archive
    same_as_missing(call(w.mesh.token("hooli", "read")), w.package_hash, MISSING_PACKAGE)


def check_list_packages(w: World) -> None:
    def hashes(token: str) -> list[str]:
        reply = w.packages.ListPackages(package_service_pb2.ListPackagesRequest(), timeout=30, metadata=bearer(token))
        return [p.package_hash for p in reply.packages]

    assert hashes(w.acme) == [w.package_hash]
    assert hashes(w.mesh.token("hooli", "read")) == []


# ---- EngineService -------------------------------------------------------------------------


def check_run_chunk(w: World) -> None:
    """Users never reach an engine; the gateway acting for globex cannot read acme's rows
    (the engine holds acme's package already: the dataset read is what is scoped)."""
    request = chunk_request(w.package_hash, w.mesh.gateway.address, w.dataset, "")
    service = w.mesh.token("livecalc-mesh", "admin", subject="livecalc-gateway")

    def acting_for_globex(dataset_id: str) -> Any:
        chunk = chunk_request(w.package_hash, w.mesh.gateway.address, dataset_id, "")
        return list(w.engine.RunChunk(chunk, timeout=60, metadata=[*bearer(service), (ACT_FOR_TENANT, "globex")]))

    same_as_missing(acting_for_globex, w.dataset, MISSING_DATASET)
    for role in ("read", "submit", "upload"):
        user = w.mesh.token("acme", role)
        code, _ = failure(lambda: list(w.engine.RunChunk(request, timeout=60, metadata=bearer(user))))  # noqa: B023
        assert code == grpc.StatusCode.PERMISSION_DENIED


def check_get_capabilities(w: World) -> None:
    """Capabilities list the package hashes of every tenant's jobs: the gateway's only."""
    request = engine_service_pb2.GetCapabilitiesRequest()
    for role in ("read", "submit", "upload"):
        user = w.mesh.token("acme", role)
        code, _ = failure(lambda: w.engine.GetCapabilities(request, timeout=30, metadata=bearer(user)))  # noqa: B023
        assert code == grpc.StatusCode.PERMISSION_DENIED
    service = w.mesh.token("livecalc-mesh", "admin", subject="livecalc-gateway")
    assert w.package_hash in w.engine.GetCapabilities(request, timeout=30, metadata=bearer(service)).cached_packages


CHECKS: dict[str, Callable[[World], None]] = {
    "/livecalc.data.v1.DataService/ListDatasets": check_list_datasets,
    "/livecalc.data.v1.DataService/GetDataset": check_get_dataset,
    "/livecalc.data.v1.DataService/GetSchema": check_get_schema,
    "/livecalc.data.v1.DataService/SampleRows": check_sample_rows,
    "/livecalc.data.v1.DataService/ReadRows": check_read_rows,
    "/livecalc.data.v1.DataService/ValidateDataset": check_validate_dataset,
    "/livecalc.data.v1.DataService/UploadDataset": check_upload_dataset,
    "/livecalc.data.v1.DataService/DeleteDataset": check_delete_dataset,
    "/livecalc.gateway.v1.JobService/SubmitJob": check_submit_job,
    "/livecalc.gateway.v1.JobService/WatchJob": check_watch_job,
    "/livecalc.gateway.v1.JobService/GetJob": check_get_job,
    "/livecalc.gateway.v1.JobService/ListJobs": check_list_jobs,
    "/livecalc.gateway.v1.JobService/CancelJob": check_cancel_job,
    "/livecalc.gateway.v1.JobService/GetJobDetail": check_get_job_detail,
    "/livecalc.gateway.v1.JobService/GetJobCashFlows": check_get_job_cash_flows,
    "/livecalc.gateway.v1.PackageService/UploadPackage": check_upload_package,
    "/livecalc.gateway.v1.PackageService/GetPackage": check_get_package,
    "/livecalc.gateway.v1.PackageService/ListPackages": check_list_packages,
    "/livecalc.gateway.v1.PackageService/DownloadPackage": check_download_package,
    "/livecalc.engine.v1.EngineService/RunChunk": check_run_chunk,
    "/livecalc.engine.v1.EngineService/GetCapabilities": check_get_capabilities,
}


def test_the_table_names_every_rpc_of_the_contract() -> None:
    methods = {
        f"/{service.full_name}/{method.name}"
        for module in (data_service_pb2, job_service_pb2, package_service_pb2, engine_service_pb2)
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    }
    assert set(CHECKS) == methods


@pytest.mark.parametrize("method", list(CHECKS))
def test_another_tenants_objects_are_out_of_reach(world: World, method: str) -> None:
    CHECKS[method](world)
