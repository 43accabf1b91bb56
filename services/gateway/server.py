"""`livecalc serve gateway`: configuration and assembly of the gateway's gRPC surface.

JobService still answers UNIMPLEMENTED with a message naming the method. PackageService
stores packages in ``$LIVECALC_DATA_DIR/packages`` (default ./.livecalc/packages), or in an
Azure Blob container when a connection string and a container are given (flags, or
LIVECALC_PACKAGES_AZURE_CONNECTION_STRING / LIVECALC_PACKAGES_AZURE_CONTAINER). The
environment is read here only.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry

from livecalc.gateway.v1 import job_service_pb2, job_service_pb2_grpc, package_service_pb2, package_service_pb2_grpc
from services.common.errors import InvalidArgument
from services.common.server import ServiceBinding, unimplemented_servicer
from services.common.service import ServiceParts
from services.common.storage.azure_blob import AzureBlobStorage, AzureConfig
from services.common.storage.base import Storage
from services.common.storage.local import LocalStorage
from services.gateway.package_servicer import PackageServicer
from services.gateway.package_store import PackageStore

JOB_SERVICE = job_service_pb2.DESCRIPTOR.services_by_name["JobService"].full_name
PACKAGE_SERVICE = package_service_pb2.DESCRIPTOR.services_by_name["PackageService"].full_name
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PackageConfig:
    """Where packages live: a local directory, or an Azure container."""

    root: Path
    azure: AzureConfig | None = None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--packages-root",
        help="package directory (env LIVECALC_PACKAGES_ROOT; default $LIVECALC_DATA_DIR/packages)",
    )
    parser.add_argument(
        "--packages-azure-connection-string",
        help="store packages in Azure Blob (env LIVECALC_PACKAGES_AZURE_CONNECTION_STRING)",
    )
    parser.add_argument(
        "--packages-azure-container", help="blob container of the packages (env LIVECALC_PACKAGES_AZURE_CONTAINER)"
    )


def resolve_package_config(args: argparse.Namespace, env: Mapping[str, str]) -> PackageConfig:
    """Flags win over the environment, which wins over defaults."""
    root = getattr(args, "packages_root", None) or env.get("LIVECALC_PACKAGES_ROOT")
    if not root:
        root = str(Path(env.get("LIVECALC_DATA_DIR") or ".livecalc") / "packages")
    conn = getattr(args, "packages_azure_connection_string", None) or env.get(
        "LIVECALC_PACKAGES_AZURE_CONNECTION_STRING"
    )
    container = getattr(args, "packages_azure_container", None) or env.get("LIVECALC_PACKAGES_AZURE_CONTAINER")
    azure = None
    if conn or container:
        if not (conn and container):
            raise InvalidArgument("Azure Blob needs both a connection string and a container name")
        if not 3 <= len(container) <= 63:
            raise InvalidArgument(f"Azure container names have 3 to 63 characters, got {container!r}")
        azure = AzureConfig(connection_string=conn, container=container)
    return PackageConfig(root=Path(root), azure=azure)


async def open_storage(config: PackageConfig) -> Storage:
    if config.azure is not None:
        return await AzureBlobStorage.open(config.azure)
    local = LocalStorage(config.root)
    local.remove_stale_uploads()
    return local


async def build(args: argparse.Namespace, env: Mapping[str, str], registry: CollectorRegistry) -> ServiceParts:
    config = resolve_package_config(args, env)
    storage = await open_storage(config)
    where = config.azure.container if config.azure is not None else str(config.root)
    log.info("packages", extra={"fields": {"source": storage.kind, "at": where}})
    jobs = unimplemented_servicer(job_service_pb2_grpc.JobServiceServicer, JOB_SERVICE)
    packages = PackageServicer(PackageStore(storage))
    return ServiceParts(
        bindings=[
            ServiceBinding(JOB_SERVICE, lambda s: job_service_pb2_grpc.add_JobServiceServicer_to_server(jobs, s)),
            ServiceBinding(
                PACKAGE_SERVICE, lambda s: package_service_pb2_grpc.add_PackageServiceServicer_to_server(packages, s)
            ),
        ],
        on_stop=[storage.close],
    )
