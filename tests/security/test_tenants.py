"""Issue 13: two tenants side by side on one authenticated mesh; neither sees, watches or
cancels the other's jobs (NOT_FOUND, as for a job that does not exist), lists are per tenant,
and every mutating RPC leaves exactly one audit line."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest

from livecalc.gateway.v1 import job_service_pb2, job_service_pb2_grpc
from tests.gateway.jobmesh import spec
from tests.security.authmesh import SCENARIOS, AuthMesh, bearer, start_auth_mesh

pytestmark = pytest.mark.timeout(300)

JobCall = Callable[[job_service_pb2_grpc.JobServiceStub, str, list[tuple[str, str]]], Any]

#: Every JobService RPC that names a job: (name, call with a job id).
JOB_RPCS: list[tuple[str, JobCall]] = [
    ("GetJob", lambda s, j, m: s.GetJob(job_service_pb2.GetJobRequest(job_id=j), timeout=30, metadata=m)),
    (
        "WatchJob",
        lambda s, j, m: list(s.WatchJob(job_service_pb2.WatchJobRequest(job_id=j), timeout=30, metadata=m)),
    ),
    (
        "CancelJob",
        lambda s, j, m: s.CancelJob(job_service_pb2.CancelJobRequest(job_id=j, reason="x"), timeout=30, metadata=m),
    ),
]


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthMesh]:
    yield from start_auth_mesh(tmp_path_factory.mktemp("tenants"))


def audit_lines(mesh: AuthMesh) -> list[dict[str, Any]]:
    return [json.loads(line) for line in mesh.gateway_audit.read_text().splitlines()]


def test_jobs_are_scoped_by_tenant(mesh: AuthMesh) -> None:
    users = {t: mesh.token(t, "read", "submit", "upload", subject=f"{t}-user") for t in ("acme", "globex")}
    package_hash = mesh.upload_package(users["acme"])
    mesh.upload_package(users["globex"])
    jobs: dict[str, str] = {}
    for tenant, token in users.items():
        events = mesh.submit(token, spec(package_hash, "pol", SCENARIOS))
        assert events[-1].WhichOneof("event") == "result"
        jobs[tenant] = events[0].job_id
    before = len(audit_lines(mesh))
    with grpc.insecure_channel(mesh.gateway.address) as channel:
        stub = job_service_pb2_grpc.JobServiceStub(channel)
        for tenant, token in users.items():
            other = next(j for t, j in jobs.items() if t != tenant)
            for name, rpc in JOB_RPCS:
                rpc(stub, jobs[tenant], bearer(token))  # one's own job: fine
                for job_id in (other, "job-that-does-not-exist"):
                    with pytest.raises(grpc.RpcError) as err:
                        rpc(stub, job_id, bearer(token))
                    assert err.value.code() == grpc.StatusCode.NOT_FOUND, (tenant, name)  # type: ignore[attr-defined]
                    assert "does not exist" in (err.value.details() or "")  # type: ignore[attr-defined]
            listed = stub.ListJobs(job_service_pb2.ListJobsRequest(), timeout=30, metadata=bearer(token))
            assert [j.job_id for j in listed.jobs] == [jobs[tenant]]
    # CancelJob is the one mutating RPC above: one line per call (2 tenants × (own + other + missing))
    cancels = [line for line in audit_lines(mesh)[before:] if line["action"] == "job.cancel"]
    assert len(cancels) == 6
    assert sorted((c["tenant"], c["outcome"]) for c in cancels) == sorted(
        [(t, "ok") for t in users] + [(t, "not_found") for t in users for _ in range(2)]
    )
    submits = [line for line in audit_lines(mesh)[:before] if line["action"] == "job.submit"]
    assert sorted(s["tenant"] for s in submits) == ["acme", "globex"]
    uploads = [line for line in audit_lines(mesh)[:before] if line["action"] == "package.upload"]
    assert sorted(u["tenant"] for u in uploads) == ["acme", "globex"]
