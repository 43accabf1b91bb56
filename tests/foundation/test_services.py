"""Each service as its own OS process: reflection, health, graceful SIGTERM, metrics."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from livecalc.gateway.v1 import job_service_pb2, job_service_pb2_grpc
from services.common.metrics import code_label
from tests.support import VENV_BIN, ServiceProcess, free_port, wait_started

pytestmark = pytest.mark.slow

OWN_SERVICES = {
    # DataService too: forwarded to the data service (one address for clients)
    "gateway": ["livecalc.gateway.v1.JobService", "livecalc.gateway.v1.PackageService", "livecalc.data.v1.DataService"],
    "engine": ["livecalc.engine.v1.EngineService"],
    "data": ["livecalc.data.v1.DataService"],
}
DOCUMENTED = {
    "gateway": ("livecalc.gateway.v1.JobSpec", "// Package hash of an uploaded model package."),
    "engine": ("livecalc.engine.v1.ScenarioSpec", "// Seed of the counter-based generator."),
    "data": ("livecalc.data.v1.SampleRowsRequest", "// Seed of the sampler"),
}


def grpcurl(*args: str) -> str:
    result = subprocess.run(
        [str(VENV_BIN / "grpcurl"), "-plaintext", *args], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("name", sorted(OWN_SERVICES))
def test_reflection_lists_and_describes(name: str, service_factory: Callable[..., ServiceProcess]) -> None:
    service = service_factory(name)
    listed = grpcurl(service.address, "list").split()
    assert sorted(listed) == sorted(
        [*OWN_SERVICES[name], "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"]
    )
    message, comment = DOCUMENTED[name]
    described = grpcurl(service.address, "describe", message)
    assert f"{message} is a message" in described
    assert comment in described
    health = json.loads(grpcurl("-d", '{"service": "readiness"}', service.address, "grpc.health.v1.Health/Check"))
    assert health == {"status": "SERVING"}


def test_health_names_and_unimplemented_message(service_factory: Callable[..., ServiceProcess]) -> None:
    service = service_factory("gateway")
    with grpc.insecure_channel(service.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", "liveness", "readiness", "livecalc.gateway.v1.JobService"):
            reply = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, name
        with pytest.raises(grpc.RpcError) as info:
            health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        jobs = job_service_pb2_grpc.JobServiceStub(channel)
        # JobService is implemented (issue 10): an unknown job is NOT_FOUND, naming it
        with pytest.raises(grpc.RpcError) as info:
            jobs.GetJob(job_service_pb2.GetJobRequest(job_id="no-such-job"), timeout=5)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        assert "no-such-job" in (info.value.details() or "")


@pytest.mark.parametrize("name", sorted(OWN_SERVICES))
def test_sigterm_drains_then_exits_zero(name: str, service_factory: Callable[..., ServiceProcess]) -> None:
    grace = 3.0
    service = service_factory(name, grace=grace)
    with grpc.insecure_channel(service.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        watch = health.Watch(health_pb2.HealthCheckRequest(service="readiness"), timeout=15)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        started = time.monotonic()
        service.proc.terminate()
        # The watcher hears NOT_SERVING, and new Checks see it during the drain period.
        assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
        reply = health.Check(health_pb2.HealthCheckRequest(service="readiness"), timeout=2)
        assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
        watch.cancel()
    code = service.proc.wait(timeout=grace + 5)
    elapsed = time.monotonic() - started
    assert code == 0, service.log()
    assert elapsed < grace + 1.5, f"took {elapsed:.1f}s for grace {grace}s"
    assert "stopped" in service.log()


@pytest.mark.skipif(shutil.which("promtool") is None, reason="`make test` installs Debian prometheus as root")
def test_metrics_exposition_passes_promtool(service_factory: Callable[..., ServiceProcess]) -> None:
    service = service_factory("engine")
    with grpc.insecure_channel(service.address) as channel:
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    with urllib.request.urlopen(f"http://127.0.0.1:{service.metrics_port}/metrics", timeout=5) as response:
        exposition = response.read()
    assert b'grpc_server_handled_total{grpc_code="OK",grpc_method="Check"' in exposition
    lint = subprocess.run(
        ["promtool", "check", "metrics"], input=exposition, capture_output=True, timeout=30, check=False
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr


def query_prometheus(port: int, promql: str) -> list[dict[str, object]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?query={urllib.parse.quote(promql)}"
    with urllib.request.urlopen(url, timeout=5) as response:
        doc = json.load(response)
    assert doc["status"] == "success"
    result: list[dict[str, object]] = doc["data"]["result"]
    return result


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="`make test` installs Debian prometheus as root")
def test_real_prometheus_scrapes_grpc_metrics(service_factory: Callable[..., ServiceProcess], tmp_path: Path) -> None:
    services = [service_factory(name, wait=False) for name in sorted(OWN_SERVICES)]  # started together
    for service in services:
        wait_started(service)
        with grpc.insecure_channel(service.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            health.Check(health_pb2.HealthCheckRequest(), timeout=5)  # unary
            watch = health.Watch(health_pb2.HealthCheckRequest(), timeout=10)  # server-streaming
            next(watch)
            watch.cancel()
    targets = ", ".join(f"'127.0.0.1:{s.metrics_port}'" for s in services)
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n"
        f"scrape_configs:\n  - job_name: livecalc\n    static_configs:\n      - targets: [{targets}]\n"
    )
    port = free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    prom = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        unary: list[dict[str, object]] = []
        stream: list[dict[str, object]] = []
        while time.monotonic() < deadline:
            try:
                unary = query_prometheus(
                    port, 'grpc_server_handled_total{grpc_method="Check",grpc_type="unary",grpc_code="OK"}'
                )
                stream = query_prometheus(
                    port, 'grpc_server_handled_total{grpc_method="Watch",grpc_type="server_stream"}'
                )
            except OSError:
                pass
            if len(unary) == 3 and len(stream) == 3:
                break
            time.sleep(0.5)
        assert len(unary) == 3, (unary, (tmp_path / "prometheus.log").read_text())
        assert len(stream) == 3, stream
        scraped = {str(s["metric"]["instance"]) for s in unary}  # type: ignore[index]
        assert scraped == {f"127.0.0.1:{s.metrics_port}" for s in services}
        assert all(s["metric"]["grpc_code"] == "Canceled" for s in stream)  # type: ignore[index]
    finally:
        prom.terminate()
        prom.wait(timeout=10)
        log.close()


#: Go's codes.Code.String(), which go-grpc-prometheus puts in grpc_code.
GO_CODE_NAMES = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
]


def test_every_status_code_is_labelled_as_go_spells_it() -> None:
    codes = sorted(grpc.StatusCode, key=lambda c: c.value[0])
    assert [code_label(c) for c in codes] == GO_CODE_NAMES
    assert code_label(None) == "OK"  # a handler that returned
