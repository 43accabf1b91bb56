"""The mesh the fault tests break: a data service, three engines and a gateway, each its own process.

Every service listens on free loopback ports; a killed or stopped one is restarted on the same
ports (`FaultMesh.services.restart`), so the others find it again where it was. The gateway
takes an engine silent for `STALL_SECONDS` on a chunk as hung.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pyarrow as pa

from livecalc.gateway.v1 import job_pb2, job_service_pb2
from services.valuation.blocks import BLOCK_SIZE
from tests.engine.mesh import datasets_dir, policies_csv, stochastic_package, upload_package
from tests.gateway.jobmesh import CALL_TIMEOUT, spec, stub
from tests.meshes import Services
from tests.support import ServiceProcess, metric
from tests.waits import wait_for

#: A job of a few seconds on three single-thread engines, in one-block chunks.
ROWS = 24 * BLOCK_SIZE
SCENARIOS = 1000
STALL_SECONDS = 6.0
S = job_pb2.JobState


@dataclass
class FaultMesh:
    services: Services
    root: Path
    data: ServiceProcess
    engines: list[ServiceProcess]
    gateway: ServiceProcess
    package_hash: str
    table: pa.Table
    baseline: str = ""

    def job_spec(self, scenarios: int = SCENARIOS) -> job_pb2.JobSpec:
        return spec(self.package_hash, "faults", scenarios, chunk_blocks=1)


def fault_mesh(tmp: Path) -> Iterator[FaultMesh]:
    root = datasets_dir(tmp)
    table = policies_csv(root / "faults.csv", ROWS, seed=12)
    archive = stochastic_package(tmp / "model")
    with Services(tmp) as services:
        started = services.mesh(root, engines=3, gateway_extra=["--chunk-stall-seconds", str(STALL_SECONDS)])
        package_hash = upload_package(started.gateway.address, archive)
        yield FaultMesh(services, root, started.data, started.engines, started.gateway, package_hash, table)


class Job:
    """A job submitted on a gateway, read event by event (SubmitJob's stream)."""

    def __init__(self, address: str, job_spec: job_pb2.JobSpec) -> None:
        self.channel, jobs = stub(address)
        self.call = jobs.SubmitJob(job_service_pb2.SubmitJobRequest(spec=job_spec), timeout=CALL_TIMEOUT)
        self.events: list[job_pb2.JobEvent] = [next(self.call).event]
        self.job_id = self.events[0].job_id

    def until(self, done: Callable[[job_pb2.JobEvent], bool]) -> job_pb2.JobEvent:
        """Read events until one satisfies ``done`` (AssertionError if the job ends first)."""
        for response in self.call:
            self.events.append(response.event)
            if done(response.event):
                return response.event
            assert response.event.WhichOneof("event") not in ("result", "error", "cancelled"), self.events[-1]
        raise AssertionError(f"job {self.job_id} ended without the awaited event")

    def folded(self, blocks: int) -> None:
        self.until(lambda e: e.WhichOneof("event") == "progress" and e.progress.blocks_done >= blocks)

    def rest(self) -> list[job_pb2.JobEvent]:
        try:
            self.events += [r.event for r in self.call]
        except grpc.RpcError:
            pass  # the gateway went away; the caller re-attaches
        finally:
            self.call.cancel()
            self.channel.close()
        return self.events


def computing(engines: list[ServiceProcess]) -> bool:
    return any(metric(e, "livecalc_engine_compute_in_flight") >= 1 for e in engines)


def hang_engine(job: Job, engine: ServiceProcess) -> tuple[list[job_pb2.JobEvent], float]:
    """SIGSTOP `engine` once it computes, read `job` to its end, then SIGCONT the engine: the job's
    events and the seconds from the stop to the job's end."""
    wait_for(lambda: computing([engine]), "the victim to compute", seconds=20, interval=0.05)
    stopped = time.monotonic()
    engine.pause()
    try:
        events = job.rest()
        return events, time.monotonic() - stopped
    finally:
        engine.resume()


def engine_steps(engine: ServiceProcess) -> float:
    """Projection steps the engine computed since it started."""
    return metric(engine, "livecalc_engine_steps_total")
