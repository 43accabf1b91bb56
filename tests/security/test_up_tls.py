"""`livecalc up` with TLS: every service serves TLS, the mesh's own channels use it, `up` probes
with it, and a job runs end to end through the TLS client to the no-TLS hash. A certificate
without a CA for the peers is refused before anything starts."""

from __future__ import annotations

import os
from pathlib import Path

import grpc
import pytest

from livecalc.gateway.v1 import job_service_pb2, job_service_pb2_grpc
from services.client import Client
from services.common.config import DEFAULT_PORTS
from services.common.up import engine_ports
from tests.engine.mesh import in_process_hash, policies_csv, stochastic_package
from tests.gateway.jobmesh import spec
from tests.security.keys import self_signed
from tests.support import free_offset, livecalc_up

pytestmark = pytest.mark.timeout(240)
SCENARIOS = 8


def test_up_refuses_a_certificate_its_services_could_not_trust(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    env = {**os.environ, "LIVECALC_TLS_CERT": str(cert), "LIVECALC_TLS_KEY": str(key)}
    env.pop("LIVECALC_TLS_CA", None)
    env.pop("LIVECALC_TLS", None)
    with livecalc_up(["--data-dir", str(tmp_path / "data"), "--port-offset", "17000"], seconds=60, env=env) as up:
        up.proc.wait(timeout=60)
    assert up.proc.returncode == 1, up.lines
    (line,) = "".join(up.lines).splitlines()  # one line, nothing started
    assert line.startswith("livecalc: error: LIVECALC_TLS_CERT serves TLS; set LIVECALC_TLS_CA")


@pytest.mark.slow
def test_a_job_runs_through_a_tls_mesh(tmp_path: Path) -> None:
    def ports(offset: int) -> list[int]:
        base = [p + offset for name in ("data", "gateway") for p in DEFAULT_PORTS[name]]
        return base + [p for pair in engine_ports(1, offset) for p in pair]

    offset = free_offset(ports)
    cert, key = self_signed(tmp_path)
    env = {**os.environ, "LIVECALC_TLS_CERT": str(cert), "LIVECALC_TLS_KEY": str(key), "LIVECALC_TLS_CA": str(cert)}
    gateway = f"127.0.0.1:{DEFAULT_PORTS['gateway'][0] + offset}"
    data = f"127.0.0.1:{DEFAULT_PORTS['data'][0] + offset}"
    args = ["--data-dir", str(tmp_path / "data"), "--port-offset", str(offset)]
    with livecalc_up(args, seconds=120, env=env) as up:
        assert "livecalc mesh is up" in up.lines[-1], "".join(up.lines)
        table = policies_csv(tmp_path / "pol.csv", 1500)
        archive = stochastic_package(tmp_path / "model")
        with Client(gateway, data=data, tls_ca=cert) as client:
            client.upload_dataset(tmp_path / "pol.csv", dataset_id="pol")
            package_hash = client.upload_package_bytes(archive).package.package_hash
            result = client.run(spec(package_hash, "pol", SCENARIOS))
        assert result.result_hash == in_process_hash(archive, table, SCENARIOS)
        with grpc.insecure_channel(gateway) as channel:  # plaintext gets nowhere
            with pytest.raises(grpc.RpcError) as err:
                job_service_pb2_grpc.JobServiceStub(channel).ListJobs(job_service_pb2.ListJobsRequest(), timeout=5)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        up.stop()
    assert up.proc.returncode == 0
