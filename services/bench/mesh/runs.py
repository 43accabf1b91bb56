"""One timed run each: a job through a gateway, every block straight to one engine, the pipeline in process.

Also what the engines' /metrics say about the chunks they ran (`chunk_totals`).
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import grpc

from livecalc.engine.v1 import engine_pb2, engine_service_pb2, engine_service_pb2_grpc
from livecalc.gateway.v1 import job_pb2, job_service_pb2, job_service_pb2_grpc
from services.bench.mesh.config import Size
from services.common.processes import ServiceProcess
from services.gateway.inputs import scenario_spec
from services.valuation.blocks import BLOCK_SIZE, block_count
from services.valuation.scenarios import ScenarioParams

CALL_TIMEOUT: Final = 900.0


@dataclass
class JobRun:
    seconds: float
    first_progress_s: float | None
    first_block_progress_s: float | None
    first_statistics_s: float | None
    result_hash: str
    steps: int
    gateway_elapsed_s: float
    chunks: int


def run_job(address: str, spec: job_pb2.JobSpec) -> JobRun:
    """Submit and read every event to the result; times are from just before the call."""
    firsts: dict[str, float] = {}
    chunks = 0
    with grpc.insecure_channel(address, options=[("grpc.max_receive_message_length", 64 << 20)]) as channel:
        jobs = job_service_pb2_grpc.JobServiceStub(channel)
        started = time.perf_counter()
        call = jobs.SubmitJob(job_service_pb2.SubmitJobRequest(spec=spec), timeout=CALL_TIMEOUT)
        try:
            for reply in call:
                now = time.perf_counter() - started
                event = reply.event
                kind = str(event.WhichOneof("event"))
                firsts.setdefault(kind, now)
                if kind == "accepted":
                    chunks = event.accepted.chunks_total
                elif kind == "progress" and event.progress.blocks_done > 0:
                    firsts.setdefault("block_progress", now)
                elif kind == "result":
                    r = event.result
                    return JobRun(
                        seconds=now,
                        first_progress_s=firsts.get("progress"),
                        first_block_progress_s=firsts.get("block_progress"),
                        first_statistics_s=firsts.get("statistics"),
                        result_hash=r.result_hash,
                        steps=int(r.steps),
                        gateway_elapsed_s=r.elapsed_seconds,
                        chunks=chunks,
                    )
                elif kind in ("error", "cancelled"):
                    raise RuntimeError(f"job ended with {kind}: {event}")
        finally:
            call.cancel()
    raise RuntimeError("the event stream ended without a result")


@dataclass
class DirectRun:
    seconds: float
    engine_elapsed_s: float
    read_wait_s: float
    steps: int


def run_direct(
    engine: str, gateway: str, package_hash: str, *, size: Size, version: str, sc: ScenarioParams, dataset_id: str = ""
) -> DirectRun:
    """Every block as one RunChunk straight to an engine (no gateway); its ChunkSummary."""
    request = engine_service_pb2.RunChunkRequest(
        job_id="bench",
        chunk_id=1,
        package_hash=package_hash,
        package_address=gateway,
        dataset_id=dataset_id or size.dataset_id,
        dataset_version=version,
        block_size=BLOCK_SIZE,
        scenarios=scenario_spec(sc),
        blocks=engine_pb2.BlockRange(first_block=0, block_count=block_count(size.policies)),
    )
    with grpc.insecure_channel(engine, options=[("grpc.max_receive_message_length", 64 << 20)]) as channel:
        started = time.perf_counter()
        summary = None
        for reply in engine_service_pb2_grpc.EngineServiceStub(channel).RunChunk(request, timeout=CALL_TIMEOUT):
            if reply.WhichOneof("event") == "summary":
                summary = reply.summary
        seconds = time.perf_counter() - started
    if summary is None:
        raise RuntimeError("RunChunk ended without a summary")
    return DirectRun(seconds, summary.elapsed_seconds, summary.read_wait_seconds, int(summary.steps))


def engine_slots(address: str) -> int:
    """The chunk slots an engine advertises (GetCapabilities)."""
    with grpc.insecure_channel(address) as channel:
        caps = engine_service_pb2_grpc.EngineServiceStub(channel).GetCapabilities(
            engine_service_pb2.GetCapabilitiesRequest(), timeout=30
        )
    return int(caps.slots)


class InProcess:
    """The pipeline in this process on K threads: read the file, validate, run the package's pipeline."""

    def __init__(self, archive: bytes, threads: int) -> None:
        from services.engine.pipeline import PipelineRunner  # noqa: PLC0415
        from services.engine.runtime import Runtime  # noqa: PLC0415
        from services.engine.workers import WasmPool  # noqa: PLC0415
        from services.valuation.interface.parser import interface_of  # noqa: PLC0415
        from services.valuation.interface.tables import load_assets  # noqa: PLC0415
        from services.valuation.packages.config import wasm_models  # noqa: PLC0415
        from services.valuation.packages.package import verify_archive  # noqa: PLC0415
        from services.valuation.packages.wasm_checks import wasm_path  # noqa: PLC0415

        package = verify_archive(archive)
        self.config = dict(package.config)
        files = package.files
        # the package's own declaration, tables and parameters, as an engine loads them
        self.interface = interface_of(self.config)
        self.assets = load_assets(self.interface, files.get)
        binaries = {m: files[wasm_path(m)] for m in wasm_models(self.config)}
        self.pool = WasmPool(Runtime(), threads=threads)
        self.runner = PipelineRunner(self.pool, binaries)

    def run(self, path: Path, sc: ScenarioParams) -> tuple[float, str, int]:
        """(seconds, result hash, steps) of one run from the file."""
        import pyarrow.parquet as pq  # noqa: PLC0415

        from services.engine.pipeline import RunInputs  # noqa: PLC0415
        from services.valuation.interface.records import Records  # noqa: PLC0415
        from services.valuation.scenarios import ScenarioParams  # noqa: PLC0415

        started = time.perf_counter()
        records = Records.from_table(pq.read_table(path), self.interface, self.assets.bounds)
        params = ScenarioParams(count=sc.count, seed=sc.seed, a=sc.a, sigma=sc.sigma, include_base=sc.include_base)
        result = self.runner.run(self.config["pipeline"], RunInputs(self.interface, records, self.assets, params))
        seconds = time.perf_counter() - started
        return seconds, result.result_hash, int(records.horizons.sum()) * sc.count

    def close(self) -> None:
        self.pool.close()


def metric_sum(service: ServiceProcess, name: str) -> float:
    """Sum of every sample named ``name`` (any labels) on a service's /metrics."""
    url = f"http://127.0.0.1:{service.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as reply:
        text = reply.read().decode()
    total = 0.0
    for line in text.splitlines():
        head = line.split(" ", 1)[0]
        if head == name or head.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def chunk_totals(engines: Sequence[ServiceProcess]) -> list[tuple[float, float]]:
    """(seconds, count) of the engines' chunk-seconds histograms: RunChunk calls and their time."""
    name = "livecalc_engine_chunk_seconds"
    return [(metric_sum(e, name + "_sum"), metric_sum(e, name + "_count")) for e in engines]
