"""The data service's gRPC surface: DataService (placeholder until the catalog lands)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping

from livecalc.data.v1 import data_service_pb2, data_service_pb2_grpc
from services.common.server import ServiceBinding, unimplemented_servicer
from services.common.service import ServiceParts

DATA_SERVICE = data_service_pb2.DESCRIPTOR.services_by_name["DataService"].full_name


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", help="dataset directory (env LIVECALC_DATA_ROOT)")


async def build(args: argparse.Namespace, env: Mapping[str, str]) -> ServiceParts:
    data = unimplemented_servicer(data_service_pb2_grpc.DataServiceServicer, DATA_SERVICE)
    return ServiceParts(
        bindings=[
            ServiceBinding(DATA_SERVICE, lambda s: data_service_pb2_grpc.add_DataServiceServicer_to_server(data, s))
        ]
    )
