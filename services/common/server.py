"""The one server bootstrap every LiveCalc service runs on.

`serve()` starts a grpc.aio server with the service's own servicers, the standard health
service (overall, `liveness`, `readiness` and each service name), reflection listing every
service, the metrics/error interceptor, the auth/audit interceptor when `SecurityConfig`
asks for it (auth/interceptor.py), TLS when configured, and a Prometheus /metrics endpoint,
then waits for SIGTERM or SIGINT. Protected mode is enforced here: without auth a server
refuses a non-loopback address unless `insecure`. Shutdown is graceful: health turns NOT_SERVING first, the server keeps
answering for `drain_seconds` so probes and balancers see it, then in-flight RPCs get the
rest of the grace period; those still running shortly before it ends are ended with
UNAVAILABLE by the interceptor (see interceptors.py), so grpc.aio never has to
force-cancel them. `stop()` runs once however often it is called; stop hooks run once. What the
server creates itself (audit log, metrics endpoint) it closes, after the stop hooks, in an exit
stack (services.common.lifecycle); the registry it is given is borrowed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from threading import Thread
from typing import Final
from wsgiref.simple_server import WSGIServer

import anyio
import grpc
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc
from prometheus_client import CollectorRegistry, start_http_server

from services.common.auth.audit import AuditLog
from services.common.auth.config import SecurityConfig, check_bind
from services.common.auth.interceptor import AuthInterceptor
from services.common.auth.tokens import TokenVerifier
from services.common.config import ServerConfig
from services.common.interceptors import ServerInterceptor
from services.common.metrics import ServerMetrics
from services.common.reflection import DocumentedReflectionServicer, load_documented_files

log = logging.getLogger(__name__)
#: How long calls still open on a connection past its max age may go on: a day, so a job's event
#: stream is never cut by the recycling that only exists to spread new calls (gRPC's default is
#: infinite; a bound still frees a connection a forgotten stream would hold forever).
MAX_CONNECTION_AGE_GRACE_MS: Final = 24 * 3600 * 1000

HEALTH_NAMES = ("liveness", "readiness")
#: In-flight RPCs are ended this long before the grace period runs out.
CANCEL_MARGIN_SECONDS = 0.5
#: How often a service started by a supervisor looks whether it is still there.
SUPERVISOR_POLL_SECONDS: Final = 1.0


@dataclass(frozen=True)
class ServiceBinding:
    """One gRPC service to host: its full name and how to add its servicer to a server.

    `on_serving`, when given, is awaited once the server reports SERVING, with its health
    servicer: a service whose readiness depends on more than the process (the gateway's job
    store) sets its names' status from then on."""

    name: str
    add: Callable[[aio.Server], None]
    on_serving: Callable[[HealthServicer], Awaitable[None]] | None = None


@dataclass
class RunningServer:
    """What `start_server` started; `stop()` shuts it all down gracefully."""

    config: ServerConfig
    server: aio.Server
    health: HealthServicer
    port: int
    metrics_port: int | None
    service_names: tuple[str, ...]
    _on_stop: Sequence[Callable[[], Awaitable[None]]] = ()
    _interceptor: ServerInterceptor | None = field(default=None, repr=False)
    #: What `start_server` created besides the gRPC server (the audit log, the metrics endpoint),
    #: closed after the stop hooks, newest first.
    _owned: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack, repr=False)
    _stopping: asyncio.Future[None] | None = field(default=None, repr=False)

    async def stop(self) -> None:
        """NOT_SERVING, drain, then stop with the remaining grace; idempotent.

        A second call (a signal during a test's own stop, say) waits for the first.
        """
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._stop_once())
        await asyncio.shield(self._stopping)

    async def _stop_once(self) -> None:
        cfg = self.config
        log.info("shutting down", extra={"fields": {"grace_s": cfg.grace_seconds, "drain_s": cfg.drain_seconds}})
        await self.health.enter_graceful_shutdown()
        if cfg.drain_seconds > 0:
            await anyio.sleep(cfg.drain_seconds)
        remaining = max(cfg.grace_seconds - cfg.drain_seconds, 0.0)
        stopping = asyncio.ensure_future(self.server.stop(remaining))
        # End what is still running a little before grpc.aio would force-cancel it.
        done, _ = await asyncio.wait({stopping}, timeout=max(remaining - CANCEL_MARGIN_SECONDS, 0.0))
        if not done and self._interceptor is not None:
            ended = self._interceptor.cancel_in_flight()
            log.info("ending RPCs still in flight", extra={"fields": {"count": ended}})
        await stopping
        for hook in self._on_stop:
            await hook()
        await self._owned.aclose()
        log.info("stopped")


def _stop_metrics_http(httpd: WSGIServer, thread: Thread) -> None:
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=2)


async def start_server(
    config: ServerConfig,
    bindings: Sequence[ServiceBinding],
    *,
    registry: CollectorRegistry | None = None,
    on_stop: Sequence[Callable[[], Awaitable[None]]] = (),
    security: SecurityConfig | None = None,
) -> RunningServer:
    """Start the server and its metrics endpoint; return once it accepts RPCs."""
    security = security if security is not None else SecurityConfig()
    check_bind(config.host, security)
    registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
    metrics = ServerMetrics.create(registry)
    age_ms = int(config.max_connection_age_seconds * 1000)
    interceptor = ServerInterceptor(metrics)
    interceptors: list[aio.ServerInterceptor] = [interceptor]
    audit: AuditLog | None = None
    # what this function creates is closed here if starting fails, else by RunningServer.stop()
    # (services.common.lifecycle)
    async with contextlib.AsyncExitStack() as stack:
        if security.auth is not None or security.audit_enabled:
            if security.audit_enabled:
                audit = AuditLog(registry, security.audit_path, stdout=security.audit_stdout)
                stack.callback(audit.close)
            verifier = TokenVerifier(security.auth) if security.auth is not None else None
            # Inside the metrics interceptor: its denials are counted like any other status.
            interceptors.append(AuthInterceptor(verifier, audit))
        server = aio.server(
            interceptors=interceptors,
            options=[
                ("grpc.max_receive_message_length", config.max_message_bytes),
                ("grpc.max_send_message_length", config.max_message_bytes),
                ("grpc.max_connection_age_ms", age_ms),
                # not the shutdown grace: a job's event stream outlives any connection age
                ("grpc.max_connection_age_grace_ms", MAX_CONNECTION_AGE_GRACE_MS),
                ("grpc.so_reuseport", 0),
                # Clients may keep calls alive with PINGs (the gateway does, every 10 s by default, to
                # find a hung engine): accept them as often as every second, and never answer a
                # burst with GOAWAY "too_many_pings", which would fail the calls it meant to protect.
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_recv_ping_interval_without_data_ms", 1000),
                ("grpc.http2.min_ping_interval_without_data_ms", 1000),
                ("grpc.http2.max_ping_strikes", 0),
            ],
        )
        for binding in bindings:
            binding.add(server)
        health = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health, server)
        own = tuple(b.name for b in bindings)
        names = (*own, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME)
        reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
            DocumentedReflectionServicer(names, load_documented_files()), server
        )
        try:
            if security.tls is not None:
                key, chain = security.tls.load()
                port = server.add_secure_port(config.address, grpc.ssl_server_credentials([(key, chain)]))
            else:
                port = server.add_insecure_port(config.address)
        except RuntimeError as exc:
            raise OSError(f"cannot listen on {config.address}: {exc}") from exc
        if port == 0:
            raise OSError(f"cannot listen on {config.address}: port in use or address unavailable")
        metrics_port: int | None = None
        if config.metrics_port is not None:
            httpd, thread = start_http_server(config.metrics_port, addr=config.metrics_host, registry=registry)
            stack.callback(_stop_metrics_http, httpd, thread)
            metrics_port = int(httpd.server_port)
        await server.start()
        for name in ("", *HEALTH_NAMES, *own):
            await health.set(name, health_pb2.HealthCheckResponse.SERVING)
        for binding in bindings:
            if binding.on_serving is not None:
                await binding.on_serving(health)
        running = RunningServer(
            config=config,
            server=server,
            health=health,
            port=port,
            metrics_port=metrics_port,
            service_names=names,
            _on_stop=on_stop,
            _interceptor=interceptor,
            _owned=stack.pop_all(),
        )
    log.info(
        "serving",
        extra={
            "fields": {
                "service": config.service,
                "address": f"{config.host}:{port}",
                "metrics_port": metrics_port,
                "auth": security.auth is not None,
                "tls": security.tls is not None,
            }
        },
    )
    return running


async def serve(
    config: ServerConfig,
    bindings: Sequence[ServiceBinding],
    *,
    registry: CollectorRegistry | None = None,
    on_stop: Sequence[Callable[[], Awaitable[None]]] = (),
    stop_event: anyio.Event | None = None,
    security: SecurityConfig | None = None,
    supervisor_pid: int | None = None,
) -> None:
    """Run until SIGTERM/SIGINT (or `stop_event`, or the end of the process `supervisor_pid`
    that started this one), then shut down gracefully."""
    running = await start_server(config, bindings, registry=registry, on_stop=on_stop, security=security)
    stop = stop_event if stop_event is not None else anyio.Event()
    async with anyio.create_task_group() as tg:
        if supervisor_pid is not None:
            tg.start_soon(_watch_supervisor, supervisor_pid, stop)

        async def watch_signals() -> None:
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for signum in signals:
                    log.info("signal received", extra={"fields": {"signal": signal.Signals(signum).name}})
                    stop.set()
                    return

        tg.start_soon(watch_signals)
        await stop.wait()
        tg.cancel_scope.cancel()
    with anyio.CancelScope(shield=True):
        await running.stop()


async def _watch_supervisor(pid: int, stop: anyio.Event) -> None:
    """Set `stop` once the process `pid` that started this one is gone (its children are
    re-parented). `livecalc up` starts services in process groups of their own, so that it
    stops them in order; killed itself (SIGKILL, OOM), it could not, and they would serve on."""
    while os.getppid() == pid:
        await anyio.sleep(SUPERVISOR_POLL_SECONDS)
    log.warning("the supervising process is gone; stopping", extra={"fields": {"supervisor_pid": pid}})
    stop.set()
