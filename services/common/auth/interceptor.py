"""The server interceptor that authenticates, authorizes and audits every RPC.

It sits inside the metrics/error interceptor (services/common/interceptors.py): that one
wraps whatever handler this one returns, so a denial here is an ordinary handler raising
`Unauthenticated`/`PermissionDenied`, counted in `grpc_server_handled_total` like any other
status, and the service's own handler never runs. Health and reflection pass untouched.

An allowed RPC runs with its `Principal` in a context variable (`current_principal()`),
for the handlers that scope objects by tenant: the token's tenant, or with `admin` the one
named by `x-livecalc-tenant` metadata (roles.ACT_FOR_TENANT). Mutating RPCs (roles.AUDITED_ACTIONS) leave
exactly one audit line: a unary or client-streaming call when it ends, a server stream
(SubmitJob) at its first message, when the job id is known, or when it fails before one.

A denied call (any RPC) leaves one audit line too, naming the object the request names
(`denied_object`): the audited field where the request carries it (UploadDataset's header
dataset_id, CancelJob's job_id), else the request's own words for what it would have made
(SubmitJob: ``dataset_id=… package_hash=…``; UploadPackage: ``sha256=…`` of the archive,
its package hash being known only after verification). A client stream's first message is
read for it, at most `FIRST_MESSAGE_SECONDS`; the object is ``-`` when the request names
none, or when no first message came in time or the stream ended without one (the reason
is logged with the request id). Nothing else of a denied stream is read.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Final

import grpc
from google.protobuf.message import Message
from grpc import aio

from services.common.auth.audit import AuditEvent, AuditLog
from services.common.auth.roles import (
    ACT_FOR_TENANT,
    AUDIT_OBJECT_FIELD,
    AUDITED_ACTIONS,
    Role,
    action_of,
    allows,
    is_open,
    required_role,
)
from services.common.auth.tokens import ANONYMOUS, Principal, TokenRejected, TokenVerifier
from services.common.errors import LivecalcError, PermissionDenied, Unauthenticated

log = logging.getLogger(__name__)

_PRINCIPAL: contextvars.ContextVar[Principal] = contextvars.ContextVar("livecalc_principal", default=ANONYMOUS)


def current_principal() -> Principal:
    """Who is calling the RPC in progress (ANONYMOUS when auth is off)."""
    return _PRINCIPAL.get()


def _metadata(details: grpc.HandlerCallDetails, key: str) -> str | None:
    pairs: Sequence[tuple[str, str | bytes]] = details.invocation_metadata or ()
    for name, value in pairs:
        if name == key:
            return value.decode(errors="replace") if isinstance(value, bytes) else value
    return None


def _object_of(message: Any, field: str, depth: int = 3) -> str:
    """The string `field` of `message` (or of a message field of it), else ''."""
    if not isinstance(message, Message) or depth == 0:
        return ""
    for descriptor, value in message.ListFields():
        if descriptor.name == field and isinstance(value, str) and value:
            return value
    for descriptor, value in message.ListFields():
        if descriptor.message_type is not None and not descriptor.is_repeated:
            found = _object_of(value, field, depth - 1)
            if found:
                return found
    return ""


FIRST_MESSAGE_SECONDS = 1.0
"""How long a denied client stream's first message is waited for, to name its object."""

#: Request fields that name what a denied call would have made, where the audited field is
#: not in the request (the job id and package hash are given by the server).
_DENIED_FIELDS: Final[Mapping[str, tuple[str, ...]]] = {
    "/livecalc.gateway.v1.JobService/SubmitJob": ("dataset_id", "package_hash"),
    "/livecalc.gateway.v1.PackageService/UploadPackage": ("sha256",),
}
#: Fields that name an object, looked for in the request of a denied RPC the tables omit.
_ANY_OBJECT: Final = ("dataset_id", "job_id", "package_hash")
NO_OBJECT: Final = "-"


def denied_object(method: str, request: Any) -> str:
    """What a denied call's request names: see the module docstring; ``-`` when nothing."""
    field = AUDIT_OBJECT_FIELD.get(method)
    for name in (field,) if field else _ANY_OBJECT:
        found = _object_of(request, name)
        if found:
            return found
    named = [(name, _object_of(request, name)) for name in _DENIED_FIELDS.get(method, ())]
    shown = " ".join(f"{name}={value[:100]}" for name, value in named if value)
    return shown or NO_OBJECT


async def _first_message(requests: AsyncIterator[Any], request_id: str) -> Any:
    """The first message of a denied client stream, or None (logged why) when there is none in time."""
    try:
        first = await asyncio.wait_for(anext(aiter(requests), None), FIRST_MESSAGE_SECONDS)
    except TimeoutError:
        first, why = None, f"no first message within {FIRST_MESSAGE_SECONDS} s"
    except grpc.RpcError as exc:  # the client went away; the denial is recorded all the same
        first, why = None, f"the stream failed before its first message: {exc}"
    else:
        why = "the stream ended before its first message"
    if first is None:
        log.info("denied stream's object unknown", extra={"fields": {"request_id": request_id, "reason": why}})
    return first


def _outcome(exc: BaseException, context: aio.ServicerContext[Any, Any]) -> str:
    if isinstance(exc, LivecalcError):
        return exc.code.name.lower()
    if isinstance(exc, aio.AbortError):
        code = context.code()
        return code.name.lower() if isinstance(code, grpc.StatusCode) else "unknown"
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        return "cancelled"
    return "internal"


class _Audit:
    """Records the one audit line of one mutating RPC."""

    def __init__(self, log_: AuditLog | None, principal: Principal, method: str, request_id: str) -> None:
        self._log = log_
        self._principal = principal
        self._action = action_of(method)
        self._field = AUDIT_OBJECT_FIELD.get(method, "")
        self._request_id = request_id
        self.object = ""
        self.done = False

    def see(self, message: Any) -> None:
        if not self.object and self._field:
            self.object = _object_of(message, self._field)

    def record(self, outcome: str) -> None:
        if self.done or self._log is None:
            return
        self.done = True
        p = self._principal
        self._log.record(AuditEvent(p.subject, p.tenant, self._action, self.object, outcome, self._request_id))


class AuthInterceptor(aio.ServerInterceptor):
    """Bearer JWT authentication (when `verifier` is set), roles, and the audit log."""

    def __init__(self, verifier: TokenVerifier | None, audit: AuditLog | None) -> None:
        self._verifier = verifier
        self._audit = audit

    async def _authenticate(self, details: grpc.HandlerCallDetails) -> Principal:
        if self._verifier is None:
            return ANONYMOUS
        header = _metadata(details, "authorization")
        if header is None:
            raise Unauthenticated("this service needs a bearer token (authorization metadata)")
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("the authorization metadata must be 'Bearer <token>'")
        try:
            principal = await self._verifier.verify(token.strip())
        except TokenRejected as exc:
            log.info("token rejected", extra={"fields": {"method": details.method, "reason": exc.reason}})
            raise Unauthenticated("invalid bearer token") from None
        needed = required_role(details.method)
        if not allows(principal.roles, needed):
            raise _Denied(principal, PermissionDenied(f"this token lacks the role {needed.value!r} for this call"))
        acting_for = _metadata(details, ACT_FOR_TENANT)
        if acting_for is not None:
            if not allows(principal.roles, Role.ADMIN):
                raise _Denied(principal, PermissionDenied(f"only the 'admin' role may send {ACT_FOR_TENANT}"))
            if not acting_for.strip():
                raise _Denied(principal, PermissionDenied(f"{ACT_FOR_TENANT} must name a tenant"))
            principal = replace(principal, tenant=acting_for)
        return principal

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or is_open(method):
            return handler
        request_id = _metadata(handler_call_details, "x-request-id") or uuid.uuid4().hex
        try:
            principal = await self._authenticate(handler_call_details)
        except (Unauthenticated, _Denied) as exc:
            who, error = (exc.principal, exc.error) if isinstance(exc, _Denied) else (ANONYMOUS, exc)
            audit_log = self._audit
            if audit_log is None:
                return _denying(handler, error, None, request_id)

            def record(request: Any) -> None:
                target = NO_OBJECT if request is None else denied_object(method, request)
                outcome = error.code.name.lower()
                audit_log.record(AuditEvent(who.subject, who.tenant, action_of(method), target, outcome, request_id))

            return _denying(handler, error, record, request_id)
        if method not in AUDITED_ACTIONS and self._verifier is None:
            return handler
        audit = _Audit(self._audit, principal, method, request_id) if method in AUDITED_ACTIONS else None
        return _wrapped(handler, principal, audit)


class _Denied(Exception):
    def __init__(self, principal: Principal, error: LivecalcError) -> None:
        self.principal = principal
        self.error = error


def _kwargs(handler: Any) -> dict[str, Any]:
    return {"request_deserializer": handler.request_deserializer, "response_serializer": handler.response_serializer}


def _denying(
    handler: Any, error: LivecalcError, record: Callable[[Any], None] | None, request_id: str
) -> grpc.RpcMethodHandler[Any, Any]:
    """A handler of the same shape whose behaviour is to fail with `error`, after `record`ing
    the denial with the request (a client stream's first message; None when there is none)."""

    async def request_of(request: Any, streaming: bool) -> Any:
        return await _first_message(request, request_id) if streaming else request

    def unary(streaming: bool) -> Callable[[Any, aio.ServicerContext[Any, Any]], Awaitable[Any]]:
        async def deny(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
            if record is not None:
                seen = None
                try:
                    seen = await request_of(request, streaming)
                finally:
                    record(seen)
            raise error

        return deny

    def stream(streaming: bool) -> Callable[[Any, aio.ServicerContext[Any, Any]], AsyncIterator[Any]]:
        deny = unary(streaming)

        async def deny_stream(request: Any, context: aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            await deny(request, context)
            yield  # pragma: no cover - never reached: makes this an async generator

        return deny_stream

    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(unary(False), **_kwargs(handler))
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(stream(False), **_kwargs(handler))
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(unary(True), **_kwargs(handler))
    return grpc.stream_stream_rpc_method_handler(stream(True), **_kwargs(handler))


async def _seen(requests: AsyncIterator[Any], audit: _Audit | None) -> AsyncIterator[Any]:
    async for request in requests:
        if audit is not None:
            audit.see(request)
        yield request


def _wrapped(handler: Any, principal: Principal, audit: _Audit | None) -> grpc.RpcMethodHandler[Any, Any]:
    """The handler run as `principal`, its outcome audited when `audit` is given."""

    async def finish_unary(work: Awaitable[Any], context: aio.ServicerContext[Any, Any]) -> Any:
        _PRINCIPAL.set(principal)
        try:
            response = await work
        except BaseException as exc:
            if audit is not None:
                audit.record(_outcome(exc, context))
            raise
        if audit is not None:
            audit.see(response)
            audit.record("ok")
        return response

    async def finish_stream(responses: Any, context: aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        _PRINCIPAL.set(principal)
        try:
            if hasattr(responses, "__aiter__"):
                async for item in responses:
                    if audit is not None and not audit.done:
                        audit.see(item)
                        audit.record("ok")
                    yield item
            else:
                await responses  # a handler written with context.write()
        except BaseException as exc:
            if audit is not None:
                audit.record(_outcome(exc, context))
            raise
        if audit is not None:
            audit.record("ok")

    if handler.unary_unary is not None:
        inner_uu = handler.unary_unary

        async def unary_unary(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
            if audit is not None:
                audit.see(request)
            return await finish_unary(_later(inner_uu, request, context), context)

        return grpc.unary_unary_rpc_method_handler(unary_unary, **_kwargs(handler))

    if handler.unary_stream is not None:
        inner_us = handler.unary_stream

        async def unary_stream(request: Any, context: aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            if audit is not None:
                audit.see(request)
            _PRINCIPAL.set(principal)
            async for item in finish_stream(inner_us(request, context), context):
                yield item

        return grpc.unary_stream_rpc_method_handler(unary_stream, **_kwargs(handler))

    if handler.stream_unary is not None:
        inner_su = handler.stream_unary

        async def stream_unary(requests: AsyncIterator[Any], context: aio.ServicerContext[Any, Any]) -> Any:
            return await finish_unary(_later(inner_su, _seen(requests, audit), context), context)

        return grpc.stream_unary_rpc_method_handler(stream_unary, **_kwargs(handler))

    inner_ss = handler.stream_stream

    async def stream_stream(requests: AsyncIterator[Any], context: aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        _PRINCIPAL.set(principal)
        async for item in finish_stream(inner_ss(_seen(requests, audit), context), context):
            yield item

    return grpc.stream_stream_rpc_method_handler(stream_stream, **_kwargs(handler))


async def _later(behaviour: Callable[..., Awaitable[Any]], request: Any, context: Any) -> Any:
    """Call the handler only once the principal is set in this task's context."""
    return await behaviour(request, context)
