"""Helpers of the JobService functional tests: the mesh as real processes, and a small client.

Data service, engines and gateways each run as their own `livecalc serve` process on free
loopback ports; the package is the reference model with dynamic lapse on (tests/engine/mesh.py).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pyarrow as pa

from livecalc.engine.v1 import engine_pb2
from livecalc.gateway.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from services.engine.pipeline import PipelineRunner, RunInputs
from services.engine.runtime import Runtime
from services.engine.workers import WasmPool
from services.valuation.assumption_files import assumptions_from_files
from services.valuation.packages.package import verify_archive
from services.valuation.policies import Policies
from services.valuation.scenarios import ScenarioParams
from tests.support import VENV_BIN, ServiceProcess, start_service

SEED = 20240601
SIGMA = 0.02
CALL_TIMEOUT = 120.0


def start_engine(tmp: Path, data: ServiceProcess, name: str) -> ServiceProcess:
    return start_service(
        "engine",
        tmp,
        extra=["--data", data.address, "--threads", "1", "--slots", "1", "--cache-dir", str(tmp / f"cache-{name}")],
    )


def start_gateway(tmp: Path, data: ServiceProcess, engines: list[ServiceProcess], data_dir: Path) -> ServiceProcess:
    return start_service(
        "gateway",
        tmp,
        extra=["--engines", ",".join(e.address for e in engines), "--data-address", data.address],
        env={"LIVECALC_DATA_DIR": str(data_dir)},
    )


def scenarios(count: int) -> engine_pb2.ScenarioSpec:
    return engine_pb2.ScenarioSpec(count=count, seed=SEED, volatility=SIGMA)


def spec(package_hash: str, dataset_id: str, count: int, **fields: Any) -> job_pb2.JobSpec:
    return job_pb2.JobSpec(package_hash=package_hash, dataset_id=dataset_id, scenarios=scenarios(count), **fields)


def stub(address: str) -> tuple[grpc.Channel, job_service_pb2_grpc.JobServiceStub]:
    channel = grpc.insecure_channel(address, options=[("grpc.max_receive_message_length", 16 << 20)])
    return channel, job_service_pb2_grpc.JobServiceStub(channel)


def submit(address: str, job_spec: job_pb2.JobSpec, key: str = "") -> list[job_pb2.JobEvent]:
    """Every event of a submitted job, up to its end."""
    channel, jobs = stub(address)
    with channel:
        call = jobs.SubmitJob(
            job_service_pb2.SubmitJobRequest(spec=job_spec, idempotency_key=key), timeout=CALL_TIMEOUT
        )
        try:
            return [r.event for r in call]
        finally:
            call.cancel()


def watch(address: str, job_id: str, after: int = 0) -> list[job_pb2.JobEvent]:
    channel, jobs = stub(address)
    with channel:
        call = jobs.WatchJob(job_service_pb2.WatchJobRequest(job_id=job_id, after_sequence=after), timeout=CALL_TIMEOUT)
        try:
            return [r.event for r in call]
        finally:
            call.cancel()


def get_job(address: str, job_id: str) -> job_pb2.Job:
    channel, jobs = stub(address)
    with channel:
        return jobs.GetJob(job_service_pb2.GetJobRequest(job_id=job_id), timeout=30).job


def kinds(events: list[job_pb2.JobEvent]) -> list[str]:
    return [str(e.WhichOneof("event")) for e in events]


def in_process_hash(archive: bytes, table: pa.Table, count: int) -> str:
    """The result hash of the shipped pipeline run in this process (MODEL.md's reference order)."""
    package = verify_archive(archive)
    assumptions = assumptions_from_files(
        {p.removeprefix("assumptions/"): d for p, d in package.files.items() if p.startswith("assumptions/")}
    )
    assert assumptions.dyn_lapse_beta > 0
    inputs = RunInputs(Policies.from_columns(table), assumptions, ScenarioParams(count=count, seed=SEED, sigma=SIGMA))
    with WasmPool(Runtime(), threads=2) as pool:
        return PipelineRunner(pool).run(package.config["pipeline"], inputs).result_hash


def grpcurl(address: str, method: str, body: dict[str, Any]) -> list[Any]:
    """grpcurl's JSON answers (one per streamed message)."""
    done = subprocess.run(
        [
            str(VENV_BIN / "grpcurl"),
            "-plaintext",
            "-d",
            json.dumps(body),
            address,
            f"livecalc.gateway.v1.JobService/{method}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    decoder, text, i = json.JSONDecoder(), done.stdout, 0
    out: list[Any] = []
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            return out
        value, i = decoder.raw_decode(text, i)
        out.append(value)


def until_end(events: Iterator[job_pb2.JobEvent]) -> list[job_pb2.JobEvent]:
    return list(events)


def metric(service: ServiceProcess, name: str) -> float:
    """One unlabelled sample of a service's /metrics."""
    import urllib.request

    text = urllib.request.urlopen(f"http://127.0.0.1:{service.metrics_port}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not exposed")


def metric_text(service: ServiceProcess) -> str:
    import urllib.request

    return str(urllib.request.urlopen(f"http://127.0.0.1:{service.metrics_port}/metrics", timeout=5).read().decode())
