"""Results an actuary can keep: provenance in every result, exports, compare, replay, job metrics.

One in-process mesh (tests.inprocess: a data service, two engines, a gateway on loopback in this
process) and the `livecalc` commands run by the console script's own `main`:

- a job's provenance names its package (name, version, hash), dataset and version, the resolved
  scenarios, the engines that computed it (the versions their GetCapabilities answer) and the
  model ABI, the gateway's version, and times in order; `jobs get` prints it;
- `--out` writes .json, .csv and .parquet by suffix, and what pandas and pyarrow read back is the
  job's values bit for bit (the Parquet schema carries the provenance); another suffix is refused;
- `jobs compare` of two jobs on other seeds warns naming the seed, and its exports read back;
- `submit --replay` of a results file gives the same hash, and refuses a dataset that changed
  since, a package that is not stored and a file that is not a results file, saying which;
- the gateway's job metrics after those jobs, and its exposition passes promtool.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pandas as pd
import pyarrow.parquet as pq
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from livecalc.engine.v1 import engine_service_pb2, engine_service_pb2_grpc
from livecalc.gateway.v1 import job_pb2
from services.common.version import mesh_version
from services.gateway.metrics import end_reason
from services.valuation.blocks import BLOCK_SIZE
from tests.client.clitools import livecalc_in_process
from tests.engine.mesh import dataset_version, datasets_dir, policies_csv, stochastic_package, upload_package
from tests.gateway.jobmesh import get_job
from tests.inprocess import InProcessMesh, threaded_mesh

pytestmark = pytest.mark.timeout(180)

ROWS = 2 * BLOCK_SIZE + 300  # three blocks
SCENARIOS = 8


@dataclass
class Mesh:
    served: InProcessMesh
    root: Path
    tmp: Path
    package_hash: str
    #: Results files of two jobs on seeds 7 and 8 (`submit --out`), and their job ids.
    a: Path
    b: Path
    job_a: str
    job_b: str

    def cli(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return livecalc_in_process(*argv, "--address", self.served.gateway)


def submit(mesh_gateway: str, package_hash: str, dataset: str, seed: int, out: Path) -> str:
    """`livecalc submit` of a 3-block job (one block a chunk) writing its results to `out`; the job id."""
    done = livecalc_in_process(
        "submit",
        "--package",
        package_hash,
        "--dataset",
        dataset,
        "--scenarios",
        str(SCENARIOS),
        "--seed",
        str(seed),
        "--chunk-blocks",
        "1",
        "--out",
        str(out),
        "--json",
        "--address",
        mesh_gateway,
    )
    assert done.returncode == 0, done.stderr
    return str(json.loads(done.stdout)["job_id"])


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    tmp = tmp_path_factory.mktemp("results")
    root = datasets_dir(tmp)
    policies_csv(root / "pol.csv", ROWS)
    archive = stochastic_package(tmp / "model")
    with threaded_mesh(tmp, datasets=root, engines=2) as served:
        package_hash = upload_package(served.gateway, archive)
        a, b = tmp / "a.json", tmp / "b.json"
        job_a = submit(served.gateway, package_hash, "pol", 7, a)
        job_b = submit(served.gateway, package_hash, "pol", 8, b)
        yield Mesh(served, root, tmp, package_hash, a, b, job_a, job_b)


def capabilities(address: str) -> engine_service_pb2.GetCapabilitiesResponse:
    with grpc.insecure_channel(address) as channel:
        return engine_service_pb2_grpc.EngineServiceStub(channel).GetCapabilities(
            engine_service_pb2.GetCapabilitiesRequest(), timeout=10
        )


def job_values(job: job_pb2.Job) -> dict[str, list[float]]:
    return {o.name: list(o.values) for o in job.result.outputs}


def test_provenance_names_the_inputs_engines_and_times(mesh: Mesh) -> None:
    job = get_job(mesh.served.gateway, mesh.job_a)
    p = job.result.provenance
    with mesh.served.client() as lc:
        package = lc.get_package(mesh.package_hash)
    caps = [capabilities(e) for e in mesh.served.engines]

    assert (p.package_hash, p.dataset_id) == (mesh.package_hash, "pol")
    assert (p.package_name, p.package_version) == (package.name, package.version) != ("", "")
    assert p.dataset_version == dataset_version(mesh.served.data, "pol") == job.result.dataset_version
    assert p.scenarios == job.spec.scenarios  # resolved at submit: every generator parameter set
    assert (p.scenarios.count, p.scenarios.seed) == (SCENARIOS, 7)
    assert p.scenarios.HasField("mean_reversion") and p.scenarios.HasField("volatility")
    assert list(p.engine_versions) == sorted({c.engine_version for c in caps})
    assert p.model_abi_version == caps[0].abi_version > 0
    assert p.gateway_version == mesh_version()
    assert not p.HasField("preview")
    submitted, finished = p.submit_time.ToNanoseconds(), p.finish_time.ToNanoseconds()
    assert submitted == job.create_time.ToNanoseconds()
    assert submitted <= job.start_time.ToNanoseconds() <= finished == job.end_time.ToNanoseconds()

    shown = mesh.cli("jobs", "get", mesh.job_a)
    assert shown.returncode == 0, shown.stderr
    assert f"package    {p.package_name} {p.package_version} ({mesh.package_hash})" in shown.stdout
    assert f"seed 7, a {p.scenarios.mean_reversion:g}" in shown.stdout
    assert f"engines    {p.engine_versions[0]}" in shown.stdout

    doc = json.loads(mesh.a.read_text())  # the results file carries the provenance and the spec
    assert doc["provenance"]["package_hash"] == mesh.package_hash
    assert doc["provenance"]["scenarios"]["seed"] == 7
    assert doc["spec"]["scenarios"] == doc["provenance"]["scenarios"]
    assert doc["spec"]["chunk_blocks"] == 1


def test_exports_read_back_as_the_jobs_values(mesh: Mesh) -> None:
    job = get_job(mesh.served.gateway, mesh.job_a)
    expected = job_values(job)
    assert len(expected) > 1 and all(len(v) == SCENARIOS for v in expected.values())
    csv_path, parquet_path, json_path = (mesh.tmp / f"export.{s}" for s in ("csv", "parquet", "json"))
    for path in (csv_path, parquet_path, json_path):
        done = mesh.cli("jobs", "get", mesh.job_a, "--out", str(path))
        assert done.returncode == 0, done.stderr
        assert f"wrote {path}" in done.stdout

    frame = pd.read_csv(csv_path)
    assert list(frame.columns) == ["scenario", *expected]
    assert frame["scenario"].tolist() == list(range(SCENARIOS))
    for name, values in expected.items():
        assert frame[name].tolist() == values  # bit for bit: repr text round-trips

    table = pq.read_table(parquet_path)
    assert table.column_names == ["scenario", *expected]
    for name, values in expected.items():
        assert table.column(name).to_pylist() == values
    meta = {k.decode(): json.loads(v) for k, v in (table.schema.metadata or {}).items() if k.startswith(b"livecalc.")}
    written = json.loads(json_path.read_text())
    assert meta["livecalc.provenance"] == written["provenance"]
    assert meta["livecalc.result_hash"] == job.result.result_hash
    assert meta["livecalc.spec"]["scenarios"]["seed"] == 7
    assert {o["name"]: o["values"] for o in written["outputs"]} == expected

    refused = mesh.cli("jobs", "get", mesh.job_a, "--out", str(mesh.tmp / "export.xlsx"))
    assert refused.returncode == 1
    assert "--out" in refused.stderr and ".csv or .parquet" in refused.stderr and ".xlsx" in refused.stderr


def test_compare_two_seeds_warns_and_exports(mesh: Mesh) -> None:
    done = mesh.cli("jobs", "compare", mesh.job_a, str(mesh.b), "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["hash_equal"] is False
    assert doc["warnings"] == ["scenarios differ: seed 7 vs 8"]
    a, b = get_job(mesh.served.gateway, mesh.job_a).result, get_job(mesh.served.gateway, mesh.job_b).result
    rows = {(r["output"], r["statistic"]): r for r in doc["statistics"]}
    for oa, ob in zip(a.outputs, b.outputs, strict=True):
        mean = rows[(oa.name, "mean")]
        assert (mean["a"], mean["b"]) == (oa.statistics.mean, ob.statistics.mean)
        assert mean["difference"] == ob.statistics.mean - oa.statistics.mean
        assert mean["relative_difference"] == pytest.approx(
            (ob.statistics.mean - oa.statistics.mean) / abs(oa.statistics.mean)
        )
        cte = oa.statistics.ctes[-1]
        assert rows[(oa.name, f"CTE{cte.level:g}")]["a"] == cte.value
        assert rows[(oa.name, "P99.5")]["b"] == ob.statistics.percentiles[-1].value

    text = mesh.cli("jobs", "compare", mesh.job_a, mesh.job_b)
    assert "result hashes differ" in text.stdout and "warning: scenarios differ: seed 7 vs 8" in text.stdout

    same = json.loads(mesh.cli("jobs", "compare", str(mesh.a), mesh.job_a, "--json").stdout)
    assert same["hash_equal"] is True and same["warnings"] == []
    assert all(r["difference"] == 0.0 for r in same["statistics"])

    csv_path, parquet_path = mesh.tmp / "cmp.csv", mesh.tmp / "cmp.parquet"
    for path in (csv_path, parquet_path):
        assert mesh.cli("jobs", "compare", mesh.job_a, mesh.job_b, "--out", str(path)).returncode == 0
    frame = pd.read_csv(csv_path)
    assert list(frame.columns) == ["output", "statistic", "a", "b", "difference", "relative_difference"]
    assert frame["b"].tolist() == [r["b"] for r in doc["statistics"]]
    table = pq.read_table(parquet_path)
    assert table.column("difference").to_pylist() == [r["difference"] for r in doc["statistics"]]
    assert json.loads(table.schema.metadata[b"livecalc.warnings"]) == doc["warnings"]


def test_replay_gives_the_same_hash(mesh: Mesh) -> None:
    done = mesh.cli("submit", "--replay", str(mesh.a))
    assert done.returncode == 0, done.stderr
    recorded = json.loads(mesh.a.read_text())["result_hash"]
    assert f"replayed: hash equal ({recorded})" in done.stdout

    # a file without the spec (written by an older client) replays from its provenance alone
    slim = {k: v for k, v in json.loads(mesh.b.read_text()).items() if k != "spec"}
    slim_path = mesh.tmp / "b-no-spec.json"
    slim_path.write_text(json.dumps(slim))
    again = mesh.cli("submit", "--replay", str(slim_path), "--json")
    assert again.returncode == 0, again.stderr
    assert "replayed: hash equal" in again.stderr
    assert json.loads(again.stdout)["result"]["result_hash"] == slim["result_hash"]


def test_replay_refuses_what_cannot_give_the_same_result(mesh: Mesh) -> None:
    policies_csv(mesh.root / "moving.csv", BLOCK_SIZE + 10)
    recorded = mesh.tmp / "moving.json"
    submit(mesh.served.gateway, mesh.package_hash, "moving", 3, recorded)
    was = json.loads(recorded.read_text())["provenance"]["dataset_version"]
    policies_csv(mesh.root / "moving.csv", BLOCK_SIZE + 11, seed=12)  # the dataset changes since
    now = dataset_version(mesh.served.data, "moving")
    assert now != was
    refused = mesh.cli("submit", "--replay", str(recorded))
    assert refused.returncode == 1
    assert f"dataset moving changed since {recorded} was computed: recorded version {was}, current version {now}" in (
        refused.stderr
    )

    gone = json.loads(mesh.a.read_text())
    gone["spec"]["package_hash"] = gone["provenance"]["package_hash"] = "0" * 64
    gone_path = mesh.tmp / "gone.json"
    gone_path.write_text(json.dumps(gone))
    refused = mesh.cli("submit", "--replay", str(gone_path))
    assert refused.returncode == 1
    assert f"({'0' * 64}) is no longer stored on the gateway" in refused.stderr
    assert gone["provenance"]["package_name"] in refused.stderr

    not_results = mesh.tmp / "not-results.json"
    not_results.write_text(json.dumps({"jobs": []}))
    refused = mesh.cli("submit", "--replay", str(not_results))
    assert refused.returncode == 1
    assert f"{not_results} is not a results file: it has no result_hash and no outputs" in refused.stderr

    refused = mesh.cli("submit", "--replay", str(mesh.a), "--seed", "9")
    assert refused.returncode == 1 and "drop --seed" in refused.stderr


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


def test_job_metrics_after_jobs(mesh: Mesh) -> None:
    text = generate_latest(mesh.served.registries[mesh.served.gateway]).decode()
    succeeded = [
        j for j in json.loads(mesh.cli("jobs", "list", "--json").stdout)["jobs"] if j["state"] == "JOB_STATE_SUCCEEDED"
    ]
    ended = samples(text, "livecalc_gateway_jobs_ended_total")
    assert ended[(("reason", "OK"), ("state", "succeeded"))] == len(succeeded) >= 2
    durations = samples(text, "livecalc_gateway_job_duration_seconds_count")
    assert durations[(("state", "succeeded"),)] == len(succeeded)
    assert samples(text, "livecalc_gateway_job_duration_seconds_sum")[(("state", "succeeded"),)] > 0
    # the base and each variant value every policy
    policies = sum(int(j["result"]["policy_count"]) * (1 + len(j["result"].get("variants", []))) for j in succeeded)
    assert samples(text, "livecalc_gateway_policies_valued_total")[()] == policies
    if shutil.which("promtool"):
        lint = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, check=False)
        assert "livecalc_gateway_job" not in lint.stdout + lint.stderr, lint.stdout + lint.stderr


@pytest.mark.parametrize(
    ("state", "code", "reason"),
    [
        (job_pb2.JOB_STATE_SUCCEEDED, "", "OK"),
        (job_pb2.JOB_STATE_CANCELLED, "", "Canceled"),
        (job_pb2.JOB_STATE_FAILED, "INVALID_ARGUMENT", "InvalidArgument"),
        (job_pb2.JOB_STATE_FAILED, "UNAVAILABLE", "Unavailable"),
        (job_pb2.JOB_STATE_FAILED, "no such code", "Unknown"),
    ],
)
def test_end_reason_is_a_bounded_status_label(state: Any, code: str, reason: str) -> None:
    assert end_reason(job_pb2.Job(state=state, error=job_pb2.JobError(code=code))) == reason


def test_replay_of_a_variant_job_checks_each_variants_hash(mesh: Mesh) -> None:
    out = mesh.tmp / "variants.json"
    done = mesh.cli(
        "submit",
        "--package",
        mesh.package_hash,
        "--dataset",
        "pol",
        "--scenarios",
        "4",
        "--variant",
        "lapse_down: table.lapse*0.5",
        "--out",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    recorded = json.loads(out.read_text())
    assert [v["name"] for v in recorded["spec"]["variants"]] == ["lapse_down"]
    assert mesh.cli("submit", "--replay", str(out)).stdout.splitlines()[-1].startswith("replayed: hash equal")

    recorded["variants"][0]["result_hash"] = "f" * 64  # a recorded variant the replay does not reproduce
    tampered = mesh.tmp / "variants-tampered.json"
    tampered.write_text(json.dumps(recorded))
    differs = mesh.cli("submit", "--replay", str(tampered))
    assert differs.returncode == 1
    assert f"replayed: base hash equal, variants differ: variant lapse_down: recorded {'f' * 64}, replay " in (
        differs.stdout
    )


def test_provenance_survives_a_gateway_restart(tmp_path: Path) -> None:
    root = datasets_dir(tmp_path)
    policies_csv(root / "pol.csv", BLOCK_SIZE)
    archive = stochastic_package(tmp_path / "model")
    with threaded_mesh(tmp_path, datasets=root) as first:
        package_hash = upload_package(first.gateway, archive)
        job_id = submit(first.gateway, package_hash, "pol", 5, tmp_path / "r.json")
        before = get_job(first.gateway, job_id).result.provenance
    assert before.package_hash == package_hash and before.engine_versions
    with threaded_mesh(tmp_path, datasets=root) as second:  # a new gateway on the same job store
        assert get_job(second.gateway, job_id).result.provenance == before


def test_a_previews_provenance_names_its_sample_and_replays(mesh: Mesh) -> None:
    out = mesh.tmp / "preview.json"
    done = mesh.cli(
        "submit", "--package", mesh.package_hash, "--dataset", "pol", "--preview", "500", "--sample-seed", "4",
        "--out", str(out), "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    p = get_job(mesh.served.gateway, json.loads(done.stdout)["job_id"]).result.provenance
    assert (p.preview.sample_rows, p.preview.seed) == (500, 4)
    assert p.engine_versions and p.model_abi_version > 0
    replayed = mesh.cli("submit", "--replay", str(out))
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout.splitlines()[-1] == f"replayed: hash equal ({json.loads(out.read_text())['result_hash']})"
