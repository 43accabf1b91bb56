"""A mesh (data, one engine, gateway as processes) with `--auth-dev` on all three, and tokens.

The three share one HS256 secret (LIVECALC_AUTH_HS256_SECRET), so each mints its own service
token for the calls it makes to the others, and the tests mint user tokens with that secret.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pyarrow as pa

from livecalc.data.v1 import data_pb2
from livecalc.gateway.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc, package_service_pb2_grpc
from services.client import Client
from services.common.auth.config import DEFAULT_AUDIENCE, DEV_ISSUER
from services.common.auth.tokens import mint_hs256
from services.gateway.cli import upload_requests
from services.valuation.blocks import BLOCK_SIZE
from tests.engine.mesh import policies_csv, stochastic_package
from tests.gateway.jobmesh import CALL_TIMEOUT
from tests.support import ServiceProcess, start_service

ROWS = 2 * BLOCK_SIZE - 100
SCENARIOS = 8
#: Tenants that have the dataset `pol` when the mesh starts (datasets are a tenant's).
TENANTS = ("acme", "globex", "initech")


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


@dataclass
class AuthMesh:
    tmp: Path
    secret: str
    data: ServiceProcess
    engine: ServiceProcess
    gateway: ServiceProcess
    archive: bytes
    table: pa.Table

    def token(self, tenant: str, *roles: str, subject: str = "alice") -> str:
        return mint_hs256(
            self.secret.encode(),
            subject=subject,
            tenant=tenant,
            roles=list(roles),
            ttl_seconds=600,
            issuer=DEV_ISSUER,
            audience=DEFAULT_AUDIENCE,
        )

    @property
    def gateway_audit(self) -> Path:
        return self.tmp / "gw" / "audit.log"

    def upload_dataset(self, token: str, dataset_id: str = "pol") -> data_pb2.Dataset:
        """Upload the mesh's policies as ``dataset_id`` for the token's tenant."""
        with Client(data=self.data.address, token=token) as client:
            return client.upload_dataset(self.tmp / "pol.csv", dataset_id=dataset_id)

    def upload_package(self, token: str) -> str:
        with grpc.insecure_channel(self.gateway.address) as channel:
            reply = package_service_pb2_grpc.PackageServiceStub(channel).UploadPackage(
                upload_requests(self.archive), timeout=60, metadata=bearer(token)
            )
        return str(reply.package.package_hash)

    def submit(self, token: str, spec: job_pb2.JobSpec) -> list[job_pb2.JobEvent]:
        with grpc.insecure_channel(self.gateway.address) as channel:
            call = job_service_pb2_grpc.JobServiceStub(channel).SubmitJob(
                job_service_pb2.SubmitJobRequest(spec=spec), timeout=CALL_TIMEOUT, metadata=bearer(token)
            )
            try:
                return [r.event for r in call]
            finally:
                call.cancel()


def start_auth_mesh(tmp: Path) -> Iterator[AuthMesh]:
    secret = secrets.token_hex(32)
    env = {"LIVECALC_AUTH_HS256_SECRET": secret}
    table = policies_csv(tmp / "pol.csv", ROWS)
    archive = stochastic_package(tmp / "model")
    started: list[ServiceProcess] = []
    try:
        data = start_service(
            "data",
            tmp,
            extra=["--auth-dev", "--root", str(tmp / "datasets")],
            env={**env, "LIVECALC_DATA_DIR": str(tmp / "dd")},
        )
        started.append(data)
        engine = start_service(
            "engine",
            tmp,
            extra=["--auth-dev", "--data", data.address, "--threads", "1", "--cache-dir", str(tmp / "cache")],
            env={**env, "LIVECALC_DATA_DIR": str(tmp / "ed")},
        )
        started.append(engine)
        gateway = start_service(
            "gateway",
            tmp,
            extra=["--auth-dev", "--engines", engine.address, "--data-address", data.address],
            env={**env, "LIVECALC_DATA_DIR": str(tmp / "gw")},
        )
        started.append(gateway)
        mesh = AuthMesh(tmp, secret, data, engine, gateway, archive, table)
        for tenant in TENANTS:
            mesh.upload_dataset(mesh.token(tenant, "upload", subject=f"{tenant}-setup"))
        yield mesh
    finally:
        for service in reversed(started):
            service.terminate()
