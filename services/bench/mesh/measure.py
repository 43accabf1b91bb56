"""A whole ``livecalc bench mesh`` run: the services started, every configuration measured, all stopped.

Each service is a ``livecalc serve`` process on free loopback ports (services.common.processes),
its log in SCRATCH/logs/LABEL.log.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from livecalc.gateway.v1 import job_pb2
from services.bench.mesh.config import DATASET_SEED, BenchConfig, Size
from services.bench.mesh.inputs import build_package, dataset_version, scenarios_of, upload
from services.bench.mesh.report import SizeReport, document, median
from services.bench.mesh.runs import DirectRun, InProcess, chunk_totals, engine_slots, run_direct, run_job
from services.common import rss
from services.common.processes import ServiceProcess, stop_in_stages
from services.gateway.inputs import scenario_spec
from services.gateway.planner import choose_chunk_blocks
from services.valuation.blocks import block_count

#: How long a service may take to serve after it starts (a cold engine compiles its modules).
READY_SECONDS = 120.0


def _say(out: IO[str] | None, line: str) -> None:
    if out is not None:
        out.write(line + "\n")
        out.flush()


def measure(cfg: BenchConfig, scratch: Path, progress: IO[str] | None) -> dict[str, Any]:
    from services.data.generate import generate  # noqa: PLC0415

    datasets, logs = scratch / "datasets", scratch / "logs"
    datasets.mkdir(parents=True, exist_ok=True)
    logs.mkdir(exist_ok=True)
    for model in cfg.models:
        for size in cfg.sizes_of(model):
            path = datasets / f"{size.dataset_of(model)}.parquet"
            if not path.exists():
                generate(path, size.policies, DATASET_SEED, model=model)
    archives: dict[str, bytes] = {}
    for model in cfg.models:
        source = scratch / ("package" if model == "term_life" else f"package-{model}")
        if source.exists():
            shutil.rmtree(source)
        archives[model] = build_package(source, model)
    services: list[ServiceProcess] = []
    reports: list[SizeReport] = []

    def start(label: str, name: str, extra: list[str], env: dict[str, str] | None = None) -> ServiceProcess:
        log = logs / f"{label}.log"
        return ServiceProcess.start(name, log, extra=extra, env=env, label=label, ready_timeout=READY_SECONDS)

    try:
        data = start("data", "data", ["--root", str(datasets)])
        services.append(data)
        engines = []
        for i in range(max(cfg.engine_counts)):
            extra = ["--data", data.address, "--threads", str(cfg.threads), "--cache-dir", str(scratch / f"cache-{i}")]
            engines.append(start(f"engine-{i}", "engine", extra))
        services += engines
        gateways: dict[int, ServiceProcess] = {}
        for n in cfg.engine_counts:
            extra = ["--engines", ",".join(e.address for e in engines[:n]), "--data-address", data.address]
            gateways[n] = start(f"gateway-{n}", "gateway", extra, env={"LIVECALC_DATA_DIR": str(scratch / f"gw{n}")})
        services += gateways.values()
        package_hashes: dict[str, str] = {}
        for model, archive in archives.items():
            for gateway in gateways.values():
                package_hashes[model] = upload(gateway.address, archive)
        _say(progress, f"mesh up: data, {len(engines)} engines ({cfg.threads} threads each), gateways {list(gateways)}")
        for model in cfg.models:
            in_process = InProcess(archives[model], cfg.threads)
            try:
                for size in cfg.sizes_of(model):
                    report = measure_size(
                        cfg,
                        Mesh(data, engines, gateways, datasets),
                        model=model,
                        size=size,
                        in_process=in_process,
                        package_hash=package_hashes[model],
                        progress=progress,
                    )
                    report.peak_rss = {s.label: s.peak_rss_bytes() or 0 for s in services}
                    report.peak_rss["bench (in-process)"] = rss.peak_rss_bytes(os.getpid()) or 0
                    reports.append(report)
            finally:
                in_process.close()
    finally:
        # newest first, all signalled at once (each gateway's engines still serve while it stops)
        stop_in_stages([[s.proc for s in reversed(services)]])
    return document(cfg, reports)


@dataclass(frozen=True)
class Mesh:
    """The running services and the datasets' directory."""

    data: ServiceProcess
    engines: list[ServiceProcess]
    gateways: dict[int, ServiceProcess]
    datasets: Path


def measure_size(
    cfg: BenchConfig,
    mesh: Mesh,
    *,
    model: str,
    size: Size,
    in_process: InProcess,
    package_hash: str,
    progress: IO[str] | None,
) -> SizeReport:
    """One dataset of ``model``: in process, engine alone and each engine count through its
    gateway, one untimed run of each first, then rounds of one timed run of every way in turn,
    so the machine's load, which drifts over a run on a shared machine, falls on every way alike
    and the ratios to in process are measured side by side."""
    data, engines, gateways = mesh.data, mesh.engines, mesh.gateways
    label = size.label if model == "term_life" else f"{model} {size.label}"
    dataset_id = size.dataset_of(model)
    sc = scenarios_of(in_process.config, size.scenarios)
    report = SizeReport(size, model)
    path = mesh.datasets / f"{dataset_id}.parquet"
    version = dataset_version(data.address, dataset_id)
    first_gw = gateways[min(gateways)]
    spec = job_pb2.JobSpec(package_hash=package_hash, dataset_id=dataset_id, scenarios=scenario_spec(sc))
    equal_spec: dict[int, job_pb2.JobSpec] = {}
    if cfg.compare_equal:
        for n in gateways:
            slots = n * engine_slots(engines[0].address)
            equal_spec[n] = job_pb2.JobSpec()
            equal_spec[n].CopyFrom(spec)
            equal_spec[n].chunk_blocks = choose_chunk_blocks(block_count(size.policies), slots, size.scenarios)

    def direct() -> DirectRun:
        return run_direct(engines[0].address, first_gw.address, package_hash, size=size, version=version, sc=sc,
                          dataset_id=dataset_id)  # fmt: skip

    if cfg.warm_up:
        _, h, report.steps = in_process.run(path, sc)
        report.hashes.append(h)
        for gateway in gateways.values():
            report.hashes.append(run_job(gateway.address, spec).result_hash)
    if cfg.engine_alone:
        direct()  # the engine's first run of the dataset (always: it compiles nothing for the gateways)
    chunk_seconds = dict.fromkeys(gateways, 0.0)
    chunk_count = dict.fromkeys(gateways, 0.0)
    for _ in range(cfg.repeats):
        with report.cpu_of("in_process", []):
            seconds, h, report.steps = in_process.run(path, sc)
        report.in_process_s.append(seconds)
        report.hashes.append(h)
        if cfg.engine_alone:
            with report.cpu_of("engine_alone", [engines[0], data]):
                report.direct.append(direct())
        for n, gateway in gateways.items():
            before = chunk_totals(engines[:n])
            with report.cpu_of(f"mesh_{n}", [*engines[:n], data, gateway]):
                run = run_job(gateway.address, spec)
            after = chunk_totals(engines[:n])
            chunk_seconds[n] += sum(a[0] - b[0] for a, b in zip(after, before, strict=True))
            chunk_count[n] += sum(a[1] - b[1] for a, b in zip(after, before, strict=True))
            report.mesh.setdefault(n, []).append(run)
            report.hashes.append(run.result_hash)
            if n in equal_spec:
                equal = run_job(gateway.address, equal_spec[n])
                report.mesh_equal.setdefault(n, []).append(equal)
                report.hashes.append(equal.result_hash)
    for n in gateways:
        report.engine_chunk_seconds[n] = chunk_seconds[n] / cfg.repeats
        report.engine_chunks[n] = chunk_count[n] / cfg.repeats
    _say(progress, f"{label} in-process: {median(report.in_process_s):.3f} s")
    if report.direct:
        _say(progress, f"{label} engine alone: {median([d.seconds for d in report.direct]):.3f} s")
    for n in gateways:
        _say(progress, f"{label} mesh, {n} engine(s): {median([r.seconds for r in report.mesh[n]]):.3f} s")
        if n in equal_spec:
            seconds = median([r.seconds for r in report.mesh_equal[n]])
            blocks = equal_spec[n].chunk_blocks
            _say(progress, f"{label} mesh, {n} engine(s), equal chunks of {blocks}: {seconds:.3f} s")
    return report
