"""Client channels: TLS, a bearer token on every call, the receive limit.

`ChannelSecurity` says how a client authenticates and encrypts; `open_aio_channel` opens a
grpc.aio channel with it (`use_channel_security` sets the default, as the `livecalc` command does).
"""

from __future__ import annotations

import contextvars
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import grpc
from grpc import aio

#: Answers up to 16 MiB (a job's result with every scenario's values).
MAX_RECEIVE_BYTES: Final = 16 << 20


@dataclass(frozen=True)
class ChannelSecurity:
    """How a client authenticates and encrypts: a bearer token, TLS (with its trusted roots)."""

    token: str | None = field(default=None, repr=False)
    tls: bool = False
    #: PEM roots to trust instead of the system's (implies TLS).
    tls_ca: Path | None = None

    def credentials(self) -> grpc.ChannelCredentials | None:
        if not self.tls and self.tls_ca is None:
            return None
        roots = self.tls_ca.read_bytes() if self.tls_ca is not None else None
        return grpc.ssl_channel_credentials(root_certificates=roots)

    def metadata(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.token}")] if self.token else []


_SECURITY: contextvars.ContextVar[ChannelSecurity | None] = contextvars.ContextVar(
    "livecalc_channel_security", default=None
)


def use_channel_security(security: ChannelSecurity) -> None:
    """Make `security` the default of channels opened from here on (the CLI's main())."""
    _SECURITY.set(security)


def channel_security() -> ChannelSecurity:
    """The default `ChannelSecurity` (plaintext, no token unless the CLI set one)."""
    return _SECURITY.get() or ChannelSecurity()


def _aio_details(d: Any, extra: list[tuple[str, str]]) -> aio.ClientCallDetails:
    metadata = aio.Metadata(*(d.metadata or ()), *extra)
    return aio.ClientCallDetails(d.method, d.timeout, metadata, d.credentials, d.wait_for_ready)


class _AioBearerUU(aio.UnaryUnaryClientInterceptor):
    def __init__(self, metadata: list[tuple[str, str]]) -> None:
        self._metadata = metadata

    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await continuation(_aio_details(client_call_details, self._metadata), request)


class _AioBearerUS(aio.UnaryStreamClientInterceptor):
    def __init__(self, metadata: list[tuple[str, str]]) -> None:
        self._metadata = metadata

    async def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await continuation(_aio_details(client_call_details, self._metadata), request)


class _AioBearerSU(aio.StreamUnaryClientInterceptor):
    def __init__(self, metadata: list[tuple[str, str]]) -> None:
        self._metadata = metadata

    async def intercept_stream_unary(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        return await continuation(_aio_details(client_call_details, self._metadata), request_iterator)


class _AioBearerSS(aio.StreamStreamClientInterceptor):
    def __init__(self, metadata: list[tuple[str, str]]) -> None:
        self._metadata = metadata

    async def intercept_stream_stream(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        return await continuation(_aio_details(client_call_details, self._metadata), request_iterator)


def open_aio_channel(
    address: str, security: ChannelSecurity | None = None, *, options: Sequence[tuple[str, Any]] = ()
) -> aio.Channel:
    """The grpc.aio counterpart of `open_channel` (create it inside the running loop)."""
    security = security if security is not None else channel_security()
    opts = [("grpc.max_receive_message_length", MAX_RECEIVE_BYTES), *options]
    metadata = security.metadata()
    interceptors: list[aio.ClientInterceptor] = (
        [_AioBearerUU(metadata), _AioBearerUS(metadata), _AioBearerSU(metadata), _AioBearerSS(metadata)]
        if metadata
        else []
    )
    creds = security.credentials()
    if creds is not None:
        return aio.secure_channel(address, creds, options=opts, interceptors=interceptors or None)
    return aio.insecure_channel(address, options=opts, interceptors=interceptors or None)
