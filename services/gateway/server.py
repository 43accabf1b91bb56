"""The gateway's gRPC surface: JobService and PackageService.

The contract is published in protos/livecalc/gateway/v1; until the job and package
machinery lands, every method answers UNIMPLEMENTED with a message naming it.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping

from prometheus_client import CollectorRegistry

from livecalc.gateway.v1 import job_service_pb2, job_service_pb2_grpc, package_service_pb2, package_service_pb2_grpc
from services.common.server import ServiceBinding, unimplemented_servicer
from services.common.service import ServiceParts

JOB_SERVICE = job_service_pb2.DESCRIPTOR.services_by_name["JobService"].full_name
PACKAGE_SERVICE = package_service_pb2.DESCRIPTOR.services_by_name["PackageService"].full_name


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The gateway has no flags of its own yet."""


async def build(args: argparse.Namespace, env: Mapping[str, str], registry: CollectorRegistry) -> ServiceParts:
    jobs = unimplemented_servicer(job_service_pb2_grpc.JobServiceServicer, JOB_SERVICE)
    packages = unimplemented_servicer(package_service_pb2_grpc.PackageServiceServicer, PACKAGE_SERVICE)
    return ServiceParts(
        bindings=[
            ServiceBinding(JOB_SERVICE, lambda s: job_service_pb2_grpc.add_JobServiceServicer_to_server(jobs, s)),
            ServiceBinding(
                PACKAGE_SERVICE, lambda s: package_service_pb2_grpc.add_PackageServiceServicer_to_server(packages, s)
            ),
        ]
    )
