"""Waiting for a freshly started service to report SERVING (used by `up`, benches, tests)."""

from __future__ import annotations

import subprocess
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.errors import Unavailable


def wait_serving(
    address: str,
    *,
    timeout: float = 30.0,
    service: str = "readiness",
    proc: subprocess.Popen[bytes] | None = None,
    label: str = "service",
) -> None:
    """Poll the health service at `address` until `service` is SERVING.

    Raises Unavailable when `proc` (the process serving it, if given) exits first or the
    timeout passes.
    """
    deadline = time.monotonic() + timeout
    last: grpc.RpcError | None = None
    # Short reconnect backoff: the process is still binding its port on the first attempts.
    options = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 250)]
    with grpc.insecure_channel(address, options=options) as channel:
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
    detail = f" (last error: {last.code().name})" if last is not None else ""
    raise Unavailable(f"{label} at {address} was not ready after {timeout:.0f}s{detail}")
