"""The savings product (lifelib savings CashValue_ME, normals → savings) through a mesh: issue 18's
"the same result hash for 1 and 3 engines and two chunk sizes through the mesh".

One data service over generated savings policies (six blocks, the last partial), three engines, and
two gateways: one over the first engine, one over all three — the real servicers on loopback gRPC
in this process (tests.inprocess); what separate processes add is the fault suites' subject. The
savings reference package is built from `package init --model savings`'s directory and uploaded
to both. The same job (30 scenarios, not
a multiple of the model's 8 scenarios per vector group) runs with 1 and with 4 blocks a chunk
(6 and 2 chunks) on each gateway: all four results equal the package's pipeline run in this process
(its own declaration, assets and WASM binaries), every one of the nine declared outputs bit for bit,
and with three engines more than one of them computed chunks.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from livecalc.engine.v1 import engine_pb2
from livecalc.gateway.v1 import job_pb2
from services.data.generate import generate
from services.engine.pipeline import PipelineResult, PipelineRunner, RunInputs
from services.engine.runtime import Runtime
from services.engine.workers import WasmPool
from services.gateway.inputs import scenario_params
from services.valuation.blocks import BLOCK_SIZE
from services.valuation.interface.parser import interface_of
from services.valuation.interface.records import Records
from services.valuation.interface.tables import load_assets
from services.valuation.packages.package import build_directory, verify_archive
from services.valuation.packages.reference import init_directory
from services.valuation.reference_model import savings_declaration
from services.valuation.statistics import result_hash
from tests.engine.mesh import datasets_dir, upload_package
from tests.gateway.jobmesh import primary, submit
from tests.inprocess import InProcessMesh, threaded_mesh

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

BLOCKS = 6
ROWS = BLOCKS * BLOCK_SIZE - 150  # the last block partial
SEED = 18
SCENARIOS = 30
CHUNK_BLOCKS = (1, 4)  # 6 chunks of one block; chunks of 4 and 2 blocks
OUTPUTS = [o["name"] for o in savings_declaration()["outputs"]]
STEPS = "livecalc_engine_steps_total"


@dataclass
class Mesh:
    served: InProcessMesh
    gateways: dict[int, str]  # addresses, by engine count
    package_hash: str
    expected: PipelineResult


def in_process_run(archive: bytes, path: Path) -> PipelineResult:
    """The job run in this process: the rows checked and laid out by the package's own declaration, its
    tables and parameters from its files, its scenarios as the gateway resolves them from the job's spec
    and the package's configuration, its pipeline on its own WASM binaries."""
    package = verify_archive(archive)
    interface = interface_of(package.config)
    assets = load_assets(interface, package.files.get)
    records = Records.from_table(pq.read_table(path), interface, assets.bounds)
    assert len(records) == ROWS
    params = scenario_params(engine_pb2.ScenarioSpec(count=SCENARIOS), package.config["scenarios"])
    wasm = {p.removeprefix("wasm/").removesuffix(".wasm"): b for p, b in package.files.items() if p.startswith("wasm/")}
    assert set(wasm) == {"normals", "savings"}
    with WasmPool(Runtime(), threads=2) as pool:
        return PipelineRunner(pool, wasm).run(package.config["pipeline"], RunInputs(interface, records, assets, params))


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    tmp = tmp_path_factory.mktemp("savings")
    root = datasets_dir(tmp)
    generate(root / "savings.parquet", ROWS, SEED, model="savings")
    init_directory(tmp / "package", model="savings")
    archive, package = build_directory(tmp / "package", source_date_epoch=0)
    assert package.config["model"] == "savings" and not package.warnings
    expected = in_process_run(archive, root / "savings.parquet")
    with threaded_mesh(tmp, datasets=root, engines=3, gateways=[[0], [0, 1, 2]]) as served:
        gateways = dict(zip((1, 3), served.gateways, strict=True))
        package_hash = ""
        for gateway in gateways.values():
            package_hash = upload_package(gateway, archive)
        yield Mesh(served, gateways, package_hash, expected)


def job(package_hash: str, chunk_blocks: int) -> job_pb2.JobSpec:
    """30 scenarios, the package's seed and include_base (the spec sets only the count)."""
    scenarios = engine_pb2.ScenarioSpec(count=SCENARIOS)
    return job_pb2.JobSpec(
        package_hash=package_hash, dataset_id="savings", scenarios=scenarios, chunk_blocks=chunk_blocks
    )


def test_same_hash_for_1_and_3_engines_and_two_chunk_sizes(mesh: Mesh) -> None:
    expected = mesh.expected
    assert list(expected.outputs.names) == OUTPUTS and OUTPUTS[expected.outputs.primary] == "net_cf"
    assert expected.partials.shape == (BLOCKS, len(OUTPUTS), SCENARIOS)
    hashes: dict[tuple[int, int], str] = {}
    totals: dict[int, float] = {}
    for n in (3, 1):  # three engines first: the steps each engine computed for them alone
        engines = mesh.served.engines
        before = [mesh.served.metric(e, STEPS) for e in engines]
        for chunk_blocks in CHUNK_BLOCKS:
            events = submit(mesh.gateways[n], job(mesh.package_hash, chunk_blocks))
            accepted, last = events[0].accepted, events[-1]
            assert last.WhichOneof("event") == "result", (n, chunk_blocks, last)
            assert accepted.blocks_total == BLOCKS
            assert accepted.chunks_total == math.ceil(BLOCKS / chunk_blocks)
            result = last.result
            hashes[n, chunk_blocks] = result.result_hash
            assert result.policy_count == ROWS and result.package_hash == mesh.package_hash
            # every declared output, in order, net_cf primary, each bit for bit the in-process one
            assert [(o.name, o.primary) for o in result.outputs] == [(name, name == "net_cf") for name in OUTPUTS]
            for o in result.outputs:
                v = np.array(o.values, dtype=np.float64)
                assert v.size == SCENARIOS and np.all(np.isfinite(v)), (n, chunk_blocks, o.name)
                assert np.array_equal(v, expected.portfolio(o.name)), (n, chunk_blocks, o.name)
            assert result_hash(np.array(primary(result).values)) == result.result_hash
        steps = [mesh.served.metric(e, STEPS) - b for e, b in zip(engines, before, strict=True)]
        totals[n] = sum(steps)
        if n == 3:
            assert sum(s > 0 for s in steps) > 1, steps  # more than one engine computed chunks
        else:
            assert steps[0] > 0 and steps[1:] == [0, 0], steps  # the one engine computed them all
    assert set(hashes.values()) == {expected.result_hash}, hashes
    assert totals[3] == totals[1] > 0  # the same work, however it was split
    # the savings outputs carry values: premiums and the account value's change both move
    assert np.all(expected.portfolio("premiums") > 0) and np.any(expected.portfolio("av_change") != 0)
