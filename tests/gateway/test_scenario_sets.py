"""Scenario sets as data, end to end (the data service, engine and gateway servicers on loopback in
this process, tests.inprocess; the tenants' mesh with auth on as real processes).

The round trip: the rates the mesh's generator makes for a job (the wasm esg run in this
process with the parameters the gateway recorded), written to a CSV with exact float text and
uploaded, give a job with the generator's result hash. Refusals: a set with fewer scenarios
than asked, without the declared input's column, with a row count that is not S·M, an unknown
set or version (at submit); a NaN, a missing month, too few months for the policies (the job
fails at once, naming the row). With auth on, a set is its tenant's, like a policy dataset.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pyarrow as pa
import pytest

from livecalc.engine.v1 import engine_pb2
from livecalc.gateway.v1 import job_pb2
from services.client.sync import Client
from services.engine.layout import LayoutBuilder
from services.engine.runtime import Runtime
from services.engine.wasm_nodes import run_generator
from services.engine.workers import RunControl, WasmPool
from services.valuation.blocks import BLOCK_SIZE
from services.valuation.interface.parser import interface_of
from services.valuation.interface.records import Records
from services.valuation.interface.tables import load_assets
from services.valuation.packages.package import verify_archive
from services.valuation.reference_model import shipped_models
from services.valuation.scenarios import ScenarioParams
from tests.client.clitools import livecalc_in_process
from tests.engine.mesh import datasets_dir, policies_csv, stochastic_package, upload_package
from tests.gateway.jobmesh import get_job, spec, submit
from tests.inprocess import threaded_mesh
from tests.security.authmesh import SCENARIOS as AUTH_SCENARIOS
from tests.security.authmesh import start_auth_mesh

pytestmark = pytest.mark.timeout(180)

ROWS = 2 * BLOCK_SIZE - 100
N = 19  # the job's scenarios
SET_S = 24  # the good set's: the job uses its first N
EXTRA_MONTHS = 5  # the set has more months than the policies need


@dataclass
class Mesh:
    gateway: str
    package_hash: str
    horizon: int
    months: int
    versions: dict[str, str]
    generated: dict[int, str]  # the generator's result hash by scenario count


def generator_rates(params: ScenarioParams, months: int) -> np.ndarray:
    """f64 [count][months]: the wasm esg's rates, as an engine's generator node makes them."""
    with WasmPool(Runtime(), threads=1) as pool, pool.lease() as lease:
        lease.load("esg", shipped_models()["esg"])
        alloc = LayoutBuilder(lease.memory.run_base)
        (buffer,) = run_generator(lease, "esg", alloc, params, months, control=RunControl()).values()
        return np.array(lease.memory.view(buffer.region, np.float64, (buffer.n_scen, months)))


def write_rows(path: Path, rows: list[tuple[int, int, float]], column: str = "rates") -> Path:
    """A scenario set CSV: scenario, month and the value as repr text (exact)."""
    path.write_text("\n".join([f"scenario,month,{column}", *(f"{s},{m},{v!r}" for s, m, v in rows)]) + "\n")
    return path


def set_rows(rates: np.ndarray) -> list[tuple[int, int, float]]:
    """Rows by scenario then month, every scenario with months 0..M−1."""
    m = rates.shape[1]
    return [(i // m, i % m, float(v)) for i, v in enumerate(rates.ravel())]


def horizon_of(archive: bytes, table: pa.Table) -> int:
    package = verify_archive(archive)
    interface = interface_of(package.config)
    return Records.from_table(table, interface, load_assets(interface, package.files.get).bounds).horizon_months


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    tmp = tmp_path_factory.mktemp("scenario-sets")
    root = datasets_dir(tmp)
    table = policies_csv(root / "pol.csv", ROWS)
    archive = stochastic_package(tmp / "model")
    horizon = horizon_of(archive, table)
    months = horizon + EXTRA_MONTHS
    with threaded_mesh(tmp, datasets=root, slots=2) as served:
        gateway = served.gateway
        package_hash = upload_package(gateway, archive)
        generated = {}
        recorded = None
        for count in (N, SET_S):
            events = submit(gateway, spec(package_hash, "pol", count, chunk_blocks=1))
            assert events[-1].WhichOneof("event") == "result", events[-1]
            generated[count] = events[-1].result.result_hash
            recorded = get_job(gateway, events[0].job_id).spec.scenarios  # every generator parameter resolved
        assert recorded is not None
        params = ScenarioParams(
            count=SET_S,
            seed=recorded.seed,
            a=recorded.mean_reversion,
            sigma=recorded.volatility,
            include_base=recorded.include_base,
        )
        rates = generator_rates(params, months)
        assert np.array_equal(generator_rates(params, horizon)[:, :horizon], rates[:, :horizon])  # months: a prefix
        nan = rates.copy()
        nan[3, 7] = np.nan
        good = set_rows(rates)
        # scenario 2 lacks month 5 but has month M: as many rows, out of order from row 2·M + 5
        gap = [r for r in good if r[:2] != (2, 5)]
        gap.insert(3 * months - 1, (2, months, 0.0))
        sets = tmp / "sets"
        sets.mkdir()
        files = [
            write_rows(sets / "good.csv", good),
            write_rows(sets / "few.csv", set_rows(rates[:10])),
            write_rows(sets / "nofactor.csv", good, column="rate"),
            write_rows(sets / "rowcount.csv", good[: 5 * months + 2] + good[5 * months + 3 :]),
            write_rows(sets / "nan.csv", set_rows(nan)),
            write_rows(sets / "gap.csv", gap),
            write_rows(sets / "short.csv", set_rows(rates[:, :12])),
        ]
        with Client(gateway, data=served.data) as lc:
            versions = {f.stem: lc.upload_dataset(f).version for f in files}
        yield Mesh(gateway, package_hash, horizon, months, versions, generated)


def set_spec(mesh: Mesh, dataset_id: str, count: int = N, version: str = "") -> job_pb2.JobSpec:
    scenarios = engine_pb2.ScenarioSpec(count=count, dataset_id=dataset_id, dataset_version=version)
    return job_pb2.JobSpec(package_hash=mesh.package_hash, dataset_id="pol", scenarios=scenarios, chunk_blocks=1)


def test_the_generators_rates_as_a_set_give_the_generators_result(mesh: Mesh) -> None:
    for count in (N, 0):  # 0: every scenario of the set
        events = submit(mesh.gateway, set_spec(mesh, "good", count))
        last = events[-1]
        assert last.WhichOneof("event") == "result", last
        assert last.result.result_hash == mesh.generated[count or SET_S]
        assert last.result.scenario_dataset_id == "good"
        assert last.result.scenario_dataset_version == mesh.versions["good"]
        assert last.result.statistics.scenario_count == (count or SET_S)
        recorded = get_job(mesh.gateway, events[0].job_id).spec.scenarios
        assert (recorded.dataset_id, recorded.dataset_version) == ("good", mesh.versions["good"])
        assert (recorded.count, recorded.months) == (count or SET_S, mesh.months)
    # the version pinned; the generator's seed plays no part
    pinned = set_spec(mesh, "good", version=mesh.versions["good"])
    pinned.scenarios.seed = 12345
    assert submit(mesh.gateway, pinned)[-1].result.result_hash == mesh.generated[N]
    preview = set_spec(mesh, "good")
    preview.preview.CopyFrom(job_pb2.PreviewSpec(sample_rows=300, seed=4))
    last = submit(mesh.gateway, preview)[-1]
    assert last.WhichOneof("event") == "result" and last.result.preview, last
    assert last.result.scenario_dataset_id == "good" and last.result.statistics.scenario_count == N


INVALID, NOT_FOUND, PRECONDITION = (
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
)


@pytest.mark.parametrize(
    ("dataset_id", "version", "code", "message"),
    [
        ("few", "", INVALID, "scenario set few (version {few}) has 10 scenarios; the job asks for 19"),
        ("nofactor", "", INVALID, "scenario set nofactor (version {nofactor}) has no column rates"),
        ("rowcount", "", INVALID, "has {rows} rows and 24 scenarios"),
        ("absent", "", NOT_FOUND, "absent"),
        ("good", "0123abcd", PRECONDITION, "scenario set good is at version {good}; the job asks for 0123abcd"),
    ],
)
def test_refused_at_submit(mesh: Mesh, dataset_id: str, version: str, code: grpc.StatusCode, message: str) -> None:
    with pytest.raises(grpc.RpcError) as info:
        submit(mesh.gateway, set_spec(mesh, dataset_id, version=version))
    error: grpc.Call = info.value  # type: ignore[assignment]
    assert error.code() == code
    assert message.format(rows=SET_S * mesh.months - 1, **mesh.versions) in (error.details() or "")


def test_a_broken_set_fails_the_job_at_once_naming_the_row(mesh: Mesh) -> None:
    m = mesh.months
    cases = {
        "nan": f"scenario set nan: row {3 * m + 7} (scenario 3, month 7): rates is NaN",
        "gap": f"scenario set gap: row {2 * m + 5} (scenario 2, month 6) should be scenario 2, month 5",
        "short": f"scenario set short has 12 months; the policies need {mesh.horizon}",
    }
    for dataset_id, message in cases.items():
        started = time.monotonic()
        events = submit(mesh.gateway, set_spec(mesh, dataset_id))
        last = events[-1]
        assert last.WhichOneof("event") == "error", (dataset_id, last)
        assert last.error.code == "INVALID_ARGUMENT" and message in last.error.message, last.error
        assert "the model failed" not in last.error.message
        assert time.monotonic() - started < 10  # not retried as an engine fault


def test_cli_submits_with_a_scenario_dataset_and_shows_it(mesh: Mesh) -> None:
    common = ["--address", mesh.gateway]
    done = livecalc_in_process("submit", "--package", mesh.package_hash, "--dataset", "pol", "--scenario-dataset",
                               f"good@{mesh.versions['good']}", "--scenarios", str(N), "--json", *common)  # fmt: skip
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)["result"]  # the job document's results document
    assert doc["result_hash"] == mesh.generated[N]
    assert doc["scenario_dataset"] == {"id": "good", "version": mesh.versions["good"]}
    got = livecalc_in_process("jobs", "get", doc["job_id"], *common)
    assert got.returncode == 0, got.stderr
    version = mesh.versions["good"]
    assert f"scenarios first {N} of scenario set good (version {version})" in got.stdout
    assert re.search(rf"^scenario set +good \(version {version}\)$", got.stdout, re.MULTILINE), got.stdout
    seeded = ["--scenario-dataset", "good", "--seed", "3"]
    refused = livecalc_in_process("submit", "--package", mesh.package_hash, "--dataset", "pol", *seeded, *common)
    assert refused.returncode != 0 and "--seed has no effect with --scenario-dataset" in refused.stderr


def test_a_scenario_set_is_its_tenants(tmp_path_factory: pytest.TempPathFactory) -> None:
    """With auth on, the gateway and the engine read the set as the job's tenant: acme's job runs
    on acme's set; globex, naming it, is told it does not exist (as for any dataset of another)."""
    for auth in start_auth_mesh(tmp_path_factory.mktemp("scenario-sets-auth")):
        acme, globex = auth.token("acme", "upload", "submit"), auth.token("globex", "upload", "submit")
        months = horizon_of(auth.archive, auth.table)
        rates = np.linspace(-0.01, 0.01, AUTH_SCENARIOS * months).reshape(AUTH_SCENARIOS, months)
        path = write_rows(auth.tmp / "acme-rates.csv", set_rows(rates))
        with Client(data=auth.data.address, token=acme) as client:
            version = client.upload_dataset(path).version
        package_hash = auth.upload_package(acme)
        job = job_pb2.JobSpec(
            package_hash=package_hash,
            dataset_id="pol",
            scenarios=engine_pb2.ScenarioSpec(count=AUTH_SCENARIOS, dataset_id="acme-rates"),
        )
        last = auth.submit(acme, job)[-1]
        assert last.WhichOneof("event") == "result", last
        assert (last.result.scenario_dataset_id, last.result.scenario_dataset_version) == ("acme-rates", version)
        auth.upload_package(globex)
        with pytest.raises(grpc.RpcError) as info:
            auth.submit(globex, job)
        error: grpc.Call = info.value  # type: ignore[assignment]
        assert error.code() == grpc.StatusCode.NOT_FOUND and "acme-rates" in (error.details() or "")
