"""The server interceptor every service runs: RPC metrics and the error-to-status mapping.

It wraps each method handler once, so unary and streaming methods alike are counted
(started, handled by code, messages each way, latency) and every `LivecalcError` leaving a
handler becomes its gRPC status with a clear message (and its fault mark, if it has one, as
trailing metadata: `LivecalcError.trailing_metadata`). Anything else is a bug: it is logged
with its traceback and answered as INTERNAL without leaking internals to the client.

Two more things happen here because no handler can do them itself:
- A request that does not decode is answered INVALID_ARGUMENT (grpc.aio would log a
  traceback and answer UNKNOWN): the deserializer is wrapped and the handler never runs.
- Each handler runs in a task of its own, so `cancel_in_flight()` (called by the server's
  graceful stop shortly before the grace period ends) can end the RPCs still running with
  UNAVAILABLE. Otherwise grpc.aio force-cancels them and logs a CancelledError traceback
  at error level for each.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn

import grpc
from grpc import aio

from services.common.errors import InvalidArgument, LivecalcError, Unavailable
from services.common.metrics import RpcType, ServerMetrics, code_label

log = logging.getLogger(__name__)


def _split_method(full: str) -> tuple[str, str]:
    """'/pkg.Service/Method' -> ('pkg.Service', 'Method')."""
    _, _, rest = full.partition("/")
    service, _, method = rest.partition("/")
    return service, method


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
        self.metrics.handled.labels(*self.labels, code_label(code)).inc()
        self.metrics.handling_seconds.labels(*self.labels).observe(time.perf_counter() - self.start)


async def _abort_for(exc: BaseException, context: aio.ServicerContext[Any, Any], method: str) -> NoReturn:
    """Map an exception escaping a handler to a status; abort the RPC with it."""
    if isinstance(exc, LivecalcError):
        log.info("rpc failed", extra={"fields": {"method": method, "code": exc.code.name, "error": exc.details()}})
        await context.abort(exc.code, exc.details(), trailing_metadata=exc.trailing_metadata())
    log.error("unhandled error in %s", method, exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error in {method}; see the server log")
    raise AssertionError("unreachable: abort raises")  # pragma: no cover


def _code_after(context: aio.ServicerContext[Any, Any]) -> grpc.StatusCode:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    return grpc.StatusCode.UNKNOWN


class _Undecodable:
    """What the wrapped deserializer returns for bytes that are not a valid request."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def reject(self, method: str) -> InvalidArgument:
        return InvalidArgument(f"the request to {method} is not a valid message: {self.error}")


def _safe_deserializer(deserialize: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserialize is None:
        return None

    def wrapped(raw: bytes) -> Any:
        try:
            return deserialize(raw)
        except Exception as exc:  # noqa: BLE001 - becomes INVALID_ARGUMENT for this RPC
            return _Undecodable(exc)

    return wrapped


class _InFlight:
    """The handler tasks of RPCs in progress, so a graceful stop can end them itself."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[Any]] = set()
        self.stopping = False

    async def run(self, coro: Awaitable[Any]) -> Any:
        """Await `coro` in its own task; UNAVAILABLE if `cancel_all` ended it."""
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        try:
            return await task
        except asyncio.CancelledError:
            if self.stopping and not _current_cancelling():
                raise Unavailable("the service is shutting down; retry") from None
            raise
        finally:
            self.tasks.discard(task)

    async def stream(self, responses: Any) -> AsyncIterator[Any]:
        """Relay an async iterator driven by a task of its own (one message of look-ahead)."""
        queue: asyncio.Queue[tuple[bool, Any]] = asyncio.Queue(maxsize=1)

        async def pump() -> None:
            async for item in responses:
                await queue.put((True, item))
            await queue.put((False, None))

        task = asyncio.ensure_future(pump())
        self.tasks.add(task)
        getter: asyncio.Future[tuple[bool, Any]] | None = None
        try:
            while True:
                getter = asyncio.ensure_future(queue.get())
                await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    getter.cancel()
                    await self.run(task)  # re-raises its error (or UNAVAILABLE when stopped)
                    if queue.empty():
                        return
                    more, item = queue.get_nowait()
                else:
                    more, item = getter.result()
                if not more:
                    return
                yield item
        finally:
            # a client that goes away cancels the wait above: the getter must go too, or it is
            # left pending and destroyed with the queue ("Task was destroyed but it is pending!")
            if getter is not None:
                getter.cancel()
            task.cancel()
            self.tasks.discard(task)

    def relay(self, responses: Any) -> Any:
        """A streaming handler's output, run in a task of its own: messages, or a coroutine
        (a handler written with context.write())."""
        return self.stream(responses) if hasattr(responses, "__aiter__") else self.run(responses)

    def cancel_all(self) -> int:
        self.stopping = True
        for task in list(self.tasks):
            task.cancel()
        return len(self.tasks)


def _current_cancelling() -> bool:
    """True when the RPC's own task is being cancelled (client gone), not just its handler."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class ServerInterceptor(aio.ServerInterceptor):
    """Metrics and error mapping around every method of a server."""

    def __init__(self, metrics: ServerMetrics) -> None:
        self._metrics = metrics
        self._in_flight = _InFlight()

    def cancel_in_flight(self) -> int:
        """End every RPC still running with UNAVAILABLE; returns how many there were."""
        return self._in_flight.cancel_all()

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
        in_flight = self._in_flight
        kwargs = {
            "request_deserializer": _safe_deserializer(handler.request_deserializer),
            "response_serializer": handler.response_serializer,
        }

        if handler.unary_unary is not None:
            inner_uu = handler.unary_unary

            async def unary_unary(request: Any, context: aio.ServicerContext[Any, Any]) -> Any:
                call = _Call(metrics, RpcType.UNARY, service, name)
                call.received()
                work = _rejected(request, method) or inner_uu(request, context)
                return await _unary_out(call, in_flight.run(work), context, method)

            return grpc.unary_unary_rpc_method_handler(unary_unary, **kwargs)

        if handler.unary_stream is not None:
            inner_us = handler.unary_stream

            async def unary_stream(request: Any, context: aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
                call = _Call(metrics, RpcType.SERVER_STREAM, service, name)
                call.received()
                bad = _rejected(request, method)
                responses = in_flight.run(bad) if bad is not None else in_flight.relay(inner_us(request, context))
                async for item in _stream_out(call, responses, context, method):
                    yield item

            return grpc.unary_stream_rpc_method_handler(unary_stream, **kwargs)

        if handler.stream_unary is not None:
            inner_su = handler.stream_unary

            async def stream_unary(requests: AsyncIterator[Any], context: aio.ServicerContext[Any, Any]) -> Any:
                call = _Call(metrics, RpcType.CLIENT_STREAM, service, name)
                work = inner_su(_count_in(call, requests, method), context)
                return await _unary_out(call, in_flight.run(work), context, method)

            return grpc.stream_unary_rpc_method_handler(stream_unary, **kwargs)

        inner_ss = handler.stream_stream

        async def stream_stream(
            requests: AsyncIterator[Any], context: aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[Any]:
            call = _Call(metrics, RpcType.BIDI_STREAM, service, name)
            responses = in_flight.relay(inner_ss(_count_in(call, requests, method), context))
            async for item in _stream_out(call, responses, context, method):
                yield item

        return grpc.stream_stream_rpc_method_handler(stream_stream, **kwargs)


def _rejected(request: Any, method: str) -> Awaitable[Any] | None:
    """A coroutine raising INVALID_ARGUMENT for an undecodable request, else None."""
    if not isinstance(request, _Undecodable):
        return None

    async def reject() -> Any:
        raise request.reject(method)

    return reject()


async def _count_in(call: _Call, requests: AsyncIterator[Any], method: str) -> AsyncIterator[Any]:
    async for request in requests:
        if isinstance(request, _Undecodable):
            raise request.reject(method)
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
