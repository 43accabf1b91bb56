"""Which role each RPC needs, in one table, and which RPCs change state (and are audited).

Roles: `read` (look at datasets, packages, jobs), `submit` (run and cancel jobs), `upload`
(add datasets and packages), `admin` (delete; satisfies every other role). Health and
reflection are open to everyone: probes and grpcurl carry no token. An RPC missing from
the table is denied to everyone but `admin`, so a new RPC fails closed until it is listed.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Final


class Role(StrEnum):
    READ = "read"
    SUBMIT = "submit"
    UPLOAD = "upload"
    ADMIN = "admin"


#: Metadata naming the tenant a call acts for. Only `admin` may send it (the mesh's service
#: tokens: the gateway acts for a job's tenant towards engines, engines towards the data
#: service and the gateway), like Kubernetes' impersonation headers; the call then sees that
#: tenant's objects only. Another caller sending it is PERMISSION_DENIED.
ACT_FOR_TENANT: Final = "x-livecalc-tenant"

#: Services that never ask for a token.
OPEN_SERVICES: Final = frozenset(
    {
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
        "grpc.reflection.v1.ServerReflection",
    }
)

_DATA = "livecalc.data.v1.DataService"
_JOBS = "livecalc.gateway.v1.JobService"
_PACKAGES = "livecalc.gateway.v1.PackageService"
_ENGINE = "livecalc.engine.v1.EngineService"

#: '/package.Service/Method' → the role it needs.
REQUIRED_ROLE: Final[Mapping[str, Role]] = {
    f"/{_DATA}/ListDatasets": Role.READ,
    f"/{_DATA}/GetDataset": Role.READ,
    f"/{_DATA}/GetSchema": Role.READ,
    f"/{_DATA}/SampleRows": Role.READ,
    f"/{_DATA}/ReadRows": Role.READ,
    f"/{_DATA}/ValidateDataset": Role.READ,
    f"/{_DATA}/UploadDataset": Role.UPLOAD,
    f"/{_DATA}/DeleteDataset": Role.ADMIN,
    f"/{_JOBS}/SubmitJob": Role.SUBMIT,
    f"/{_JOBS}/WatchJob": Role.READ,
    f"/{_JOBS}/GetJob": Role.READ,
    f"/{_JOBS}/ListJobs": Role.READ,
    f"/{_JOBS}/CancelJob": Role.SUBMIT,
    # detail recomputes a finished job's blocks but changes nothing: reading, like GetJob
    f"/{_JOBS}/GetJobDetail": Role.READ,
    f"/{_JOBS}/GetJobCashFlows": Role.READ,
    f"/{_PACKAGES}/UploadPackage": Role.UPLOAD,
    f"/{_PACKAGES}/GetPackage": Role.READ,
    f"/{_PACKAGES}/ListPackages": Role.READ,
    f"/{_PACKAGES}/DownloadPackage": Role.READ,
    # Engines serve the gateway only: its service token carries `admin`. Capabilities too:
    # they list the package hashes an engine holds, whichever tenant's jobs brought them.
    f"/{_ENGINE}/RunChunk": Role.ADMIN,
    f"/{_ENGINE}/GetCapabilities": Role.ADMIN,
}

#: RPCs that change state → the audit action they are logged as.
AUDITED_ACTIONS: Final[Mapping[str, str]] = {
    f"/{_DATA}/UploadDataset": "dataset.upload",
    f"/{_DATA}/DeleteDataset": "dataset.delete",
    f"/{_JOBS}/SubmitJob": "job.submit",
    f"/{_JOBS}/CancelJob": "job.cancel",
    f"/{_PACKAGES}/UploadPackage": "package.upload",
}


#: The field that names an audited RPC's object, looked for in its requests, then its
#: responses (SubmitJob's is the job id of its first event, not the package it runs).
AUDIT_OBJECT_FIELD: Final[Mapping[str, str]] = {
    f"/{_DATA}/UploadDataset": "dataset_id",
    f"/{_DATA}/DeleteDataset": "dataset_id",
    f"/{_JOBS}/SubmitJob": "job_id",
    f"/{_JOBS}/CancelJob": "job_id",
    f"/{_PACKAGES}/UploadPackage": "package_hash",
}


def is_open(method: str) -> bool:
    """True for health and reflection, which never need a token."""
    service = method.lstrip("/").partition("/")[0]
    return service in OPEN_SERVICES


def required_role(method: str) -> Role:
    """The role `method` needs; `admin` for anything not in the table (fail closed)."""
    return REQUIRED_ROLE.get(method, Role.ADMIN)


def allows(roles: frozenset[str], needed: Role) -> bool:
    """Whether a principal with `roles` may call an RPC that needs `needed`."""
    return needed.value in roles or Role.ADMIN.value in roles


def action_of(method: str) -> str:
    """The audit action of `method`: its table entry, else 'rpc:<Method>'."""
    return AUDITED_ACTIONS.get(method) or f"rpc:{method.rpartition('/')[2]}"
