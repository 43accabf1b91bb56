"""Per-policy detail on demand through a mesh (issue 21 item 1): GetJobDetail recomputes a
finished job's blocks on the engines, and the rows it streams, exported to Parquet or CSV by
`livecalc jobs detail` or read by the Python client, fold to the job's own per-scenario values
bit for bit; GetJobCashFlows' profiles by month discount to the job's PVs, and their mean is
the scenarios' average.

One in-process mesh (tests.inprocess): a data service over 5,000 generated term-life policies
(five blocks, the last partial), two engines and a gateway; one job of 64 scenarios in chunks of
one block, so both engines compute and the detail's blocks arrive out of order. The test folds
the exported rows itself — each block's 1024 rows in row order from +0.0, blocks in block order
— and compares with the job's values of every output, bit for bit.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from livecalc.engine.v1 import engine_pb2
from livecalc.gateway.v1 import job_pb2
from livecalc_client.errors import FailedPrecondition, InvalidArgument, NotFound
from services.data.generate import generate
from services.engine.reference import disc_factors_base
from services.engine.reference_inputs import term_life_arguments
from services.valuation.blocks import BLOCK_SIZE
from services.valuation.interface.parser import interface_of
from services.valuation.interface.records import Records
from services.valuation.interface.tables import load_assets
from services.valuation.packages.package import verify_archive
from tests.client.clitools import livecalc_in_process, png_size
from tests.engine.mesh import datasets_dir, stochastic_package, upload_package
from tests.gateway.jobmesh import get_job, spec, submit
from tests.inprocess import InProcessMesh, threaded_mesh

pytestmark = pytest.mark.timeout(120)

ROWS = 5000
SCENARIOS = 64
CHOSEN = (17, 3, 63)


@dataclass
class Detail:
    mesh: InProcessMesh
    job: job_pb2.Job
    package_hash: str
    archive: bytes
    dataset: Path


@pytest.fixture(scope="module")
def detail(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Detail]:
    tmp = tmp_path_factory.mktemp("detail")
    root = datasets_dir(tmp)
    generate(root / "policies.parquet", ROWS, 21)
    archive = stochastic_package(tmp / "package")
    with threaded_mesh(tmp, datasets=root, engines=2) as mesh:
        package_hash = upload_package(mesh.gateway, archive)
        events = submit(mesh.gateway, spec(package_hash, "policies", SCENARIOS, chunk_blocks=1))
        assert events[-1].WhichOneof("event") == "result", events[-1]
        job = get_job(mesh.gateway, events[0].job_id)
        yield Detail(mesh, job, package_hash, archive, root / "policies.parquet")


def job_values(job: job_pb2.Job) -> dict[str, np.ndarray]:
    return {o.name: np.asarray(o.values, dtype=np.float64) for o in job.result.outputs}


def fold_rows(frame: pd.DataFrame, column: str) -> float:
    """The column's values folded as the job folds them: per block of 1024 rows in row order from
    +0.0, then the block sums in block order from +0.0 (sequential loops, not numpy's pairwise sum)."""
    total = 0.0
    rows = frame["row"].to_numpy()
    values = frame[column].to_numpy()
    for start in range(0, len(values), BLOCK_SIZE):
        assert rows[start] == start  # whole blocks, in row order
        block = 0.0
        for v in values[start : start + BLOCK_SIZE]:
            block += float(v)
        total += block
    return total


def check_folds_to_job(frame: pd.DataFrame, job: job_pb2.Job, scenarios: tuple[int, ...]) -> None:
    values = job_values(job)
    assert len(frame) == ROWS and frame["row"].tolist() == list(range(ROWS))
    for name, per_scenario in values.items():
        for s in scenarios:
            folded = fold_rows(frame, f"{name}_s{s}")
            assert folded.hex() == float(per_scenario[s]).hex(), (name, s)


def test_cli_parquet_and_csv_fold_to_the_job_bit_for_bit(detail: Detail, tmp_path: Path) -> None:
    job_id = detail.job.job_id
    argv = ["jobs", "detail", job_id, "--address", detail.mesh.gateway]
    for s in CHOSEN:
        argv += ["--scenario", str(s)]
    out = livecalc_in_process(*argv, "--out", str(tmp_path / "detail.parquet"))
    assert out.returncode == 0, out.stderr
    assert f"wrote {ROWS:,} rows" in out.stdout and "bit for bit" in out.stdout, out.stdout
    table = pq.read_table(tmp_path / "detail.parquet")
    names = [o.name for o in detail.job.result.outputs]
    assert table.column_names == ["row", "policy_id", *(f"{n}_s{s}" for n in names for s in sorted(CHOSEN))]
    frame = table.to_pandas()
    check_folds_to_job(frame, detail.job, CHOSEN)
    assert frame["policy_id"].is_unique
    assert not (tmp_path / "detail.parquet.partial").exists()

    out = livecalc_in_process(*argv, "--out", str(tmp_path / "detail.csv"))
    assert out.returncode == 0, out.stderr
    from_csv = pacsv.read_csv(tmp_path / "detail.csv").to_pandas()
    # CSV keeps the shortest text that reads back as the same double
    assert from_csv.equals(frame), "the CSV reads back as the Parquet"
    check_folds_to_job(from_csv, detail.job, CHOSEN)


def test_client_dataframe_folds_to_the_job_and_blocks_select_rows(detail: Detail) -> None:
    with detail.mesh.client() as lc:
        frame = lc.job_detail(detail.job.job_id, scenarios=CHOSEN)
        check_folds_to_job(frame, detail.job, CHOSEN)
        base = lc.job_detail(detail.job.job_id)  # the base scenario, 0
        assert [c for c in base.columns if c.startswith("net_cf")] == ["net_cf_s0"]
        part = lc.job_detail(detail.job.job_id, scenarios=[3], blocks=slice(2, 4))
        assert part["row"].tolist() == list(range(2 * BLOCK_SIZE, 4 * BLOCK_SIZE))
        assert part["net_cf_s3"].tolist() == frame["net_cf_s3"].tolist()[2 * BLOCK_SIZE : 4 * BLOCK_SIZE]
        tail = lc.job_detail(detail.job.job_id, scenarios=[3], blocks=slice(4, None))
        assert tail["row"].tolist() == list(range(4 * BLOCK_SIZE, ROWS))


def test_high_scenarios_run_alone_and_fold_to_the_job(detail: Detail) -> None:
    """A detail of [37, 63] runs only that window (its partials start at scenario 37): its rows
    fold to the job bit for bit, and are the rows of a detail that runs from scenario 3."""
    with detail.mesh.client() as lc:
        high = lc.job_detail(detail.job.job_id, scenarios=[37, 63])
        check_folds_to_job(high, detail.job, (37, 63))
        wide = lc.job_detail(detail.job.job_id, scenarios=[3, 63])
        assert high["net_cf_s63"].to_numpy().tobytes() == wide["net_cf_s63"].to_numpy().tobytes()
        # cash flows of a window are those of a run of every scenario (the mean's), bit for bit
        alone = lc.cash_flows(detail.job.job_id, scenarios=[40])
        every = lc.cash_flows(detail.job.job_id, scenarios=[40], mean=True)
    for p, q in zip(alone.profiles, (p for p in every.profiles if p.scenario == 40), strict=True):
        assert p.name == q.name and np.asarray(p.values).tobytes() == np.asarray(q.values).tobytes(), p.name


def test_bad_requests(detail: Detail) -> None:
    job_id = detail.job.job_id
    with detail.mesh.client() as lc:
        with pytest.raises(NotFound):
            lc.job_detail("job-20000101-000000-00000000")
        with pytest.raises(InvalidArgument, match="out of range"):
            lc.job_detail(job_id, scenarios=[SCENARIOS])
        with pytest.raises(InvalidArgument, match="distinct"):
            lc.job_detail(job_id, scenarios=[3, 3])
        with pytest.raises(InvalidArgument):
            lc.job_detail(job_id, blocks=slice(-1, 2))
        with pytest.raises(InvalidArgument, match="past the job's last block"):
            lc.job_detail(job_id, blocks=slice(5, None))
        # a preview, a running and a cancelled job have no detail
        sample = job_pb2.PreviewSpec(sample_rows=100, seed=1)
        preview = submit(detail.mesh.gateway, spec(detail.package_hash, "policies", 8, preview=sample))
        assert preview[-1].WhichOneof("event") == "result"
        with pytest.raises(FailedPrecondition, match="preview"):
            lc.job_detail(preview[0].job_id)
        events = lc.submit(spec(detail.package_hash, "policies", 4000))  # long enough to still run
        long_id = next(events).job_id
        events.close()  # type: ignore[attr-defined]
        with pytest.raises(FailedPrecondition, match=r"queued|running"):
            lc.job_detail(long_id)
        lc.cancel_job(long_id)
        with pytest.raises(FailedPrecondition, match="cancelled"):
            lc.job_detail(long_id)
    out = livecalc_in_process("jobs", "detail", job_id, "--address", detail.mesh.gateway, "--out", "x.xlsx")
    assert out.returncode != 0 and ".parquet or .csv" in out.stderr


def base_discount_factors(archive: bytes, dataset: Path, months: int) -> np.ndarray:
    """DF0(t), t = 0 … months−1, on the package's base curve (scenario 0 has no shock)."""
    package = verify_archive(archive)
    interface = interface_of(package.config)
    assets = load_assets(interface, package.files.get)
    records = Records.from_table(pq.read_table(dataset), interface, assets.bounds)
    _, assumptions = term_life_arguments(records, assets, interface)
    return disc_factors_base(assumptions, months)


def test_cash_flows_discount_to_the_pv_and_the_mean_is_the_scenarios_average(detail: Detail) -> None:
    job_id = detail.job.job_id
    values = job_values(detail.job)
    with detail.mesh.client() as lc:
        first = lc.cash_flows(job_id, scenarios=range(32), mean=True)
        second = lc.cash_flows(job_id, scenarios=range(32, SCENARIOS))
    assert list(first.outputs) == ["premiums", "claims", "expenses", "commissions", "net_cf"]
    assert first.scenario_count == SCENARIOS and first.months == second.months > 0
    profiles = {(p.name, p.scenario): np.asarray(p.values) for p in [*first.profiles, *second.profiles]}
    assert len(profiles) == 5 * (SCENARIOS + 1)
    # scenario 0, the base curve: the profile discounted month by month is the job's PV
    df = base_discount_factors(detail.archive, detail.dataset, first.months)
    for name in first.outputs:
        pv = float(np.dot(profiles[name, 0], df))
        assert pv == pytest.approx(values[name][0], rel=1e-9), name
    # the mean over scenarios, folded like PVs, is the average of the 64 profiles
    for name in first.outputs:
        average = sum(profiles[name, s] for s in range(SCENARIOS)) / SCENARIOS
        assert np.allclose(profiles[name, -1], average, rtol=1e-12, atol=1e-6), name
    # the net cash flow is its components' balance, month by month
    net = profiles["premiums", 5] - profiles["claims", 5] - profiles["expenses", 5] - profiles["commissions", 5]
    assert np.allclose(profiles["net_cf", 5], net, rtol=1e-12, atol=1e-6)


def test_cashflows_cli_writes_csv_json_and_a_plot(detail: Detail, tmp_path: Path) -> None:
    argv = ["jobs", "cashflows", detail.job.job_id, "--address", detail.mesh.gateway, "--scenario", "0", "--mean"]
    out = livecalc_in_process(*argv, "--out", str(tmp_path / "cf.csv"), "--plot", str(tmp_path / "cf.png"))
    assert out.returncode == 0, out.stderr
    frame = pd.read_csv(tmp_path / "cf.csv", index_col="month")
    assert list(frame.columns) == [f"{n}_{s}" for n in ("premiums", "claims", "expenses", "commissions", "net_cf")
                                   for s in ("s0", "mean")]  # fmt: skip
    assert png_size(tmp_path / "cf.png")[0] > 0
    out = livecalc_in_process(*argv, "--out", str(tmp_path / "cf.json"))
    assert out.returncode == 0, out.stderr
    document = json.loads((tmp_path / "cf.json").read_text())
    net = next(p for p in document["profiles"] if p["output"] == "net_cf" and p["scenario"] == 0)
    assert net["values"] == frame["net_cf_s0"].tolist()
    out = livecalc_in_process("jobs", "cashflows", detail.job.job_id, "--address", detail.mesh.gateway,
                              "--out", str(tmp_path / "cf.csv"))  # fmt: skip
    assert out.returncode != 0 and "--mean" in out.stderr


def test_detail_of_a_job_on_a_scenario_set(detail: Detail, tmp_path: Path) -> None:
    """A job whose scenarios are data: the engines cut the set to the scenarios a detail runs; a job
    that failed (a NaN in its set) has no detail."""
    package = verify_archive(detail.archive)
    interface = interface_of(package.config)
    bounds = load_assets(interface, package.files.get).bounds
    months = Records.from_table(pq.read_table(detail.dataset), interface, bounds).horizon_months
    rates = np.random.default_rng(8).normal(0.0, 0.01, (12, months))
    lines = ["scenario,month,rates", *(f"{s},{m},{float(rates[s, m])!r}" for s in range(12) for m in range(months))]
    (tmp_path / "rates.csv").write_text("\n".join(lines) + "\n")
    with detail.mesh.client() as lc:
        lc.upload_dataset(tmp_path / "rates.csv")
        scenarios = engine_pb2.ScenarioSpec(count=12, dataset_id="rates")
        job_spec = job_pb2.JobSpec(package_hash=detail.package_hash, dataset_id="policies", scenarios=scenarios)
        events = submit(detail.mesh.gateway, job_spec)
        assert events[-1].WhichOneof("event") == "result", events[-1]
        job = get_job(detail.mesh.gateway, events[0].job_id)
        frame = lc.job_detail(job.job_id, scenarios=[0, 4])  # runs the set's first 5 scenarios
        check_folds_to_job(frame, job, (0, 4))
        frame = lc.job_detail(job.job_id, scenarios=[7, 11])  # runs the set's scenarios 7 … 11 alone
        check_folds_to_job(frame, job, (7, 11))
        # a failed job has no detail: a set with a NaN fails its job at once
        lines[1 + 3 * months + 7] = f"3,7,{float('nan')!r}"
        (tmp_path / "nanrates.csv").write_text("\n".join(lines) + "\n")
        lc.upload_dataset(tmp_path / "nanrates.csv")
        failing = job_pb2.JobSpec(package_hash=detail.package_hash, dataset_id="policies",
                                  scenarios=engine_pb2.ScenarioSpec(count=12, dataset_id="nanrates"))  # fmt: skip
        events = submit(detail.mesh.gateway, failing)
        assert events[-1].WhichOneof("event") == "error", events[-1]
        with pytest.raises(FailedPrecondition, match="is failed"):
            lc.job_detail(events[0].job_id)
