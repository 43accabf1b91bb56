"""Typed, frozen server configuration, resolved from flags, then environment, then defaults.

The environment is read only by `resolve_server_config`, called from a `main()`, through the
`Setting`s declared here (services.common.settings); everything below receives the frozen
`ServerConfig`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from services.common.errors import InvalidArgument
from services.common.settings import Setting

#: Default gRPC and metrics ports by service name.
DEFAULT_PORTS: Mapping[str, tuple[int, int]] = {
    "gateway": (50051, 9464),
    "engine": (50052, 9465),
    "data": (50053, 9466),
}


@dataclass(frozen=True)
class ServerConfig:
    """How one service listens and shuts down."""

    service: str
    host: str = "127.0.0.1"
    port: int = 0
    #: Port of the Prometheus /metrics endpoint; None disables it, 0 picks a free port.
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    #: Seconds in-flight RPCs get to finish after SIGTERM.
    grace_seconds: float = 10.0
    #: Seconds the service reports NOT_SERVING before it stops accepting RPCs, so load
    #: balancers and Kubernetes readiness probes can take it out of rotation first.
    drain_seconds: float = 1.0
    max_message_bytes: int = 4 * 1024 * 1024
    #: Connections are recycled after this long so clients re-resolve DNS (scale-out): the
    #: server sends GOAWAY, new calls open a new connection, and the calls still open on the old
    #: one run to their end (`MAX_CONNECTION_AGE_GRACE_SECONDS`): a job's event stream lasts as
    #: long as the job.
    max_connection_age_seconds: float = 300.0

    def __post_init__(self) -> None:
        if self.service not in DEFAULT_PORTS:
            raise InvalidArgument(f"unknown service {self.service!r}; expected one of {sorted(DEFAULT_PORTS)}")
        for name, port in (("port", self.port), ("metrics_port", self.metrics_port)):
            if port is not None and not 0 <= port <= 65535:
                raise InvalidArgument(f"{name} must be in 0..65535, got {port}")
        if self.grace_seconds < 0 or self.drain_seconds < 0:
            raise InvalidArgument("grace_seconds and drain_seconds must be ≥ 0")
        if self.max_connection_age_seconds <= 0:
            raise InvalidArgument(f"max connection age must be > 0 seconds, got {self.max_connection_age_seconds}")
        if self.drain_seconds > self.grace_seconds:
            raise InvalidArgument("drain_seconds must not exceed grace_seconds")

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


#: How long in-flight RPCs get after SIGTERM (default 10 s), and how long NOT_SERVING is reported
#: before it (default the grace or 1 s, whichever is shorter).
GRACE: Setting[float | None] = Setting(
    "LIVECALC_GRACE_SECONDS", float, None, flag="--grace", help="shutdown grace in seconds"
)
DRAIN: Setting[float | None] = Setting("LIVECALC_DRAIN_SECONDS", float, None)
MAX_CONNECTION_AGE = Setting("LIVECALC_MAX_CONNECTION_AGE_SECONDS", float, 300.0)
HOST: Setting[str | None] = Setting(
    "LIVECALC_HOST", str, None, flag="--host", help="address to bind", shown="127.0.0.1"
)
#: The metrics endpoint's address: its own variable, else the gRPC address.
METRICS_HOST: Setting[str | None] = Setting("LIVECALC_METRICS_HOST", str, None)


def port_setting(service: str) -> Setting[int]:
    """`--port` / `LIVECALC_<SERVICE>_PORT`, default the service's documented port."""
    return Setting(f"LIVECALC_{service.upper()}_PORT", int, DEFAULT_PORTS[service][0], flag="--port", help="gRPC port")


def metrics_port_setting(service: str) -> Setting[int]:
    """`--metrics-port` / `LIVECALC_<SERVICE>_METRICS_PORT`, default the service's documented metrics
    port; -1 disables the endpoint."""
    return Setting(
        f"LIVECALC_{service.upper()}_METRICS_PORT",
        int,
        DEFAULT_PORTS[service][1],
        flag="--metrics-port",
        help="Prometheus port, -1 to disable",
    )


def resolve_server_config(
    service: str,
    env: Mapping[str, str],
    *,
    host: str | None = None,
    port: int | None = None,
    metrics_port: int | None = None,
    grace_seconds: float | None = None,
) -> ServerConfig:
    """Flags win over `LIVECALC_<SERVICE>_*` / `LIVECALC_*` variables, which win over defaults.

    A metrics port of -1 (flag or environment) disables the metrics endpoint. Drain defaults to
    the grace period or one second, whichever is shorter.
    """
    if service not in DEFAULT_PORTS:
        raise InvalidArgument(f"unknown service {service!r}; expected one of {sorted(DEFAULT_PORTS)}")
    metrics = metrics_port_setting(service).resolve(env, metrics_port)
    grace = GRACE.resolve(env, grace_seconds)
    grace = 10.0 if grace is None else grace
    drain = DRAIN.resolve(env)
    bind = HOST.resolve(env, host) or "127.0.0.1"
    return ServerConfig(
        service=service,
        host=bind,
        port=port_setting(service).resolve(env, port),
        metrics_port=None if metrics < 0 else metrics,
        metrics_host=METRICS_HOST.resolve(env) or bind,
        grace_seconds=grace,
        drain_seconds=min(grace, 1.0) if drain is None else drain,
        max_connection_age_seconds=MAX_CONNECTION_AGE.resolve(env),
    )
