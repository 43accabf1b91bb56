"""Typed, frozen server configuration, resolved from flags, then environment, then defaults.

The environment is read only by `resolve_server_config`, called from a `main()`; everything
below receives the frozen `ServerConfig`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from services.common.errors import InvalidArgument

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


def _env_int(env: Mapping[str, str], key: str) -> int | None:
    raw = env.get(key)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise InvalidArgument(f"environment variable {key} must be an integer, got {raw!r}") from None


def _env_float(env: Mapping[str, str], key: str) -> float | None:
    raw = env.get(key)
    if raw is None or raw == "":
        return None
    try:
        return float(raw)
    except ValueError:
        raise InvalidArgument(f"environment variable {key} must be a number, got {raw!r}") from None


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

    A metrics port of -1 (flag or environment) disables the metrics endpoint.
    """
    prefix = f"LIVECALC_{service.upper()}_"
    default_port, default_metrics = DEFAULT_PORTS[service]
    port = port if port is not None else _env_int(env, prefix + "PORT")
    metrics = metrics_port if metrics_port is not None else _env_int(env, prefix + "METRICS_PORT")
    grace = grace_seconds if grace_seconds is not None else _env_float(env, "LIVECALC_GRACE_SECONDS")
    drain = _env_float(env, "LIVECALC_DRAIN_SECONDS")
    age = _env_float(env, "LIVECALC_MAX_CONNECTION_AGE_SECONDS")
    grace = 10.0 if grace is None else grace
    metrics = default_metrics if metrics is None else metrics
    return ServerConfig(
        service=service,
        host=host or env.get("LIVECALC_HOST") or "127.0.0.1",
        port=default_port if port is None else port,
        metrics_port=None if metrics < 0 else metrics,
        metrics_host=env.get("LIVECALC_METRICS_HOST") or host or env.get("LIVECALC_HOST") or "127.0.0.1",
        grace_seconds=grace,
        drain_seconds=min(grace, 1.0) if drain is None else drain,
        max_connection_age_seconds=300.0 if age is None else age,
    )
