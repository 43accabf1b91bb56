"""The server interceptor every service runs: RPC metrics and the error-to-status mapping.

It wraps each method handler once, so unary and streaming methods alike are counted
(started, handled by code, messages each way, latency) and every `LivecalcError` leaving a
handler becomes its gRPC status with a clear message. Anything else is a bug: it is logged
with its traceback and answered as INTERNAL without leaking internals to the client.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn

import grpc
from grpc import aio

from services.common.errors import LivecalcError
from services.common.metrics import RpcType, ServerMetrics

log = logging.getLogger(__name__)


def _split_method(full: str) -> tuple[str, str]:
    """'/pkg.Service/Method' -> ('pkg.Service', 'Method')."""
    _, _, rest = full.partition("/")
    service, _, method = rest.partition("/")
    return service, method


def _code_name(code: grpc.StatusCode | None) -> str:
    # go-grpc-prometheus labels codes as Go's codes.Code.String() does: "OK", "Canceled",
    # "InvalidArgument", … (Go spells CANCELLED with one L).
    if code is None or code == grpc.StatusCode.OK:
        return "OK"
    if code == grpc.StatusCode.CANCELLED:
        return "Canceled"
    return "".join(part.capitalize() for part in code.name.split("_"))


class _Call:
    """Book-keeping of one RPC: labels, start time, final code."""

    def __init__(self, metrics: ServerMetrics, rpc_type: RpcType, service: str, method: str) -> None:
        self.metrics = metrics
        self.labels = (rpc_type.value, service, method)
        self.start = time.perf_counter()
        metrics.started.labels(*self.labels).inc()

    def received(self) -> None:
        self.metrics.msg_received.labels(*self.labels).inc()

    def sent(self) -> None:
        self.metrics.msg_sent.labels(*self.labels).inc()

    def done(self, code: grpc.StatusCode | None) -> None:
        self.metrics.handled.labels(*self.labels, _code_name(code)).inc()
        self.metrics.handling_seconds.labels(*self.labels).observe(time.perf_counter() - self.start)


async def _abort_for(exc: BaseException, context: aio.ServicerContext[Any, Any], method: str) -> NoReturn:
    """Map an exception escaping a handler to a status; abort the RPC with it."""
    if isinstance(exc, LivecalcError):
        log.info("rpc failed", extra={"fields": {"method": method, "code": exc.code.name, "error": exc.details()}})
        await context.abort(exc.code, exc.details())
    log.error("unhandled error in %s", method, exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error in {method}; see the server log")
    raise AssertionError("unreachable: abort raises")  # pragma: no cover


def _code_after(context: aio.ServicerContext[Any, Any]) -> grpc.StatusCode:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    return grpc.StatusCode.UNKNOWN


class ServerInterceptor(aio.ServerInterceptor):
    """Metrics and error mapping around every method of a server."""

    def __init__(self, metrics: ServerMetrics) -> None:
        self._metrics = metrics

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        # The stubs type handlers for the sync server; under aio their behaviours are
        # coroutines and async generators, hence Any.
        handler: Any = await continuation(handler_call_details)
        if handler is None:
            return handler
        method: str = handler_call_details.method
        service, name = _split_method(method)
        metrics = self._metrics
        kwargs = {
            "request_deserializer": handler.request_deserializer,
            "response_serializer": handler.response_serializer,
        }

        if handler.unary_unary is not None:
            inner_uu = handler.unary_unary

            async def unary_unary(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
                call = _Call(metrics, RpcType.UNARY, service, name)
                call.received()
                return await _unary_out(call, inner_uu(request, context), context, method)

            return grpc.unary_unary_rpc_method_handler(unary_unary, **kwargs)

        if handler.unary_stream is not None:
            inner_us = handler.unary_stream

            async def unary_stream(request: Any, context: aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
                call = _Call(metrics, RpcType.SERVER_STREAM, service, name)
                call.received()
                async for item in _stream_out(call, inner_us(request, context), context, method):
                    yield item

            return grpc.unary_stream_rpc_method_handler(unary_stream, **kwargs)

        if handler.stream_unary is not None:
            inner_su = handler.stream_unary

            async def stream_unary(requests: AsyncIterator[Any], context: aio.ServicerContext[Any, Any]) -> Any:
                call = _Call(metrics, RpcType.CLIENT_STREAM, service, name)
                return await _unary_out(call, inner_su(_count_in(call, requests), context), context, method)

            return grpc.stream_unary_rpc_method_handler(stream_unary, **kwargs)

        inner_ss = handler.stream_stream

        async def stream_stream(
            requests: AsyncIterator[Any], context: aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            call = _Call(metrics, RpcType.BIDI_STREAM, service, name)
            async for item in _stream_out(call, inner_ss(_count_in(call, requests), context), context, method):
                yield item

        return grpc.stream_stream_rpc_method_handler(stream_stream, **kwargs)


async def _count_in(call: _Call, requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        call.received()
        yield request


async def _unary_out(call: _Call, response: Awaitable[Any], context: aio.ServicerContext[Any, Any], method: str) -> Any:
    """Await a handler's single response, counting it and mapping its errors."""
    code: grpc.StatusCode | None = grpc.StatusCode.OK
    try:
        result = await response
        call.sent()
        return result
    except aio.AbortError:
        code = _code_after(context)
        raise
    except asyncio.CancelledError:
        code = grpc.StatusCode.CANCELLED
        raise
    except Exception as exc:  # noqa: BLE001 - mapped to a status here, once
        code = exc.code if isinstance(exc, LivecalcError) else grpc.StatusCode.INTERNAL
        await _abort_for(exc, context, method)
    finally:
        call.done(code)


async def _stream_out(
    call: _Call, responses: Any, context: aio.ServicerContext[Any, Any], method: str
) -> AsyncIterator[Any]:
    """Relay a streaming handler's messages, counting them and mapping its errors."""
    code: grpc.StatusCode | None = grpc.StatusCode.OK
    try:
        if hasattr(responses, "__aiter__"):
            async for item in responses:
                call.sent()
                yield item
        else:
            # A handler written with context.write() returns a coroutine, not a generator.
            await responses
    except aio.AbortError:
        code = _code_after(context)
        raise
    except (asyncio.CancelledError, GeneratorExit):
        code = grpc.StatusCode.CANCELLED
        raise
    except Exception as exc:  # noqa: BLE001
        code = exc.code if isinstance(exc, LivecalcError) else grpc.StatusCode.INTERNAL
        await _abort_for(exc, context, method)
    finally:
        call.done(code)
