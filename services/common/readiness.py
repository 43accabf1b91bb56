"""Waiting for a freshly started service to report SERVING (used by `up`, benches, tests).

The probe speaks whatever the service serves: plaintext by default, TLS when given the
`ChannelSecurity` a client of that service would use. Health needs no token, so none is sent.
A plaintext probe of a TLS server (or the reverse, or TLS with roots that do not trust the
server's certificate) never connects, and ends in the timeout with the last error's detail.
"""

from __future__ import annotations

import subprocess
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.client import ChannelSecurity
from services.common.errors import Unavailable


def _open(address: str, credentials: grpc.ChannelCredentials | None) -> grpc.Channel:
    # Short reconnect backoff: the process is still binding its port on the first attempts.
    options = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 250)]
    if credentials is None:
        return grpc.insecure_channel(address, options=options)
    return grpc.secure_channel(address, credentials, options=options)


def wait_serving(
    address: str,
    *,
    timeout: float = 30.0,
    service: str = "readiness",
    proc: subprocess.Popen[bytes] | None = None,
    label: str = "service",
    security: ChannelSecurity | None = None,
) -> None:
    """Poll the health service at `address` until `service` is SERVING.

    `security` says how to connect (TLS and its trusted roots; its token is not used);
    None probes in plaintext. Raises Unavailable when `proc` (the process serving it, if
    given) exits first or the timeout passes.
    """
    credentials = security.credentials() if security is not None else None
    deadline = time.monotonic() + timeout
    last: grpc.RpcError | None = None
    with _open(address, credentials) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise Unavailable(f"{label} exited with code {proc.returncode} during start-up")
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError as exc:
                last = exc
            time.sleep(0.1)
    how = "in plaintext" if credentials is None else "with TLS"
    detail = ""
    if isinstance(last, grpc.Call):
        detail = f"; last error: {last.code().name}: {last.details()}"
    raise Unavailable(f"{label} at {address} was not ready after {timeout:.0f}s (probed {how}{detail})")
