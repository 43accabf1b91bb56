"""``livecalc bench mesh``: the mesh as real processes against the in-process pipeline.

One run starts a data service over a scratch directory, three engines (K threads each) and
one gateway per engine count (1, 2, 3; gateway *n* dispatches to the first *n* engines),
each ``livecalc serve`` as its own process on free loopback ports. Per model (``--model``:
term_life, the default, savings or both) it generates the datasets (``services.data.generate``,
seed 1), builds the reference package (term_life: esg → term_life with dynamic lapse on, β = 25,
as the functional tests; savings: normals → savings, lifelib CashValue_ME) and uploads it to
every gateway, then measures on the same policies and scenarios (the package's configured
scenario set, with the bench's count):

- the in-process pipeline (`PipelineRunner` on a `WasmPool` of the same K threads): read
  the Parquet file, validate the policies, run the package's pipeline;
- one engine alone: one RunChunk of every block, straight to engine 0 (no gateway), whose
  ChunkSummary says how long the engine read rows and computed;
- the mesh with 1, 2 and 3 engines: SubmitJob to the result event, as a client sees it.

Every configuration first runs one untimed warm-up (package download, module compile,
dataset metadata), then ``repeats`` timed runs; the figure is their **median**. Peak RSS
(``VmHWM``) of every service is read from /proc after each dataset size. Every result hash
(in-process, every mesh job, warm-ups included) must be the same.

It lives outside the service packages because it drives them all and runs the engine's
pipeline in process: a service never imports another service's modules (docs/architecture.md "Layering").
Benchmarks are not tests: this prints numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

import grpc

from livecalc.engine.v1 import engine_pb2, engine_service_pb2, engine_service_pb2_grpc
from livecalc.gateway.v1 import (
    job_pb2,
    job_service_pb2,
    job_service_pb2_grpc,
    package_service_pb2,
    package_service_pb2_grpc,
)
from services.common.readiness import wait_serving
from services.gateway.planner import choose_chunk_blocks
from services.valuation.blocks import BLOCK_SIZE, block_count

DATASET_SEED: Final = 1
MODELS: Final = ("term_life", "savings")
"""``--model``: the shipped reference packages a run may measure (``both``: each in turn, one mesh)."""
PIPELINES: Final = {
    "term_life": "esg → term_life, dynamic lapse β={beta:g}",
    "savings": "normals → savings, lifelib CashValue_ME",
}
DYN_LAPSE_BETA: Final = 25.0
UPLOAD_CHUNK: Final = 1 << 20
CALL_TIMEOUT: Final = 900.0
TARGETS: Final = {
    "overhead_10k": 0.25,  # mesh/in-process − 1 at 10K×1K
    "overhead_100k": 0.10,  # at 100K×1K
    "end_to_end_10k_s": 1.5,
    "first_progress_s": 0.3,
}
SCALE_TARGETS: Final = {"gateway_peak_rss_mb": 300, "engine_peak_rss_mb": 500}
"""--scale: 1M policies × 1K scenarios within the seed's memory per service (issue 12)."""


@dataclass(frozen=True)
class Size:
    policies: int
    scenarios: int

    @property
    def label(self) -> str:
        return f"{_short(self.policies)}×{_short(self.scenarios)}"

    @property
    def dataset_id(self) -> str:
        return f"bench-{self.policies}"

    def dataset_of(self, model: str) -> str:
        """The dataset of this size's policies of ``model`` (term_life's keeps its old name)."""
        return self.dataset_id if model == "term_life" else f"bench-{model}-{self.policies}"


def _short(n: int) -> str:
    return f"{n // 1000}K" if n % 1000 == 0 and n >= 1000 else str(n)


@dataclass(frozen=True)
class BenchConfig:
    sizes: tuple[Size, ...]
    engine_counts: tuple[int, ...]
    threads: int
    repeats: int
    scratch: Path | None = None
    warm_up: bool = True
    engine_alone: bool = True
    scale: bool = False
    #: Also run every engine count with equal chunks (the planner before guided sizes).
    compare_equal: bool = False
    models: tuple[str, ...] = ("term_life",)
    #: savings' sizes (its rows project ~3× term_life's months, each step ~5× the work): by default
    #: a tenth of term_life's scenarios; --size, --quick and --scale set both.
    savings_sizes: tuple[Size, ...] = ()

    def sizes_of(self, model: str) -> tuple[Size, ...]:
        return (self.savings_sizes or self.sizes) if model == "savings" else self.sizes


def models_of(choice: str | None) -> tuple[str, ...]:
    """``--model``: one of `MODELS`, or ``both``."""
    return MODELS if choice == "both" else (choice or "term_life",)


def config_from(args: argparse.Namespace) -> BenchConfig:
    threads = args.threads or os.cpu_count() or 1
    scratch = Path(args.dir).resolve() if args.dir else None
    models = models_of(getattr(args, "model", None))
    if args.scale:
        # one long run each: the in-process pipeline (for the hash and the ratio) and the mesh with
        # one engine of all the cores (more engines on the same cores only share them)
        return BenchConfig(
            sizes=(Size(1_000_000, 1_000),),
            engine_counts=getattr(args, "engines", None) or (1,),
            threads=threads,
            repeats=args.repeats or 1,
            scratch=scratch,
            warm_up=False,
            engine_alone=False,
            scale=True,
            models=models,
        )
    savings_sizes: tuple[Size, ...] = ()
    if args.quick:
        sizes: tuple[Size, ...] = (Size(2 * BLOCK_SIZE, 50),)
        counts: tuple[int, ...] = (1, 2)
        repeats = 1
    else:
        sizes = (Size(10_000, 1_000),) + ((Size(100_000, 1_000),) if args.large else ())
        savings_sizes = (Size(10_000, 100),) + ((Size(100_000, 100),) if args.large else ())
        counts = (1, 2, 3)
        repeats = 3
    if getattr(args, "size", None):
        sizes, savings_sizes = tuple(args.size), ()
    if getattr(args, "engines", None):
        counts = args.engines
    return BenchConfig(
        sizes=sizes,
        engine_counts=counts,
        threads=threads,
        repeats=args.repeats or repeats,
        scratch=scratch,
        compare_equal=bool(getattr(args, "compare_equal", False)),
        models=models,
        savings_sizes=savings_sizes,
    )


def parse_size(text: str) -> Size:
    """'100000x1000' (policies × scenarios; '100Kx1K' too)."""

    def number(part: str) -> int:
        part = part.strip().upper()
        scale = {"K": 1_000, "M": 1_000_000}.get(part[-1:], 1)
        return int(part[:-1] if scale > 1 else part) * scale

    policies, sep, scenarios = text.lower().replace("×", "x").partition("x")
    try:
        size = Size(number(policies), number(scenarios))
    except ValueError:
        size = Size(0, 0)
    if not sep or size.policies < 1 or size.scenarios < 1:
        raise argparse.ArgumentTypeError(f"--size wants POLICIESxSCENARIOS, e.g. 100000x1000 or 100Kx1K, got {text!r}")
    return size


def parse_counts(text: str) -> tuple[int, ...]:
    """'1,2,4,8' → (1, 2, 4, 8): engine counts, ascending, each ≥ 1."""
    try:
        counts = tuple(sorted({int(part) for part in text.split(",") if part.strip()}))
    except ValueError:
        counts = ()
    if not counts or counts[0] < 1:
        raise argparse.ArgumentTypeError(f"--engines wants counts like 1,2,4,8, got {text!r}")
    return counts


# processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Service:
    label: str
    port: int
    metrics_port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def start(label: str, name: str, extra: Sequence[str], logs: Path, env: dict[str, str] | None = None) -> Service:
    port, metrics_port = free_port(), free_port()
    log_path = logs / f"{label}.log"
    argv = [sys.executable, "-m", "services.cli", "serve", name, "--port", str(port)]
    argv += ["--metrics-port", str(metrics_port), *extra]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        )
    service = Service(label, port, metrics_port, proc, log_path)
    wait_serving(service.address, timeout=120, proc=proc, label=label)
    return service


def stop(services: list[Service]) -> None:
    for s in reversed(services):
        if s.proc.poll() is None:
            s.proc.send_signal(signal.SIGTERM)
    for s in reversed(services):
        try:
            s.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            s.proc.kill()
            s.proc.wait(timeout=5)


def peak_rss_bytes(pid: int) -> int:
    """VmHWM (peak resident set) of a live process, from /proc; 0 where /proc has none."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def metric_sum(service: Service, name: str) -> float:
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


def chunk_totals(engines: Sequence[Service]) -> list[tuple[float, float]]:
    """(seconds, count) of the engines' chunk-seconds histograms: RunChunk calls and their time."""
    name = "livecalc_engine_chunk_seconds"
    return [(metric_sum(e, name + "_sum"), metric_sum(e, name + "_count")) for e in engines]


# inputs


def build_package(dest: Path, model: str = "term_life") -> bytes:
    """The reference package of ``model`` as archive bytes: term_life with dynamic lapse on
    (β = 25), savings as shipped."""
    from services.valuation.packages.package import build_directory  # noqa: PLC0415
    from services.valuation.packages.reference import init_directory  # noqa: PLC0415

    init_directory(dest, model)
    if model == "term_life":
        options = dest / "assumptions" / "options.json"
        data = json.loads(options.read_text()) if options.exists() else {}
        data["dynamic_lapse"] = {**data.get("dynamic_lapse", {}), "beta": DYN_LAPSE_BETA}
        options.write_text(json.dumps(data, indent=2) + "\n")
    archive, _ = build_directory(dest, source_date_epoch=0)
    return archive


def upload(address: str, archive: bytes) -> str:
    def requests() -> Iterator[package_service_pb2.UploadPackageRequest]:
        header = package_service_pb2.PackageUploadHeader(
            size_bytes=len(archive), sha256=hashlib.sha256(archive).hexdigest()
        )
        yield package_service_pb2.UploadPackageRequest(header=header)
        for i in range(0, len(archive), UPLOAD_CHUNK):
            yield package_service_pb2.UploadPackageRequest(chunk=archive[i : i + UPLOAD_CHUNK])

    with grpc.insecure_channel(address) as channel:
        reply = package_service_pb2_grpc.PackageServiceStub(channel).UploadPackage(requests(), timeout=120)
    return str(reply.package.package_hash)


@dataclass(frozen=True)
class Scenarios:
    """The package's configured scenario set with the bench's count (the same for every run)."""

    count: int
    seed: int
    a: float
    sigma: float
    include_base: bool

    def spec(self) -> engine_pb2.ScenarioSpec:
        return engine_pb2.ScenarioSpec(
            count=self.count,
            seed=self.seed,
            mean_reversion=self.a,
            volatility=self.sigma,
            include_base=self.include_base,
        )


def scenarios_of(config: dict[str, Any], count: int) -> Scenarios:
    sc = dict(config.get("scenarios") or {})
    return Scenarios(
        count=count,
        seed=int(sc.get("seed", 0)),
        a=float(sc.get("a", 0.1)),
        sigma=float(sc.get("sigma", 0.01)),
        include_base=bool(sc.get("include_base", True)),
    )


# measurements


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
    engine: str, gateway: str, package_hash: str, *, size: Size, version: str, sc: Scenarios, dataset_id: str = ""
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
        scenarios=sc.spec(),
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


def dataset_version(data: str, dataset_id: str) -> str:
    from livecalc.data.v1 import data_service_pb2, data_service_pb2_grpc  # noqa: PLC0415

    with grpc.insecure_channel(data) as channel:
        got = data_service_pb2_grpc.DataServiceStub(channel).GetDataset(
            data_service_pb2.GetDatasetRequest(dataset_id=dataset_id), timeout=30
        )
    return str(got.dataset.version)


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

    def run(self, path: Path, sc: Scenarios) -> tuple[float, str, int]:
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


@dataclass
class SizeReport:
    size: Size
    model: str = "term_life"
    steps: int = 0
    in_process_s: list[float] = field(default_factory=list)
    direct: list[DirectRun] = field(default_factory=list)
    mesh: dict[int, list[JobRun]] = field(default_factory=dict)
    mesh_equal: dict[int, list[JobRun]] = field(default_factory=dict)
    hashes: list[str] = field(default_factory=list)
    engine_chunk_seconds: dict[int, float] = field(default_factory=dict)
    engine_chunks: dict[int, float] = field(default_factory=dict)
    peak_rss: dict[str, int] = field(default_factory=dict)


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


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
    services: list[Service] = []
    reports: list[SizeReport] = []
    try:
        data = start("data", "data", ["--root", str(datasets)], logs)
        services.append(data)
        engines = []
        for i in range(max(cfg.engine_counts)):
            extra = ["--data", data.address, "--threads", str(cfg.threads), "--cache-dir", str(scratch / f"cache-{i}")]
            engines.append(start(f"engine-{i}", "engine", extra, logs))
        services += engines
        gateways: dict[int, Service] = {}
        for n in cfg.engine_counts:
            extra = ["--engines", ",".join(e.address for e in engines[:n]), "--data-address", data.address]
            gateways[n] = start(
                f"gateway-{n}", "gateway", extra, logs, env={"LIVECALC_DATA_DIR": str(scratch / f"gw{n}")}
            )
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
                    report.peak_rss = {s.label: peak_rss_bytes(s.proc.pid) for s in services}
                    report.peak_rss["bench (in-process)"] = peak_rss_bytes(os.getpid())
                    reports.append(report)
            finally:
                in_process.close()
    finally:
        stop(services)
    return document(cfg, reports)


@dataclass(frozen=True)
class Mesh:
    """The running services and the datasets' directory."""

    data: Service
    engines: list[Service]
    gateways: dict[int, Service]
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
    """One dataset of ``model``: in process, engine alone, then each engine count through its gateway."""
    data, engines, gateways = mesh.data, mesh.engines, mesh.gateways
    label = size.label if model == "term_life" else f"{model} {size.label}"
    dataset_id = size.dataset_of(model)
    sc = scenarios_of(in_process.config, size.scenarios)
    report = SizeReport(size, model)
    path = mesh.datasets / f"{dataset_id}.parquet"
    if cfg.warm_up:
        _, h, report.steps = in_process.run(path, sc)
        report.hashes.append(h)
    for _ in range(cfg.repeats):
        seconds, h, report.steps = in_process.run(path, sc)
        report.in_process_s.append(seconds)
        report.hashes.append(h)
    _say(progress, f"{label} in-process: {_median(report.in_process_s):.3f} s")
    version = dataset_version(data.address, dataset_id)
    first_gw = gateways[min(gateways)]
    for i in range(cfg.repeats + 1 if cfg.engine_alone else 0):
        run = run_direct(
            engines[0].address, first_gw.address, package_hash, size=size, version=version, sc=sc, dataset_id=dataset_id
        )
        if i:
            report.direct.append(run)
    if report.direct:
        _say(progress, f"{label} engine alone: {_median([d.seconds for d in report.direct]):.3f} s")
    spec = job_pb2.JobSpec(package_hash=package_hash, dataset_id=dataset_id, scenarios=sc.spec())
    for n, gateway in gateways.items():
        if cfg.warm_up:
            report.hashes.append(run_job(gateway.address, spec).result_hash)
        before = chunk_totals(engines[:n])
        runs = [run_job(gateway.address, spec) for _ in range(cfg.repeats)]
        after = chunk_totals(engines[:n])
        report.engine_chunk_seconds[n] = sum(a[0] - b[0] for a, b in zip(after, before, strict=True)) / cfg.repeats
        report.engine_chunks[n] = sum(a[1] - b[1] for a, b in zip(after, before, strict=True)) / cfg.repeats
        report.mesh[n] = runs
        report.hashes += [r.result_hash for r in runs]
        _say(progress, f"{label} mesh, {n} engine(s): {_median([r.seconds for r in runs]):.3f} s")
        if cfg.compare_equal:
            slots = n * engine_slots(engines[0].address)
            equal = choose_chunk_blocks(block_count(size.policies), slots, size.scenarios)
            equal_spec = job_pb2.JobSpec()
            equal_spec.CopyFrom(spec)
            equal_spec.chunk_blocks = equal
            report.mesh_equal[n] = [run_job(gateway.address, equal_spec) for _ in range(cfg.repeats)]
            report.hashes += [r.result_hash for r in report.mesh_equal[n]]
            seconds = _median([r.seconds for r in report.mesh_equal[n]])
            _say(progress, f"{label} mesh, {n} engine(s), equal chunks of {equal}: {seconds:.3f} s")
    return report


# output


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as fh:
        cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu)
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = -1.0
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average_1m_at_end": round(load, 2),
    }


def document(cfg: BenchConfig, reports: list[SizeReport]) -> dict[str, Any]:
    sizes = []
    for r in reports:
        ip = _median(r.in_process_s)
        mesh: dict[str, dict[str, Any]] = {}
        for n, runs in r.mesh.items():
            e2e = _median([x.seconds for x in runs])
            firsts = [x.first_statistics_s for x in runs if x.first_statistics_s is not None]
            mesh[str(n)] = {
                "seconds": e2e,
                "seconds_all": [x.seconds for x in runs],
                "steps_per_s": r.steps / e2e,
                "ratio_to_in_process": e2e / ip,
                "gateway_elapsed_s": _median([x.gateway_elapsed_s for x in runs]),
                "first_progress_s": _median([x.first_progress_s or 0.0 for x in runs]),
                "first_block_progress_s": _median([x.first_block_progress_s or 0.0 for x in runs]),
                "first_statistics_s": _median(firsts) if firsts else None,
                "chunks": runs[0].chunks,
                "engine_chunk_seconds_sum": r.engine_chunk_seconds.get(n, 0.0),
                "steps_reported": runs[0].steps,
            }
        if "1" in mesh:
            for m in mesh.values():
                m["speedup_vs_1_engine"] = mesh["1"]["seconds"] / m["seconds"]
        equal_chunks = {}
        for n, runs in r.mesh_equal.items():
            e2e = _median([x.seconds for x in runs])
            equal_chunks[str(n)] = {
                "seconds": e2e,
                "seconds_all": [x.seconds for x in runs],
                "chunks": runs[0].chunks,
                "guided_speedup": e2e / mesh[str(n)]["seconds"],
            }
        engine_alone = None
        if r.direct:
            direct = _median([d.seconds for d in r.direct])
            engine_alone = {
                "seconds": direct,
                "engine_elapsed_s": _median([d.engine_elapsed_s for d in r.direct]),
                "read_wait_s": _median([d.read_wait_s for d in r.direct]),
                "ratio_to_in_process": direct / ip,
            }
        sizes.append(
            {
                "model": r.model,
                "policies": r.size.policies,
                "scenarios": r.size.scenarios,
                "steps": r.steps,
                "in_process": {"seconds": ip, "seconds_all": r.in_process_s, "steps_per_s": r.steps / ip},
                "engine_alone": engine_alone,
                "mesh": mesh,
                "mesh_equal_chunks": equal_chunks,
                "peak_rss_bytes": r.peak_rss,
                "hashes_identical": len(set(r.hashes)) == 1,
                "result_hash": r.hashes[0],
                "runs_hashed": len(r.hashes),
            }
        )
    doc: dict[str, Any] = {
        "benchmark": "mesh --scale" if cfg.scale else "mesh",
        "threads_per_engine": cfg.threads,
        "repeats": cfg.repeats,
        "statistic": "median",
        "warm_up": "one untimed run per configuration" if cfg.warm_up else "none",
        "models": list(cfg.models),
        "dynamic_lapse_beta": DYN_LAPSE_BETA if "term_life" in cfg.models else None,
        "sizes": sizes,
        # per dataset: the sizes are different datasets, so different results
        "all_hashes_identical": all(len(set(r.hashes)) == 1 for r in reports),
        "targets": TARGETS,
        "machine": machine(),
    }
    if cfg.scale:
        doc["scale_targets"] = {**SCALE_TARGETS, "met": _scale_targets_met(reports)}
    return doc


def _scale_targets_met(reports: list[SizeReport]) -> bool:
    mb = 1 << 20
    for r in reports:
        for label, peak in r.peak_rss.items():
            if label.startswith("gateway") and peak > SCALE_TARGETS["gateway_peak_rss_mb"] * mb:
                return False
            if label.startswith("engine") and peak > SCALE_TARGETS["engine_peak_rss_mb"] * mb:
                return False
    return True


def text(doc: dict[str, Any]) -> str:
    mb = 1 << 20
    models = doc.get("models", ["term_life"])
    packages = "; ".join(PIPELINES[m].format(beta=doc["dynamic_lapse_beta"]) for m in models)
    lines = [
        f"mesh benchmark: reference package{'s' if len(models) > 1 else ''} ({packages}), "
        f"{doc['threads_per_engine']} thread(s) per engine and in process; median of {doc['repeats']} "
        f"timed run(s), warm-up: {doc['warm_up']}",
        "machine: {cpu}, {cores} cores, {platform}, Python {python}, load {load_average_1m_at_end}".format(
            **doc["machine"]
        ),
    ]
    for s in doc["sizes"]:
        lines.append("")
        model = "" if models == ["term_life"] else f"{s['model']}: "
        lines.append(f"{model}{s['policies']:,} policies × {s['scenarios']:,} scenarios: {s['steps']:.3e} steps")
        ip = s["in_process"]
        head: list[tuple[str, int]] = [("seconds", 9), ("steps/s", 11), ("× in-proc", 11), ("1st prog", 10)]
        head += [("1st block", 10), ("1st stats", 10), ("chunks", 8), ("× 1 eng", 9)]
        lines.append(f"  {'':<14}" + "".join(f"{name:>{width}}" for name, width in head))
        lines.append(f"  {'in-process':<14}{ip['seconds']:>9.3f}{ip['steps_per_s']:>11.3e}{1.0:>11.2f}")
        ea = s["engine_alone"]
        if ea is not None:
            steps_alone = s["steps"] / ea["seconds"]
            lines.append(
                f"  {'engine alone':<14}{ea['seconds']:>9.3f}{steps_alone:>11.3e}{ea['ratio_to_in_process']:>11.2f}"
                f"{'':>30}{1:>8}   (read wait {ea['read_wait_s']:.3f} s)"
            )
        for n, m in s["mesh"].items():
            stats = "-" if m["first_statistics_s"] is None else f"{m['first_statistics_s']:.3f}"
            lines.append(
                f"  {'mesh, ' + n + ' eng':<14}{m['seconds']:>9.3f}{m['steps_per_s']:>11.3e}"
                f"{m['ratio_to_in_process']:>11.2f}{m['first_progress_s']:>10.3f}{m['first_block_progress_s']:>10.3f}"
                f"{stats:>10}{m['chunks']:>8}"
                + (f"{m['speedup_vs_1_engine']:>9.2f}" if "speedup_vs_1_engine" in m else "")
            )
            eq = s.get("mesh_equal_chunks", {}).get(n)
            if eq is not None:
                lines.append(
                    f"  {'  equal chunks':<14}{eq['seconds']:>9.3f}{s['steps'] / eq['seconds']:>11.3e}"
                    f"{eq['seconds'] / ip['seconds']:>11.2f}{'':>30}{eq['chunks']:>8}"
                    f"   (equal / guided time: {eq['guided_speedup']:.2f})"
                )
        rss = ", ".join(f"{k} {v / mb:.0f}" for k, v in s["peak_rss_bytes"].items())
        lines.append(f"  peak RSS (VmHWM, MB): {rss}")
        lines.append(f"  result hashes identical: {'yes' if s['hashes_identical'] else 'NO'} ({s['runs_hashed']} runs)")
    lines.append("")
    lines.append(
        "every result hash identical (per dataset: in process, engine counts, warm-ups): "
        + ("yes" if doc["all_hashes_identical"] else "NO")
    )
    if "scale_targets" in doc:
        t = doc["scale_targets"]
        lines.append(
            f"peak RSS within the seed's memory (gateway < {t['gateway_peak_rss_mb']} MB, "
            f"engine < {t['engine_peak_rss_mb']} MB): {'yes' if t['met'] else 'NO'}"
        )
    return "\n".join(lines)


def cmd_bench_mesh(args: argparse.Namespace) -> int:
    cfg = config_from(args)
    progress = None if args.json else sys.stderr
    if cfg.scratch is not None:
        cfg.scratch.mkdir(parents=True, exist_ok=True)
        doc = measure(cfg, cfg.scratch, progress)
    else:
        with tempfile.TemporaryDirectory(prefix="livecalc-bench-mesh-") as tmp:
            doc = measure(cfg, Path(tmp), progress)
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(text(doc))
    ok = doc["all_hashes_identical"] and doc.get("scale_targets", {}).get("met", True)
    return 0 if ok else 1


def register_bench(bench_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `bench mesh`."""
    p = bench_sub.add_parser(
        "mesh",
        help="the mesh as real processes (1, 2, 3 engines) against the in-process pipeline, same inputs",
    )
    p.add_argument("--large", action="store_true", help="also 100K policies × 1K scenarios")
    p.add_argument("--quick", action="store_true", help="tiny sizes (2K × 50, 1 and 2 engines), one timed run")
    p.add_argument(
        "--scale",
        action="store_true",
        help="1M policies × 1K scenarios, one engine, one run each; gateway < 300 MB and engine < 500 MB peak RSS",
    )
    p.add_argument("--threads", type=int, help="threads per engine and in process (default: cores)")
    p.add_argument(
        "--model",
        choices=(*MODELS, "both"),
        default="term_life",
        help="the reference package to run: term_life (esg → term_life, the default), savings (normals → "
        "savings, lifelib CashValue_ME; by default 10K × 100 and with --large 100K × 100) or both, in turn",
    )
    p.add_argument(
        "--engines",
        type=parse_counts,
        help="engine counts to measure, e.g. 1,2,4,8 (one gateway each over the first N engines)",
    )
    p.add_argument(
        "--size",
        type=parse_size,
        action="append",
        help="POLICIESxSCENARIOS instead of the default sizes, e.g. 300Kx1K (repeatable)",
    )
    p.add_argument(
        "--compare-equal",
        action="store_true",
        help="also run each engine count with equal chunks (the planner before guided sizes), side by side",
    )
    p.add_argument("--repeats", type=int, help="timed runs per configuration (default 3; median reported)")
    p.add_argument("--dir", help="scratch directory to use and keep (default: a temporary one, removed)")
    p.add_argument("--json", action="store_true", help="print one JSON document and nothing else")
    p.set_defaults(func=cmd_bench_mesh)
