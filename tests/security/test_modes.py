"""Protected mode, the dev token with the CLI and the Python client, TLS, and the role table."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from livecalc.data.v1 import data_service_pb2
from livecalc.engine.v1 import engine_service_pb2
from livecalc.gateway.v1 import job_service_pb2, package_service_pb2
from services.client import Client
from services.common.auth.config import SecurityConfig, check_bind, is_loopback
from services.common.auth.roles import REQUIRED_ROLE
from services.common.errors import FailedPrecondition
from tests.security import keys
from tests.support import ROOT, VENV_BIN, free_port, start_service

LIVECALC = str(VENV_BIN / "livecalc")


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LIVECALC, *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


def test_every_rpc_has_a_role() -> None:
    methods = {
        f"/{service.full_name}/{method.name}"
        for module in (data_service_pb2, engine_service_pb2, job_service_pb2, package_service_pb2)
        for service in module.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    }
    assert methods == set(REQUIRED_ROLE)


@pytest.mark.parametrize(
    ("host", "loopback"), [("127.0.0.1", True), ("localhost", True), ("::1", True), ("0.0.0.0", False), ("::", False)]
)
def test_protected_mode_rule(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
    if loopback:
        check_bind(host, SecurityConfig())
    else:
        with pytest.raises(FailedPrecondition):
            check_bind(host, SecurityConfig())
        check_bind(host, SecurityConfig(insecure=True))


def test_bind_all_without_auth_is_refused_unless_insecure(tmp_path: Path) -> None:
    refused = _run("serve", "data", "--host", "0.0.0.0", "--port", str(free_port()), "--metrics-port", "-1")
    assert refused.returncode == 1
    assert refused.stderr.count("\n") == 1 and "refusing to listen on 0.0.0.0 without authentication" in refused.stderr
    refused_env = _run("serve", "data", "--port", str(free_port()), env={"LIVECALC_HOST": "0.0.0.0"})
    assert refused_env.returncode == 1 and "--insecure" in refused_env.stderr
    service = start_service("data", tmp_path, extra=["--host", "0.0.0.0", "--insecure", "--root", str(tmp_path)])
    try:
        assert _run("datasets", "list", "--address", service.address, "--json").returncode == 0
    finally:
        service.kill()


def test_dev_token_with_the_cli_and_the_python_client(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = {"LIVECALC_DATA_DIR": str(data_dir)}
    service = start_service("data", tmp_path, extra=["--auth-dev", "--root", str(tmp_path / "ds")], env=env)
    try:
        secret = data_dir / "auth" / "dev-secret"
        assert secret.stat().st_mode & 0o777 == 0o600
        minted = _run("auth", "dev-token", "--tenant", "acme", "--role", "read", "--ttl", "60", env=env)
        assert minted.returncode == 0, minted.stderr
        token = minted.stdout.strip()
        plain = _run("datasets", "list", "--address", service.address, "--json")
        assert plain.returncode == 1 and plain.stderr.startswith("livecalc: error: unauthenticated:")
        assert _run("datasets", "list", "--address", service.address, "--token", token).returncode == 0
        assert _run("datasets", "list", "--address", service.address, env={"LIVECALC_TOKEN": token}).returncode == 0
        denied = _run("datasets", "delete", "x", "--address", service.address, "--token", token)
        assert denied.returncode == 1 and "permission_denied" in denied.stderr
        with Client("127.0.0.1:1", data=service.address, token=token, retries=0) as lc:
            assert lc.list_datasets() == []
        assert (data_dir / "audit.log").read_text().count('"outcome":"permission_denied"') == 1
    finally:
        service.kill()


def test_tls_round_trip(tmp_path: Path) -> None:
    cert, key = keys.self_signed(tmp_path)
    service = start_service(
        "data", tmp_path, extra=["--tls-cert", str(cert), "--tls-key", str(key), "--root", str(tmp_path)], wait=False
    )
    try:
        creds = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        deadline = time.monotonic() + 30
        with grpc.secure_channel(service.address, creds) as channel:
            while True:
                try:
                    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2)
                    assert reply.status == health_pb2.HealthCheckResponse.SERVING
                    break
                except grpc.RpcError:
                    assert time.monotonic() < deadline and service.proc.poll() is None, service.log()
                    time.sleep(0.2)
        assert _run("datasets", "list", "--address", service.address, "--tls-ca", str(cert)).returncode == 0
        with Client("127.0.0.1:1", data=service.address, tls_ca=cert, retries=0) as lc:
            assert lc.list_datasets() == []
        plaintext = _run("datasets", "list", "--address", service.address, "--timeout", "3")
        assert plaintext.returncode == 1
    finally:
        service.kill()
