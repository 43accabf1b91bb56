"""The gateway serves DataService too, by forwarding: one address for every client command.

A client names the gateway alone (`livecalc … --address GATEWAY`, `Client(GATEWAY)`): the
gateway answers JobService and PackageService itself and forwards every DataService RPC —
unary, server-streaming (ReadRows) and client-streaming (UploadDataset) — to its data service
(``--data-address``), message by message, with the caller's deadline.

Who the call is for does not change on the way. The gateway's auth interceptor has already
authenticated the caller and checked the RPC's role (roles.REQUIRED_ROLE names the DataService
RPCs, so a read-only token cannot upload and only `admin` deletes); the forwarded call then
carries the gateway's service token acting for the caller's tenant (`x-livecalc-tenant`), the
way the gateway reads datasets for a job, so the data service scopes it to that tenant's
catalog: another tenant's dataset is NOT_FOUND through the gateway as it is at the data service.
With auth off the call is forwarded as it came (tenant ''). The data service's statuses come
back unchanged (NOT_FOUND stays NOT_FOUND); an unreachable data service is UNAVAILABLE naming it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, TypeVar

import grpc
from grpc import aio

from livecalc.data.v1 import data_service_pb2, data_service_pb2_grpc
from services.common.auth.interceptor import current_principal
from services.gateway.data_channel import DataServiceChannel
from services.gateway.inputs import Upstream

DATA_SERVICE = data_service_pb2.DESCRIPTOR.services_by_name["DataService"].full_name
#: Metadata passed on to the data service as it came (the request id ties the two services' logs).
_PASSED_ON = ("x-request-id",)
Request = TypeVar("Request")
Response = TypeVar("Response")


class DataProxyServicer(DataServiceChannel, data_service_pb2_grpc.DataServiceServicer):
    """DataService on the gateway: each RPC forwarded to the data service for the caller's tenant,
    on this servicer's own channel (`close` closes it)."""

    def _options(self, context: aio.ServicerContext[Any, Any]) -> dict[str, Any]:
        """The forwarded call's deadline (the caller's remaining time) and metadata (acting for
        the caller's tenant, its request id passed on)."""
        passed = tuple(
            (str(key), value)
            for key, value in (context.invocation_metadata() or ())
            if key in _PASSED_ON and isinstance(value, str)
        )
        metadata = (*self.credentials.metadata(current_principal().tenant), *passed)
        return {"timeout": context.time_remaining(), "metadata": metadata}

    def _upstream(self, exc: aio.AioRpcError) -> Upstream:
        details = exc.details() or exc.code().name
        if exc.code() == grpc.StatusCode.UNAVAILABLE:
            details = f"the gateway cannot reach its data service at {self.address}: {details}"
        return Upstream(exc.code(), details)

    async def _unary(
        self,
        rpc: aio.UnaryUnaryMultiCallable[Request, Response],
        request: Request,
        context: aio.ServicerContext[Any, Any],
    ) -> Response:
        """A unary RPC forwarded: the caller's deadline and tenant, the data service's status."""
        try:
            return await rpc(request, **self._options(context))
        except aio.AioRpcError as exc:
            raise self._upstream(exc) from None

    # unary RPCs

    async def ListDatasets(
        self, request: data_service_pb2.ListDatasetsRequest, context: aio.ServicerContext[Any, Any]
    ) -> data_service_pb2.ListDatasetsResponse:
        return await self._unary(self.stub().ListDatasets, request, context)

    async def GetDataset(
        self, request: data_service_pb2.GetDatasetRequest, context: aio.ServicerContext[Any, Any]
    ) -> data_service_pb2.GetDatasetResponse:
        return await self._unary(self.stub().GetDataset, request, context)

    async def GetSchema(
        self, request: data_service_pb2.GetSchemaRequest, context: aio.ServicerContext[Any, Any]
    ) -> data_service_pb2.GetSchemaResponse:
        return await self._unary(self.stub().GetSchema, request, context)

    async def SampleRows(
        self, request: data_service_pb2.SampleRowsRequest, context: aio.ServicerContext[Any, Any]
    ) -> data_service_pb2.SampleRowsResponse:
        return await self._unary(self.stub().SampleRows, request, context)

    async def ValidateDataset(
        self, request: data_service_pb2.ValidateDatasetRequest, context: aio.ServicerContext[Any, Any]
    ) -> data_service_pb2.ValidateDatasetResponse:
        return await self._unary(self.stub().ValidateDataset, request, context)

    async def DeleteDataset(
        self, request: data_service_pb2.DeleteDatasetRequest, context: aio.ServicerContext[Any, Any]
    ) -> data_service_pb2.DeleteDatasetResponse:
        return await self._unary(self.stub().DeleteDataset, request, context)

    # streams

    async def ReadRows(
        self, request: data_service_pb2.ReadRowsRequest, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[data_service_pb2.ReadRowsResponse]:
        call = self.stub().ReadRows(request, **self._options(context))
        try:
            async for message in call:
                yield message
        except aio.AioRpcError as exc:
            raise self._upstream(exc) from None
        finally:
            call.cancel()  # the caller went away: stop the data service's stream too

    async def UploadDataset(
        self,
        request_iterator: AsyncIterator[data_service_pb2.UploadDatasetRequest],
        context: aio.ServicerContext[Any, Any],
    ) -> data_service_pb2.UploadDatasetResponse:
        try:
            # the caller's chunks stream on as they arrive: nothing is held here
            return await self.stub().UploadDataset(request_iterator, **self._options(context))
        except aio.AioRpcError as exc:
            raise self._upstream(exc) from None
