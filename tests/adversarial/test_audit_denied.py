"""A denied mutation's audit line names the object the request names (issue 19, item 10).

Real data service and gateway processes with `--auth-dev`: a token without the role (or no
token) for UploadDataset, DeleteDataset, UploadPackage, SubmitJob and CancelJob is refused,
and its one audit line carries the dataset id, job id, archive hash or job inputs the request
named; a client stream that sends no first message in time, or none at all, is refused
without waiting for it, its object `-`.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from livecalc.data.v1 import data_service_pb2, data_service_pb2_grpc
from livecalc.gateway.v1 import job_service_pb2, job_service_pb2_grpc, package_service_pb2_grpc
from services.common.auth.config import DEFAULT_AUDIENCE, DEV_ISSUER
from services.common.auth.interceptor import FIRST_MESSAGE_SECONDS
from services.common.auth.tokens import mint_hs256
from services.data.generate import generate
from services.gateway.cli import upload_requests
from tests.data.test_service_backends import requests_for
from tests.gateway.jobmesh import spec
from tests.meshes import Services
from tests.support import ServiceProcess

Code = grpc.StatusCode
PACKAGE_HASH = "ab" * 32


@dataclass
class World:
    tmp: Path
    secret: str
    data: ServiceProcess
    gateway: ServiceProcess
    csv: bytes

    def token(self, *roles: str) -> str:
        return mint_hs256(self.secret.encode(), subject="mallory", tenant="acme", roles=list(roles),
                          ttl_seconds=600, issuer=DEV_ISSUER, audience=DEFAULT_AUDIENCE)  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("denied")
    secret = secrets.token_hex(32)
    generate(tmp / "pol.csv", 50, 3)
    with Services(tmp, extra=["--auth-dev"], env={"LIVECALC_AUTH_HS256_SECRET": secret}) as services:
        data = services.data(tmp / "datasets", env={"LIVECALC_DATA_DIR": str(tmp / "dd")})
        gateway = services.gateway(data)
        yield World(tmp, secret, data, gateway, (tmp / "pol.csv").read_bytes())


def _call(world: World, token: str | None, rpc: Any, request: Any) -> tuple[Code, str, str]:
    """Call `rpc` with a fresh request id; (code, details, request id)."""
    rid = uuid.uuid4().hex
    metadata = [("x-request-id", rid)] + ([("authorization", f"Bearer {token}")] if token else [])
    try:
        rpc(request, metadata=metadata, timeout=30)
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or "", rid
    return Code.OK, "", rid


def _line(path: Path, rid: str) -> dict[str, Any]:
    (line,) = [x for x in map(json.loads, path.read_text().splitlines()) if x["request_id"] == rid]
    return dict(line)


def _data(world: World) -> data_service_pb2_grpc.DataServiceStub:
    return data_service_pb2_grpc.DataServiceStub(grpc.insecure_channel(world.data.address))


def test_denied_dataset_mutations_name_their_dataset(world: World) -> None:
    audit = world.tmp / "dd" / "audit.log"
    stub = _data(world)
    reader = world.token("read")
    code, _, rid = _call(world, reader, stub.UploadDataset, iter(requests_for(world.csv, "stolen", "csv")))
    assert code == Code.PERMISSION_DENIED
    line = _line(audit, rid)
    assert (line["subject"], line["action"], line["object"], line["outcome"]) == (
        "mallory",
        "dataset.upload",
        "stolen",
        "permission_denied",
    )
    code, _, rid = _call(world, None, stub.UploadDataset, iter(requests_for(world.csv, "anon", "csv")))
    assert code == Code.UNAUTHENTICATED
    assert (_line(audit, rid)["subject"], _line(audit, rid)["object"]) == ("anonymous", "anon")
    code, _, rid = _call(world, reader, stub.DeleteDataset, data_service_pb2.DeleteDatasetRequest(dataset_id="pol"))
    assert code == Code.PERMISSION_DENIED
    assert (_line(audit, rid)["action"], _line(audit, rid)["object"]) == ("dataset.delete", "pol")


def test_denied_job_and_package_mutations_name_what_they_would_touch(world: World) -> None:
    audit = world.tmp / "gw" / "audit.log"
    channel = grpc.insecure_channel(world.gateway.address)
    jobs = job_service_pb2_grpc.JobServiceStub(channel)
    packages = package_service_pb2_grpc.PackageServiceStub(channel)
    reader = world.token("read")

    archive = b"not even a zip, and never read"
    code, _, rid = _call(world, reader, packages.UploadPackage, upload_requests(archive))
    assert code == Code.PERMISSION_DENIED
    assert (_line(audit, rid)["action"], _line(audit, rid)["object"]) == (
        "package.upload",
        f"sha256={hashlib.sha256(archive).hexdigest()}",
    )

    submit = job_service_pb2.SubmitJobRequest(spec=spec(PACKAGE_HASH, "pol", 5))

    def submit_all(request: Any, **kwargs: Any) -> list[Any]:
        return list(jobs.SubmitJob(request, **kwargs))

    code, _, rid = _call(world, reader, submit_all, submit)
    assert code == Code.PERMISSION_DENIED
    assert (_line(audit, rid)["action"], _line(audit, rid)["object"]) == (
        "job.submit",
        f"dataset_id=pol package_hash={PACKAGE_HASH}",
    )
    cancel = job_service_pb2.CancelJobRequest(job_id="job-of-someone-else")
    code, _, rid = _call(world, reader, jobs.CancelJob, cancel)
    assert code == Code.PERMISSION_DENIED
    assert (_line(audit, rid)["action"], _line(audit, rid)["object"]) == ("job.cancel", "job-of-someone-else")
    channel.close()


def test_a_denied_stream_without_a_first_message_is_refused_at_once_its_object_dash(world: World) -> None:
    audit = world.tmp / "dd" / "audit.log"
    stub = _data(world)
    reader = world.token("read")

    def slow() -> Iterator[data_service_pb2.UploadDatasetRequest]:
        time.sleep(FIRST_MESSAGE_SECONDS + 5)
        yield from requests_for(world.csv, "late", "csv")

    started = time.monotonic()
    code, _, rid = _call(world, reader, stub.UploadDataset, slow())
    assert code == Code.PERMISSION_DENIED and time.monotonic() - started < FIRST_MESSAGE_SECONDS + 4
    assert _line(audit, rid)["object"] == "-"
    code, _, rid = _call(world, reader, stub.UploadDataset, iter([]))
    assert code == Code.PERMISSION_DENIED and _line(audit, rid)["object"] == "-"
    assert "Traceback" not in world.data.log()
