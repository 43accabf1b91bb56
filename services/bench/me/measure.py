"""A whole ``livecalc bench me`` run: lifelib once, the inputs written, the services started, every run timed.

The services are ``livecalc serve`` processes on free loopback ports (services.common.processes):
a data service over SCRATCH/datasets, max(engine counts) engines of K threads each and one gateway
per engine count over the first N engines, each log in SCRATCH/logs. The in-process pipeline
(services.bench.mesh.runs.InProcess) reads the same Parquet file on the same K threads.
Every configuration first runs once untimed on one copy of the points (package download, module
compile, instances made: cheap at any multiplier), then ``repeats`` times on all of them; the
figure is the median.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final

from livecalc.gateway.v1 import job_pb2
from services.bench.me.inputs import build_package, me_assumptions, points_table, write_tiled
from services.bench.me.lifelib_oracle import COMPONENTS, LifelibME, load
from services.bench.mesh.inputs import scenarios_of, upload
from services.bench.mesh.runs import InProcess, JobRun, run_job
from services.common.processes import ServiceProcess, stop_in_stages
from services.gateway.inputs import scenario_spec
from services.valuation.blocks import BLOCK_SIZE

PIECE_ROWS: Final = BLOCK_SIZE * 1024
"""Rows the in-process pipeline runs at a time (about 1M)."""
READY_SECONDS: Final = 120.0
"""How long a service may take to serve after it starts (a cold engine compiles its modules)."""


@dataclass(frozen=True)
class MeConfig:
    multiplier: int
    points: int
    """Model points of lifelib's 10,000 per copy (the first ``points``)."""
    engine_counts: tuple[int, ...]
    threads: int
    repeats: int
    cache_dir: Path


@dataclass
class InProcessRun:
    seconds: float
    result_hash: str
    steps: int
    totals: dict[str, float]
    """`COMPONENTS` → the portfolio value of that output (one scenario)."""


@dataclass
class Measured:
    """What one ``bench me`` found: lifelib, the rows, every timed run."""

    cfg: MeConfig
    lifelib: LifelibME
    rows: int
    in_process: list[InProcessRun] = field(default_factory=list)
    mesh: dict[int, list[JobRun]] = field(default_factory=dict)
    hashes: list[str] = field(default_factory=list)
    write_seconds: float = 0.0


def _say(out: IO[str] | None, line: str) -> None:
    if out is not None:
        out.write(line + "\n")
        out.flush()


def run_in_process(in_process: InProcess, path: Path) -> InProcessRun:
    """One run of the package's pipeline in this process from the file, with every output's total.

    The rows go through the pipeline `PIECE_ROWS` at a time (whole blocks, so a run at 100M rows
    stays within a WASM memory); block partials do not depend on how blocks are grouped, so the
    folded totals and the hash are those of one run over every row.
    """
    import numpy as np  # noqa: PLC0415
    import pyarrow.parquet as pq  # noqa: PLC0415

    from services.engine.pipeline import PipelineResult, RunInputs  # noqa: PLC0415
    from services.valuation.interface.records import Records  # noqa: PLC0415
    from services.valuation.scenarios import ScenarioParams  # noqa: PLC0415

    started = time.perf_counter()
    table = pq.read_table(path)
    params = ScenarioParams(**in_process.config["scenarios"])
    partials, steps = [], 0
    result: PipelineResult | None = None
    for first in range(0, table.num_rows, PIECE_ROWS):
        records = Records.from_table(table.slice(first, PIECE_ROWS), in_process.interface, in_process.assets.bounds)
        inputs = RunInputs(in_process.interface, records, in_process.assets, params)
        result = in_process.runner.run(in_process.config["pipeline"], inputs)
        partials.append(result.partials)
        steps += int(records.horizons.sum()) * params.count
    if result is None:
        raise ValueError(f"{path} holds no rows")
    whole = PipelineResult({}, np.concatenate(partials), result.outputs)
    seconds = time.perf_counter() - started
    totals = {name: float(whole.portfolio(name)[0]) for name in COMPONENTS}
    return InProcessRun(seconds, whole.result_hash, steps, totals)


def measure(cfg: MeConfig, scratch: Path, progress: IO[str] | None) -> Measured:
    lifelib = load(cfg.cache_dir)
    points = min(cfg.points, len(lifelib))
    datasets, logs = scratch / "datasets", scratch / "logs"
    datasets.mkdir(parents=True, exist_ok=True)
    logs.mkdir(exist_ok=True)
    base = points_table(lifelib, points)
    dataset_id, warm_id = f"basic-term-me-{points}x{cfg.multiplier}", f"basic-term-me-{points}x1"
    path, warm_path = datasets / f"{dataset_id}.parquet", datasets / f"{warm_id}.parquet"
    started = time.perf_counter()
    rows = write_tiled(path, base, cfg.multiplier)
    found = Measured(cfg, lifelib, rows, write_seconds=time.perf_counter() - started)
    _say(progress, f"{rows:,} rows ({points:,} points × {cfg.multiplier:,}) written in {found.write_seconds:.1f} s")
    if not warm_path.exists():
        write_tiled(warm_path, base, 1)
    source = scratch / "package"
    if source.exists():
        shutil.rmtree(source)
    archive = build_package(source, me_assumptions(lifelib))

    in_process = InProcess(archive, cfg.threads)
    try:
        run_in_process(in_process, warm_path)  # warm-up: modules compiled, instances made
        for _ in range(cfg.repeats):
            run = run_in_process(in_process, path)
            found.hashes.append(run.result_hash)
            found.in_process.append(run)
            _say(progress, f"in process: {run.seconds:.3f} s")
        sc = scenarios_of(in_process.config, 1)
    finally:
        in_process.close()

    services: list[ServiceProcess] = []

    def start(label: str, name: str, extra: list[str], env: dict[str, str] | None = None) -> ServiceProcess:
        service = ServiceProcess.start(
            name, logs / f"{label}.log", extra=extra, env=env, label=label, ready_timeout=READY_SECONDS
        )
        services.append(service)
        return service

    try:
        data = start("data", "data", ["--root", str(datasets)])
        engines = [
            start(
                f"engine-{i}",
                "engine",
                ["--data", data.address, "--threads", str(cfg.threads), "--cache-dir", str(scratch / f"cache-{i}")],
            )
            for i in range(max(cfg.engine_counts))
        ]
        for n in cfg.engine_counts:
            extra = ["--engines", ",".join(e.address for e in engines[:n]), "--data-address", data.address]
            gateway = start(f"gateway-{n}", "gateway", extra, env={"LIVECALC_DATA_DIR": str(scratch / f"gw{n}")})
            package_hash = upload(gateway.address, archive)
            # warm-up on one copy: the package downloaded and compiled by every engine
            run_job(
                gateway.address,
                job_pb2.JobSpec(package_hash=package_hash, dataset_id=warm_id, scenarios=scenario_spec(sc)),
            )
            spec = job_pb2.JobSpec(package_hash=package_hash, dataset_id=dataset_id, scenarios=scenario_spec(sc))
            found.mesh[n] = [run_job(gateway.address, spec) for _ in range(cfg.repeats)]
            found.hashes += [r.result_hash for r in found.mesh[n]]
            _say(progress, f"mesh, {n} engine(s): {', '.join(f'{r.seconds:.3f}' for r in found.mesh[n])} s")
    finally:
        # newest first, all signalled at once (each gateway's engines still serve while it stops)
        stop_in_stages([[s.proc for s in reversed(services)]])
    return found
