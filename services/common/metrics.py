"""Prometheus metrics of a gRPC server, under the go-grpc-prometheus names.

The metrics live in an injected `CollectorRegistry` (never the global one), so tests and
several servers in one process do not collide.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram

_LABELS = ("grpc_type", "grpc_service", "grpc_method")

# go-grpc-prometheus' default buckets, in seconds.
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


def code_label(code: grpc.StatusCode | None) -> str:
    """A status code as the `grpc_code` label, the one spelling every metric uses.

    go-grpc-prometheus labels codes as Go's codes.Code.String() does: "OK", "Canceled",
    "InvalidArgument", … (Go spells CANCELLED with one L; None, a handler that returned, is OK).
    """
    if code is None or code == grpc.StatusCode.OK:
        return "OK"
    if code == grpc.StatusCode.CANCELLED:
        return "Canceled"
    return "".join(part.capitalize() for part in code.name.split("_"))


class RpcType(Enum):
    """The grpc_type label: how many messages flow each way."""

    UNARY = "unary"
    CLIENT_STREAM = "client_stream"
    SERVER_STREAM = "server_stream"
    BIDI_STREAM = "bidi_stream"


@dataclass(frozen=True)
class ServerMetrics:
    """The server-side RPC metrics every LiveCalc service exports."""

    started: Counter
    handled: Counter
    msg_received: Counter
    msg_sent: Counter
    handling_seconds: Histogram

    @classmethod
    def create(cls, registry: CollectorRegistry) -> ServerMetrics:
        return cls(
            started=Counter(
                "grpc_server_started_total",
                "Total number of RPCs started on the server.",
                _LABELS,
                registry=registry,
            ),
            handled=Counter(
                "grpc_server_handled_total",
                "Total number of RPCs completed on the server, regardless of success or failure.",
                (*_LABELS, "grpc_code"),
                registry=registry,
            ),
            msg_received=Counter(
                "grpc_server_msg_received_total",
                "Total number of RPC stream messages received on the server.",
                _LABELS,
                registry=registry,
            ),
            msg_sent=Counter(
                "grpc_server_msg_sent_total",
                "Total number of gRPC stream messages sent by the server.",
                _LABELS,
                registry=registry,
            ),
            handling_seconds=Histogram(
                "grpc_server_handling_seconds",
                "Histogram of response latency (seconds) of gRPC that had been application-level "
                "handled by the server.",
                _LABELS,
                buckets=_BUCKETS,
                registry=registry,
            ),
        )
