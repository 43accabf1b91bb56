"""The engine's gRPC surface: EngineService.

The contract is published in protos/livecalc/engine/v1; the WASM host underneath lives in
this package, and RunChunk/GetCapabilities answer UNIMPLEMENTED until the mesh work wires
them to it.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping

from prometheus_client import CollectorRegistry

from livecalc.engine.v1 import engine_service_pb2, engine_service_pb2_grpc
from services.common.server import ServiceBinding, unimplemented_servicer
from services.common.service import ServiceParts

ENGINE_SERVICE = engine_service_pb2.DESCRIPTOR.services_by_name["EngineService"].full_name


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The engine has no flags of its own yet."""


async def build(args: argparse.Namespace, env: Mapping[str, str], registry: CollectorRegistry) -> ServiceParts:
    engine = unimplemented_servicer(engine_service_pb2_grpc.EngineServiceServicer, ENGINE_SERVICE)
    return ServiceParts(
        bindings=[
            ServiceBinding(
                ENGINE_SERVICE, lambda s: engine_service_pb2_grpc.add_EngineServiceServicer_to_server(engine, s)
            )
        ]
    )
