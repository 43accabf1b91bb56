"""`livecalc up --engines N`: N engine processes on consecutive ports, each serving EngineService."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from livecalc.engine.v1 import engine_service_pb2, engine_service_pb2_grpc
from services.common.up import engine_ports
from tests.support import free_offset, livecalc_up


def test_engine_ports_are_consecutive_and_step_over_the_other_services() -> None:
    assert engine_ports(3) == [(50052, 9465), (50054, 9467), (50055, 9468)]
    assert engine_ports(1, 100) == [(50152, 9565)]


@pytest.mark.slow
def test_up_with_two_engines_serves_both(tmp_path: Path) -> None:
    def ports(offset: int) -> list[int]:
        base = [50051 + offset, 50053 + offset, 9464 + offset, 9466 + offset]
        return base + [p for pair in engine_ports(2, offset) for p in pair]

    offset = free_offset(ports)
    args = ["--engines", "2", "--data-dir", str(tmp_path / "data"), "--port-offset", str(offset)]
    with livecalc_up(args, seconds=90) as up:
        assert "livecalc mesh is up" in up.lines[-1], "".join(up.lines)
        for port, _ in engine_ports(2, offset):
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                caps = engine_service_pb2_grpc.EngineServiceStub(channel).GetCapabilities(
                    engine_service_pb2.GetCapabilitiesRequest(), timeout=10
                )
                assert caps.slots >= 1 and caps.threads >= 1
        assert "engine-0" in up.lines[-1] and "engine-1" in up.lines[-1]
        up.stop()
    assert up.proc.returncode == 0
