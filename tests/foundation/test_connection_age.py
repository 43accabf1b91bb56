"""Connections are recycled for DNS re-resolution (`max_connection_age`), but a call that is
open when its connection ages runs to its end: a job's SubmitJob/WatchJob stream may last for
hours. Until this test, the age's grace was the shutdown grace (10 s), so every stream older than
5 min 10 s ended in UNAVAILABLE "max connection age" (seen in the load test on a busy machine).
"""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.config import resolve_server_config
from services.common.errors import InvalidArgument
from tests.support import start_service

AGE_SECONDS = 1.0


def test_an_open_stream_outlives_its_connections_age(tmp_path: Path) -> None:
    data = start_service(
        "data",
        tmp_path,
        extra=["--root", str(tmp_path / "datasets")],
        env={"LIVECALC_MAX_CONNECTION_AGE_SECONDS": str(AGE_SECONDS)},
        grace=1.0,  # the shutdown grace, which used to bound the stream too
    )
    try:
        with grpc.insecure_channel(data.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            # Health.Watch stays open, sending a status when it changes: a stand-in for a job's stream
            watch = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=30)
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
            time.sleep(AGE_SECONDS + 1 + 3)  # past the age and the shutdown grace, with room
            # new calls go on a fresh connection meanwhile
            check = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
            assert check.status == health_pb2.HealthCheckResponse.SERVING
            # the stream is still open: no UNAVAILABLE "max connection age" came on it
            assert watch.running() and not watch.done()
            watch.cancel()
            with pytest.raises(grpc.RpcError) as err:
                next(watch)
            assert err.value.code() == grpc.StatusCode.CANCELLED  # type: ignore[attr-defined]
    finally:
        data.terminate()


def test_the_age_is_configurable_and_positive() -> None:
    assert resolve_server_config("data", {}).max_connection_age_seconds == 300.0
    env = {"LIVECALC_MAX_CONNECTION_AGE_SECONDS": "60"}
    assert resolve_server_config("data", env).max_connection_age_seconds == 60.0
    with pytest.raises(InvalidArgument, match="max connection age must be > 0"):
        resolve_server_config("data", {"LIVECALC_MAX_CONNECTION_AGE_SECONDS": "0"})
