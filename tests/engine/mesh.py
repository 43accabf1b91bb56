"""Inputs of the functional tests' meshes (processes, tests.meshes; or in this process,
tests.inprocess): the stochastic reference package, generated policy datasets, uploads and the
in-process pipeline run the meshes' results must match; and RunChunk requests to an engine at
an address, whichever mesh it is in."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import grpc
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from livecalc.data.v1 import data_service_pb2, data_service_pb2_grpc
from livecalc.engine.v1 import engine_pb2, engine_service_pb2, engine_service_pb2_grpc
from livecalc.gateway.v1 import package_service_pb2_grpc
from services.data.generate import generate
from services.engine.pipeline import PipelineResult, PipelineRunner, RunInputs
from services.engine.runtime import Runtime
from services.engine.workers import WasmPool
from services.gateway.cli import upload_requests
from services.valuation.interface.parser import interface_of
from services.valuation.interface.records import Records
from services.valuation.interface.tables import load_assets
from services.valuation.packages.package import build_directory, verify_archive
from services.valuation.packages.reference import init_directory
from services.valuation.scenarios import ScenarioParams
from tests.engine.wasm_helpers import DYN_LAPSE_BETA

SCENARIOS = 19  # not a multiple of the 16 lanes
SEED = 20240601
SIGMA = 0.02


def stochastic_package(root: Path) -> bytes:
    """The reference package with dynamic lapse on (β = 25), as archive bytes."""
    init_directory(root)
    options = root / "assumptions" / "options.json"
    data = json.loads(options.read_text()) if options.exists() else {}
    data["dynamic_lapse"] = {**data.get("dynamic_lapse", {}), "beta": DYN_LAPSE_BETA}
    options.write_text(json.dumps(data, indent=2) + "\n")
    archive, _ = build_directory(root, source_date_epoch=0)
    return archive


def datasets_dir(tmp: Path) -> Path:
    """TMP/datasets, made empty: the folder a mesh's data service serves (`--root`, `datasets=`)."""
    root = tmp / "datasets"
    root.mkdir()
    return root


def upload_package(address: str, archive: bytes, *, metadata: Sequence[tuple[str, str]] = ()) -> str:
    """Upload `archive` to the gateway at `address` (with call `metadata`, e.g. a bearer token); its hash."""
    with grpc.insecure_channel(address) as channel:
        reply = package_service_pb2_grpc.PackageServiceStub(channel).UploadPackage(
            upload_requests(archive), timeout=60, metadata=tuple(metadata)
        )
    return str(reply.package.package_hash)


def in_process_run(archive: bytes, table: pa.Table, count: int) -> PipelineResult:
    """The package's pipeline run in this process on `table` and `count` scenarios (docs/model.md's reference order):
    the rows checked and laid out by the package's own declaration, its tables and parameters from its files."""
    package = verify_archive(archive)
    interface = interface_of(package.config)
    assets = load_assets(interface, package.files.get)
    parameters = dict(zip((p.name for p in interface.parameters), assets.parameters, strict=True))
    assert parameters["dyn_lapse_beta"] == DYN_LAPSE_BETA
    records = Records.from_table(table, interface, assets.bounds)
    inputs = RunInputs(interface, records, assets, ScenarioParams(count=count, seed=SEED, sigma=SIGMA))
    with WasmPool(Runtime(), threads=2) as pool:
        return PipelineRunner(pool).run(package.config["pipeline"], inputs)


def in_process_hash(archive: bytes, table: pa.Table, count: int) -> str:
    """The result hash every mesh must give for the same package, policies and scenarios."""
    return in_process_run(archive, table, count).result_hash


def policies_csv(path: Path, rows: int, seed: int = 11, bad_row: int | None = None) -> pa.Table:
    """A generated policy dataset (optionally with one row whose age_at_entry is 200)."""
    generate(path, rows, seed)
    table = pacsv.read_csv(path)
    if bad_row is not None:
        ages = table.column("age_at_entry").to_numpy().copy()
        ages[bad_row] = 200
        table = table.set_column(table.schema.get_field_index("age_at_entry"), "age_at_entry", pa.array(ages))
        pacsv.write_csv(table, path)
    return table


def dataset_version(address: str, dataset_id: str) -> str:
    with grpc.insecure_channel(address) as channel:
        stub = data_service_pb2_grpc.DataServiceStub(channel)
        got = stub.GetDataset(data_service_pb2.GetDatasetRequest(dataset_id=dataset_id), timeout=30)
    return str(got.dataset.version)


def chunk_request(
    package_hash: str,
    gateway: str,
    dataset_id: str,
    version: str,
    *,
    first_block: int = 0,
    block_count: int = 1,
    scenarios: int = SCENARIOS,
    sample: tuple[int, int] | None = None,
) -> engine_service_pb2.RunChunkRequest:
    request = engine_service_pb2.RunChunkRequest(
        job_id="test",
        chunk_id=1,
        package_hash=package_hash,
        package_address=gateway,
        dataset_id=dataset_id,
        dataset_version=version,
        scenarios=engine_pb2.ScenarioSpec(count=scenarios, seed=SEED, volatility=SIGMA),
    )
    if sample is not None:
        request.sample.CopyFrom(engine_pb2.SampleSelection(n=sample[0], seed=sample[1]))
    else:
        request.blocks.CopyFrom(engine_pb2.BlockRange(first_block=first_block, block_count=block_count))
    return request


def run_chunk(engine: str, request: engine_service_pb2.RunChunkRequest) -> list[engine_service_pb2.RunChunkResponse]:
    with grpc.insecure_channel(engine) as channel:
        call = engine_service_pb2_grpc.EngineServiceStub(channel).RunChunk(request, timeout=120)
        try:
            return list(call)
        finally:
            call.cancel()


def partial_values(partial: engine_pb2.BlockPartial) -> np.ndarray:
    """f64 [K][n]: the partial's K outputs in the package's declared order."""
    return np.array(partial.values, dtype=np.float64).reshape(partial.output_count, -1)


def events(responses: list[engine_service_pb2.RunChunkResponse], kind: str) -> Iterator[object]:
    return (getattr(r, kind) for r in responses if r.WhichOneof("event") == kind)
