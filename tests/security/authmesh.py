"""A mesh (data, one engine, gateway as processes) with `--auth-dev` on all three, and tokens.

The three share one HS256 secret (LIVECALC_AUTH_HS256_SECRET), so each mints its own service
token for the calls it makes to the others, and the tests mint user tokens with that secret.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from livecalc.data.v1 import data_pb2
from livecalc.gateway.v1 import job_pb2
from services.client import Client
from services.common.auth.config import DEFAULT_AUDIENCE, DEV_ISSUER
from services.common.auth.tokens import mint_hs256
from services.valuation.blocks import BLOCK_SIZE
from tests.engine.mesh import policies_csv, stochastic_package, upload_package
from tests.gateway.jobmesh import submit
from tests.meshes import Services
from tests.support import ServiceProcess, wait_started

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
        return upload_package(self.gateway.address, self.archive, metadata=bearer(token))

    def submit(self, token: str, spec: job_pb2.JobSpec) -> list[job_pb2.JobEvent]:
        return submit(self.gateway.address, spec, metadata=bearer(token))


def start_auth_mesh(tmp: Path) -> Iterator[AuthMesh]:
    secret = secrets.token_hex(32)
    table = policies_csv(tmp / "pol.csv", ROWS)
    archive = stochastic_package(tmp / "model")
    with Services(tmp, extra=["--auth-dev"], env={"LIVECALC_AUTH_HS256_SECRET": secret}) as services:
        # data service and engine together, the gateway once they serve (as in Services.mesh)
        data = services.data(tmp / "datasets", env={"LIVECALC_DATA_DIR": str(tmp / "dd")}, wait=False)
        engine = services.engine(data, "e0", slots=None, env={"LIVECALC_DATA_DIR": str(tmp / "ed")}, wait=False)
        wait_started(data)
        wait_started(engine)
        gateway = services.gateway(data, [engine])
        mesh = AuthMesh(tmp, secret, data, engine, gateway, archive, table)
        for tenant in TENANTS:
            mesh.upload_dataset(mesh.token(tenant, "upload", subject=f"{tenant}-setup"))
        yield mesh
