"""The gateway's channel to the data service, opened on first use.

The gateway calls the data service for two things: reading dataset metadata for jobs
(inputs.DataServiceDatasets, which scenario sets share) and forwarding clients' DataService
RPCs (data_proxy.DataProxyServicer). Each holds its own `DataServiceChannel`: the address,
the service credentials its calls carry, and the channel security it opens with.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from grpc import aio

from livecalc.data.v1 import data_service_pb2_grpc
from services.common.auth.service import ServiceCredentials
from services.common.client import ChannelSecurity, open_aio_channel

if TYPE_CHECKING:
    from livecalc.data.v1.data_service_pb2_grpc import DataServiceAsyncStub


class DataServiceChannel:
    """One channel to the data service at `address`, opened by the first `stub()` and closed by
    `close()` (whoever made this object calls it)."""

    def __init__(
        self, address: str, *, credentials: ServiceCredentials | None = None, security: ChannelSecurity | None = None
    ) -> None:
        self.address = address
        self.credentials = credentials or ServiceCredentials()
        self.security = security or ChannelSecurity()
        self._channel: aio.Channel | None = None

    def stub(self) -> DataServiceAsyncStub:
        """A stub on this object's one channel to the data service (opened on first use)."""
        if self._channel is None:
            self._channel = open_aio_channel(self.address, self.security)
        return data_service_pb2_grpc.DataServiceStub(self._channel)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close(grace=None)
