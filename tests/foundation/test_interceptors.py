"""The interceptor maps errors to statuses once and counts every RPC, unary and streaming."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import grpc
import pytest
from grpc import aio
from prometheus_client import CollectorRegistry

from livecalc.data.v1 import data_service_pb2 as pb
from livecalc.data.v1 import data_service_pb2_grpc as pb_grpc
from services.common.config import ServerConfig
from services.common.errors import FieldViolation, InvalidArgument, NotFound
from services.common.server import RunningServer, ServiceBinding, start_server

pytestmark = pytest.mark.anyio
SERVICE = "livecalc.data.v1.DataService"


class ScriptedDataService(pb_grpc.DataServiceServicer):
    """Each method fails or succeeds in a way the tests below check."""

    async def GetDataset(self, request: pb.GetDatasetRequest, context: Any) -> pb.GetDatasetResponse:
        if request.dataset_id == "missing":
            raise NotFound("dataset 'missing' does not exist")
        if request.dataset_id == "bug":
            raise ZeroDivisionError("secret internals")
        return pb.GetDatasetResponse()

    async def ReadRows(self, request: pb.ReadRowsRequest, context: Any) -> AsyncIterator[pb.ReadRowsResponse]:
        for row in range(request.start_row, request.end_row):
            if row == 2:
                raise InvalidArgument("bad range", (FieldViolation("end_row", "past the end"),))
            yield pb.ReadRowsResponse(start_row=row, row_count=1)

    async def UploadDataset(self, request_iterator: Any, context: Any) -> pb.UploadDatasetResponse:
        async for _ in request_iterator:
            pass
        return pb.UploadDatasetResponse()


@pytest.fixture
async def server() -> AsyncIterator[tuple[RunningServer, CollectorRegistry]]:
    registry = CollectorRegistry()
    servicer = ScriptedDataService()  # type: ignore[abstract]  # the other methods are not exercised
    running = await start_server(
        ServerConfig(service="data", port=0, grace_seconds=0, drain_seconds=0),
        [ServiceBinding(SERVICE, lambda s: pb_grpc.add_DataServiceServicer_to_server(servicer, s))],
        registry=registry,
    )
    try:
        yield running, registry
    finally:
        await running.stop()


async def handled(registry: CollectorRegistry, method: str, rpc_type: str, code: str, expected: float) -> float:
    """The handled count once it reaches `expected` (or after 2 s).

    A failed RPC's status reaches the client when the handler aborts, a moment before the
    handler's `finally` counts it; the client, on the same loop, can look in between.
    """
    labels = {"grpc_type": rpc_type, "grpc_service": SERVICE, "grpc_method": method, "grpc_code": code}
    value = 0.0
    with anyio.move_on_after(2):
        while (value := registry.get_sample_value("grpc_server_handled_total", labels) or 0.0) < expected:
            await anyio.sleep(0.01)
    return value


async def test_typed_error_becomes_its_status(server: tuple[RunningServer, CollectorRegistry]) -> None:
    running, registry = server
    async with aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        stub = pb_grpc.DataServiceStub(channel)
        with pytest.raises(aio.AioRpcError) as info:
            await stub.GetDataset(pb.GetDatasetRequest(dataset_id="missing"))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        assert info.value.details() == "dataset 'missing' does not exist"
        await stub.GetDataset(pb.GetDatasetRequest(dataset_id="ok"))
    assert await handled(registry, "GetDataset", "unary", "NotFound", 1) == 1
    assert await handled(registry, "GetDataset", "unary", "OK", 1) == 1


async def test_bug_is_internal_without_leaking(server: tuple[RunningServer, CollectorRegistry]) -> None:
    running, registry = server
    async with aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        with pytest.raises(aio.AioRpcError) as info:
            await pb_grpc.DataServiceStub(channel).GetDataset(pb.GetDatasetRequest(dataset_id="bug"))
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert "secret" not in (info.value.details() or "")
    assert await handled(registry, "GetDataset", "unary", "Internal", 1) == 1


async def test_streaming_error_after_messages(server: tuple[RunningServer, CollectorRegistry]) -> None:
    running, registry = server
    received = []
    async with aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        call = pb_grpc.DataServiceStub(channel).ReadRows(pb.ReadRowsRequest(start_row=0, end_row=5))
        with pytest.raises(aio.AioRpcError) as info:
            async for message in call:
                received.append(message.start_row)
    assert received == [0, 1]
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == "bad range (end_row: past the end)"
    labels = {"grpc_type": "server_stream", "grpc_service": SERVICE, "grpc_method": "ReadRows"}
    assert registry.get_sample_value("grpc_server_msg_sent_total", labels) == 2
    assert await handled(registry, "ReadRows", "server_stream", "InvalidArgument", 1) == 1


async def test_client_stream_counts_messages(server: tuple[RunningServer, CollectorRegistry]) -> None:
    running, registry = server

    async def chunks() -> AsyncIterator[pb.UploadDatasetRequest]:
        for _ in range(3):
            yield pb.UploadDatasetRequest(chunk=b"x")

    async with aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        await pb_grpc.DataServiceStub(channel).UploadDataset(chunks())
    labels = {"grpc_type": "client_stream", "grpc_service": SERVICE, "grpc_method": "UploadDataset"}
    assert registry.get_sample_value("grpc_server_msg_received_total", labels) == 3
    assert registry.get_sample_value("grpc_server_started_total", labels) == 1
    assert await handled(registry, "UploadDataset", "client_stream", "OK", 1) == 1
    assert registry.get_sample_value("grpc_server_handling_seconds_count", labels) == 1
