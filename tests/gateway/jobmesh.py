"""Helpers of the JobService functional tests: a small JobService client over real processes.

The meshes (data service, engines, gateways) are started with tests.meshes; the package is the
reference model with dynamic lapse on (tests/engine/mesh.py).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from typing import Any

import grpc

from livecalc.engine.v1 import engine_pb2
from livecalc.gateway.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from tests.engine.mesh import SEED, SIGMA
from tests.support import VENV_BIN

CALL_TIMEOUT = 120.0


def scenarios(count: int) -> engine_pb2.ScenarioSpec:
    return engine_pb2.ScenarioSpec(count=count, seed=SEED, volatility=SIGMA)


def spec(package_hash: str, dataset_id: str, count: int, **fields: Any) -> job_pb2.JobSpec:
    return job_pb2.JobSpec(package_hash=package_hash, dataset_id=dataset_id, scenarios=scenarios(count), **fields)


def stub(address: str) -> tuple[grpc.Channel, job_service_pb2_grpc.JobServiceStub]:
    channel = grpc.insecure_channel(address, options=[("grpc.max_receive_message_length", 16 << 20)])
    return channel, job_service_pb2_grpc.JobServiceStub(channel)


def submit(
    address: str, job_spec: job_pb2.JobSpec, key: str = "", *, metadata: Sequence[tuple[str, str]] = ()
) -> list[job_pb2.JobEvent]:
    """Every event of a submitted job, up to its end (with call `metadata`, e.g. a bearer token)."""
    channel, jobs = stub(address)
    with channel:
        call = jobs.SubmitJob(
            job_service_pb2.SubmitJobRequest(spec=job_spec, idempotency_key=key),
            timeout=CALL_TIMEOUT,
            metadata=tuple(metadata),
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


def primary(result: job_pb2.JobResult) -> job_pb2.OutputResult:
    """The result's primary output (the one its statistics and hash describe)."""
    return next(o for o in result.outputs if o.primary)


def values(result: job_pb2.JobResult) -> list[list[float]]:
    """Every output's values, in declared order."""
    return [list(o.values) for o in result.outputs]


def kinds(events: list[job_pb2.JobEvent]) -> list[str]:
    return [str(e.WhichOneof("event")) for e in events]


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
