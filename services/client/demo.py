"""`livecalc run`: the demo job that `make run` runs, end to end on one machine.

It starts the embedded mesh (data, engine(s), gateway as child processes, their logs in
``DATA_DIR/logs/``), creates the sample dataset (100,000 policies, seeded) and builds the
reference model package on first use (both reused afterwards), shows the dataset's metadata,
runs a preview on a seeded 10,000-policy sample and then the full valuation (1,000
scenarios), each with a live progress bar, prints the results table and how close the
preview came, writes ``results.json`` and a distribution plot, and stops the mesh.

``--model`` picks the product (`DEMO_MODELS`): term life (the default) or savings, lifelib's
CashValue_ME (normals → savings; its own generated policies and reference package, smaller
defaults: its whole-life policies run to age 120).

``--local`` runs the same full job in this process (no services: the pipeline runner over the
same WASM binaries) and prints the same result hash, the proof that local equals cluster.
``--local --package P --dataset D`` values your own package (a directory, built first, or an
archive) on your own policies (a local .csv or .parquet file, or a dataset id under
``DATA_DIR/datasets``) with the package's configured scenarios (``--scenarios N``: the first N),
the hash equal to `livecalc submit --package P --dataset D [--scenarios N]` on a mesh.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Final

import numpy as np

from livecalc.data.v1 import data_pb2
from livecalc.gateway.v1 import job_pb2
from services.client.aio import ResultAssembler, job_spec, package_archive
from services.client.report import (
    ProgressView,
    json_text,
    plot_title,
    preview_comparison,
    preview_interval,
    result_document,
    result_lines,
    write_plot,
)
from services.client.sync import Client
from services.common.client import EXIT_INTERRUPTED
from services.common.config import DEFAULT_PORTS
from services.common.errors import InvalidArgument, LivecalcError
from services.common.up import (
    Child,
    data_dir_of,
    mesh_plan,
    start_children,
    stop_children,
    stopping_on_signals,
)
from services.data.generate import generate
from services.gateway.results import final_result
from services.valuation.blocks import fold
from services.valuation.packages.package import build_directory, verify_archive
from services.valuation.packages.reference import init_directory

DATASET_SEED: Final = 1
SAMPLE_SEED: Final = 7


@dataclass(frozen=True)
class DemoModel:
    """A product the demo can value: its generated dataset, its reference package and the
    demo's default sizes."""

    model: str
    """``--model``: the product's name to the dataset generator and to `init_directory`."""
    package: str
    """The reference package's directory and archive name under ``DATA_DIR/models``."""
    dataset: str
    """The sample dataset's id prefix (``PREFIX-100k``, ``PREFIX-ROWS``)."""
    rows: int
    scenarios: int
    preview: int

    def dataset_id(self, rows: int) -> str:
        return f"{self.dataset}-100k" if rows == 100_000 else f"{self.dataset}-{rows}"


DEMO_MODELS: Final = {
    "term_life": DemoModel("term_life", "term-life-reference", "sample", rows=100_000, scenarios=1000, preview=10_000),
    "savings": DemoModel("savings", "savings-reference", "savings", rows=10_000, scenarios=1000, preview=1_000),
}
"""``livecalc run --model``: term life (the default) and lifelib's savings model."""


def dataset_path(data_dir: Path, rows: int, product: DemoModel = DEMO_MODELS["term_life"]) -> tuple[str, Path]:
    """The sample dataset's id and file: one per product and size, so a --rows override never
    reuses the wrong one."""
    dataset_id = product.dataset_id(rows)
    return dataset_id, data_dir / "datasets" / f"{dataset_id}.parquet"


def ensure_dataset(
    data_dir: Path, rows: int, say: Any, product: DemoModel = DEMO_MODELS["term_life"]
) -> tuple[str, Path]:
    dataset_id, path = dataset_path(data_dir, rows, product)
    if path.exists():
        say(f"dataset   {dataset_id}: reusing {path}")
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        size = generate(path, rows, DATASET_SEED, model=product.model)
        took = time.monotonic() - started
        say(f"dataset   {dataset_id}: generated {rows:,} policies ({size:,} bytes) in {took:.1f} s")
    return dataset_id, path


def ensure_package(data_dir: Path, say: Any, product: DemoModel = DEMO_MODELS["term_life"]) -> bytes:
    """The product's reference package archive, built once (byte-reproducibly) under DATA_DIR/models."""
    models = data_dir / "models"
    archive_path = models / f"{product.package}.zip"
    if archive_path.exists():
        archive = archive_path.read_bytes()
        say(f"package   reusing {archive_path}")
        return archive
    source = models / product.package
    if not source.exists():
        init_directory(source, model=product.model)
    archive, package = build_directory(source, source_date_epoch=0)
    archive_path.write_bytes(archive)
    say(f"package   built {archive_path} from {source} (packageHash {package.package_hash[:16]}…)")
    return archive


def scenario_settings(archive: bytes, count: int) -> dict[str, Any]:
    """The package's configured scenario set, with the demo's scenario count."""
    configured = dict(verify_archive(archive).config.get("scenarios") or {})
    return {
        "count": count,
        "seed": int(configured.get("seed", 0)),
        "a": float(configured.get("a", 0.1)),
        "sigma": float(configured.get("sigma", 0.01)),
        "include_base": bool(configured.get("include_base", True)),
    }


def _spec(package_hash: str, dataset_id: str, sc: dict[str, Any], preview: int | None) -> job_pb2.JobSpec:
    spec = job_spec(
        package_hash,
        dataset_id,
        scenarios=sc["count"],
        seed=sc["seed"],
        mean_reversion=sc["a"],
        volatility=sc["sigma"],
        preview_rows=preview,
        preview_seed=SAMPLE_SEED,
        labels={"source": "livecalc run"},
    )
    spec.scenarios.include_base = sc["include_base"]
    return spec


def _dataset_lines(d: data_pb2.Dataset) -> list[str]:
    fmt = data_pb2.DatasetFormat.Name(d.format).removeprefix("DATASET_FORMAT_").lower()
    return [
        f"dataset   {d.dataset_id}: {d.row_count:,} policies, {d.size_bytes:,} bytes ({fmt}), version {d.version[:16]}",
        f"          columns: {', '.join(c.name for c in d.columns)}",
    ]


class Demo:
    """The demo's output: a progress bar on a terminal, plain lines otherwise."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.product = DEMO_MODELS[args.model]
        self.out: IO[str] = sys.stdout
        self.terminal = sys.stdout.isatty()

    def say(self, line: str = "") -> None:
        self.out.write(line + "\n")
        self.out.flush()

    def job(self, lc: Client, spec: job_pb2.JobSpec, label: str) -> tuple[str, job_pb2.JobResult]:
        assembler = ResultAssembler()
        with ProgressView(label, terminal=self.terminal, stream=self.out) as view:
            for event in lc.submit(spec):
                view.event(event)
                result = assembler.add(event)
                if result is not None:
                    return event.job_id, result
        raise LivecalcError(f"{label}: the event stream ended without a result")


def local_dataset(data_dir: Path, dataset: str) -> tuple[str, Path]:
    """``--dataset`` of a local run: a .csv or .parquet file, or the id of one under DATA_DIR/datasets."""
    path = Path(dataset)
    if path.is_file():
        return path.name.rsplit(".", 1)[0], path
    for suffix in (".parquet", ".csv"):
        stored = data_dir / "datasets" / f"{dataset}{suffix}"
        if stored.is_file():
            return dataset, stored
    raise InvalidArgument(f"--dataset {dataset}: no such file, nor a dataset in {data_dir / 'datasets'}")


def _read_table(path: Path) -> Any:
    if path.suffix.lower() == ".csv":
        import pyarrow.csv as pcsv  # noqa: PLC0415 - the local run only

        return pcsv.read_csv(path)
    if path.suffix.lower() != ".parquet":
        raise InvalidArgument(f"{path.name}: the file name must end in .csv or .parquet")
    import pyarrow.parquet as pq  # noqa: PLC0415 - the local run only

    return pq.read_table(path)


def run_local(args: argparse.Namespace, demo: Demo, data_dir: Path) -> int:

    from services.engine.pipeline import PipelineRunner, RunInputs  # noqa: PLC0415
    from services.engine.runtime import Runtime  # noqa: PLC0415
    from services.engine.workers import WasmPool  # noqa: PLC0415
    from services.valuation.interface.parser import interface_of  # noqa: PLC0415
    from services.valuation.interface.records import Records  # noqa: PLC0415
    from services.valuation.interface.tables import load_assets  # noqa: PLC0415
    from services.valuation.scenarios import ScenarioParams  # noqa: PLC0415

    product = demo.product
    if args.package is not None:  # your package on your policies
        dataset_id, path = local_dataset(data_dir, args.dataset)
        archive = package_archive(Path(args.package))
        configured = dict(verify_archive(archive).config.get("scenarios") or {})
        sc = scenario_settings(archive, args.scenarios or int(configured.get("count", 0)))
    else:
        dataset_id, path = ensure_dataset(data_dir, args.rows, demo.say, product)
        archive = ensure_package(data_dir, demo.say, product)
        sc = scenario_settings(archive, args.scenarios)
    package = verify_archive(archive)
    interface = interface_of(package.config)
    assets = load_assets(interface, package.files.get)
    records = Records.from_table(_read_table(path), interface, assets.bounds)
    params = ScenarioParams(
        count=sc["count"], seed=sc["seed"], a=sc["a"], sigma=sc["sigma"], include_base=sc["include_base"]
    )
    threads = args.threads or os.cpu_count() or 1
    demo.say(f"local     {dataset_id}: {len(records):,} policies × {sc['count']:,} scenarios, {threads} thread(s)")
    started = time.monotonic()
    with WasmPool(Runtime(), threads=threads) as pool:
        run = PipelineRunner(pool).run(package.config["pipeline"], RunInputs(interface, records, assets, params))
    elapsed = time.monotonic() - started
    outputs = run.outputs
    values = np.stack([fold(run.partials[:, k, :]) for k in range(len(outputs.names))])  # the declared order
    # the result a gateway would send for this run (no steps counted, no dataset version)
    result = final_result(
        values,
        outputs,
        policy_count=len(records),
        dataset_version="",
        package_hash=package.package_hash,
        steps=0,
        elapsed_seconds=elapsed,
    )
    demo.say()
    for line in result_lines(result, title=f"local: {package.config.get('name')} on {dataset_id}"):
        if not line.startswith(("steps", "-")):
            demo.say(line)
    return 0


def run_mesh_demo(args: argparse.Namespace, demo: Demo, data_dir: Path) -> int:
    say = demo.say
    product = demo.product
    dataset_id, _ = ensure_dataset(data_dir, args.rows, say, product)
    archive = ensure_package(data_dir, say, product)
    sc = scenario_settings(archive, args.scenarios)
    out_dir = Path(args.out_dir).resolve() if args.out_dir else data_dir / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    logs = data_dir / "logs"
    logs.mkdir(exist_ok=True)
    log_path = logs / f"mesh-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.log"
    plan, env = mesh_plan(data_dir, args.engines, args.port_offset)
    gateway = f"127.0.0.1:{DEFAULT_PORTS['gateway'][0] + args.port_offset}"
    data = f"127.0.0.1:{DEFAULT_PORTS['data'][0] + args.port_offset}"
    children: list[Child] = []
    started = time.monotonic()

    def interrupted() -> None:
        say("interrupted: stopping the mesh")
        stop_children(children)

    with log_path.open("w", encoding="utf-8") as log, stopping_on_signals(interrupted) as stopping:
        try:
            start_children(plan, env, children, sink=log, stop=stopping)
            services = ", ".join(f"{c.label} {c.address}" for c in children)
            say(f"mesh      up in {time.monotonic() - started:.1f} s: {services}")
            say(f"          service logs: {log_path}")
            with Client(gateway, data=data, timeout=60) as lc:
                reply = lc.upload_package_bytes(archive)
                p = reply.package
                state = "already stored" if reply.already_existed else "uploaded"
                say(f"package   {p.name} {p.version} {state}: {p.package_hash}")
                for line in _dataset_lines(lc.get_dataset(dataset_id)):
                    say(line)
                say()
                preview_rows = min(args.preview, args.rows)
                say(f"Preview: a seeded sample of {preview_rows:,} policies, {sc['count']:,} scenarios")
                _, preview = demo.job(lc, _spec(p.package_hash, dataset_id, sc, preview_rows), "preview")
                say(f"preview   {preview_interval(preview)}")
                say(f"          {preview_rows:,} policies scaled to {args.rows:,}, in {preview.elapsed_seconds:.2f} s")
                say()
                say(f"Full run: {args.rows:,} policies × {sc['count']:,} scenarios")
                job_id, full = demo.job(lc, _spec(p.package_hash, dataset_id, sc, None), "full run")
                say()
                for line in result_lines(full, title=f"{p.name} on {dataset_id}"):
                    say(line)
                say()
                say(preview_comparison(preview, full))
                doc = result_document(
                    full, job_id=job_id, dataset_id=dataset_id, preview=preview, spec=lc.get_job(job_id).spec
                )
                results = out_dir / "results.json"
                results.write_text(json_text(doc))
                plot = out_dir / "distribution.png"
                write_plot(full, plot, title=plot_title(full, p.name, dataset_id))
                say(f"wrote     {results}")
                say(f"wrote     {plot}")
        except Exception:
            if not stopping.is_set():
                raise
            # the calls in flight failed because the mesh is stopping on the signal
        finally:
            stop_children(children)
    say("mesh      stopped")
    return EXIT_INTERRUPTED if stopping.is_set() else 0


def cmd_run(args: argparse.Namespace) -> int:
    data_dir = data_dir_of(args.data_dir)
    product = DEMO_MODELS[args.model]
    if (args.package is None) != (args.dataset is None):
        raise InvalidArgument("--package and --dataset go together (run --local --package P --dataset D)")
    if args.package is not None and not args.local:
        raise InvalidArgument("--package P --dataset D run with --local; on a mesh: livecalc submit --package P")
    for name in ("rows", "scenarios", "preview"):  # the product's default sizes
        if getattr(args, name) is None and args.package is None:
            setattr(args, name, getattr(product, name))
    demo = Demo(args)
    if args.local:
        return run_local(args, demo, data_dir)
    return run_mesh_demo(args, demo, data_dir)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `livecalc run` (the demo job) to the top-level parser."""
    p = sub.add_parser("run", help="the demo: start the mesh, value the sample portfolio, print and plot the results")
    p.add_argument("--data-dir", help="datasets, packages, jobs, logs and results (env LIVECALC_DATA_DIR; ./.livecalc)")
    p.add_argument(
        "--model",
        choices=tuple(DEMO_MODELS),
        default="term_life",
        help="the product: term_life (default; esg → term_life) or savings (lifelib's CashValue_ME; normals → savings)",
    )
    p.add_argument("--rows", type=int, help="policies in the sample dataset (default 100,000; savings 10,000)")
    p.add_argument("--scenarios", type=int, help="scenarios of the valuation (default 1,000)")
    p.add_argument("--preview", type=int, help="policies in the preview's sample (default 10,000; savings 1,000)")
    p.add_argument("--engines", type=int, default=1, help="engine processes (default 1)")
    p.add_argument("--port-offset", type=int, default=0, help="added to every default port")
    p.add_argument(
        "--out-dir",
        help="where results.json and distribution.png (the primary output's plot) go (default DATA_DIR/results)",
    )
    p.add_argument("--local", action="store_true", help="run the full job in this process, without services")
    p.add_argument("--threads", type=int, default=0, help="--local: worker threads (default: the CPU count)")
    p.add_argument(
        "--package",
        metavar="DIR|FILE",
        help="--local: value this package (a directory, built first, or an archive) instead of the reference",
    )
    p.add_argument(
        "--dataset",
        metavar="FILE|ID",
        help="--local with --package: the policies, a .csv or .parquet file or a dataset id under DATA_DIR/datasets",
    )
    p.set_defaults(func=cmd_run)
