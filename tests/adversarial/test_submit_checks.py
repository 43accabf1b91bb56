"""Issue 19, items 5, 6 and 7 (the gateway's side): jobs that could never finish, refused at submit.

- A scenario count no engine has memory for (10,000,000; 4,294,967,295) was accepted and
  retried for ever, holding an admission slot: refused, naming the engines' advertised limit.
- Duplicate policy ids in two chunks were valued twice (each engine sees its own chunk only):
  the dataset is checked against the model's rules, over the whole dataset, before dispatch.
- A dataset that fails `datasets validate` was accepted (and one without `premium_pp` but with
  in-force rows failed with INTERNAL): refused at submit, naming the row and the column.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from livecalc.engine.v1 import engine_pb2
from livecalc.gateway.v1 import job_pb2
from services.common.errors import InvalidArgument
from services.gateway.admission import DatasetRules, check_capacity
from services.gateway.inputs import RowViolation, Validation
from services.valuation.blocks import BLOCK_SIZE
from tests.engine.mesh import datasets_dir, policies_csv, stochastic_package, upload_package
from tests.gateway.fakes import HASH, FakeDatasets, FakeEngineStub, fake_engine, fake_manager, partial_table
from tests.gateway.jobmesh import kinds, spec, submit
from tests.inprocess import threaded_mesh

BROKEN = Validation(
    "pol",
    "v1",
    violation_count=3,
    violations=(
        RowViolation(17, "premium_pp", "required", "premium_pp is required when duration_mth ≠ 0"),
        RowViolation(20, "premium_pp", "required", "premium_pp is required when duration_mth ≠ 0"),
        RowViolation(4000, "policy_id", "duplicate_policy_id", "policy_id 18 also on row 17"),
    ),
    rule_counts=(("required", 2), ("duplicate_policy_id", 1)),
)


# units: the verdict cache and the capacity rule


@pytest.mark.anyio
async def test_a_verdict_is_asked_once_per_dataset_version_and_names_rows_and_columns() -> None:
    datasets = FakeDatasets(10, validation=BROKEN)
    rules = DatasetRules(datasets)
    for _ in range(3):
        with pytest.raises(InvalidArgument) as info:
            await rules.check("pol", "v1", "term_life", "t1")
    assert datasets.validations == 1
    text = info.value.details()
    assert "dataset.rows[17].premium_pp: premium_pp is required" in text and "dataset.rows[4000].policy_id" in text
    assert text.count("dataset.rows[") == 2  # one example of each rule broken
    assert "3 rule violations (required 2, duplicate_policy_id 1)" in text
    with pytest.raises(InvalidArgument):
        await rules.check("pol", "v1", "term_life", "t2")
    assert datasets.validations == 2  # another tenant's dataset of the same name is its own
    datasets.validation = Validation("pol", "v2", 0)
    await rules.check("pol", "v2", "term_life", "t1")  # a new version: asked again, and valid


def test_capacity_names_the_need_and_the_largest_engines_limit() -> None:
    engines = [fake_engine("a", None), fake_engine("b", None)]  # type: ignore[arg-type]
    check_capacity(4_294_967_295, engines)  # no engine has said: left to the engines
    engines[0].memory_limit_bytes, engines[0].max_scenarios = 1 << 30, 16_000_000
    engines[1].memory_limit_bytes, engines[1].max_scenarios = 2 << 30, 33_000_000
    check_capacity(33_000_000, engines)
    with pytest.raises(InvalidArgument) as info:
        check_capacity(33_000_001, engines)
    details = info.value.details()
    assert "spec.scenarios.count" in details and "at most 33,000,000" in details and "2.00 GiB" in details


@pytest.mark.anyio
async def test_a_refused_job_is_not_recorded_and_holds_no_slot(tmp_path: Path) -> None:
    rows = 2 * BLOCK_SIZE
    engines = [fake_engine("a", FakeEngineStub(partial_table(2, 2), rows))]
    manager = fake_manager(tmp_path, engines, rows, validation=BROKEN, max_pending_jobs=1)
    try:
        job_spec = job_pb2.JobSpec(package_hash=HASH, dataset_id="pol", scenarios=engine_pb2.ScenarioSpec(count=2))
        for _ in range(3):  # a slot held by a refused job would answer RESOURCE_EXHAUSTED here
            with pytest.raises(InvalidArgument):
                await manager.submit(job_spec)
        manager.store.flush()
        assert manager.store.list_jobs(10, "", 0)[0] == []
    finally:
        await manager.close()
        manager.store.close()


# through real processes


@dataclass
class Mesh:
    """The gateway's address (of a mesh in this process: the refusals are the gateway's and the
    engine's answers, not a process's) and the uploaded package."""

    gateway: str
    package_hash: str


ROWS = 4 * BLOCK_SIZE


def rewrite(path: Path, change: object) -> None:
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    change(rows)  # type: ignore[operator]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    tmp = tmp_path_factory.mktemp("submit-checks")
    root = datasets_dir(tmp)
    policies_csv(root / "pol.csv", ROWS, seed=3)
    policies_csv(root / "dups.csv", ROWS, seed=3)

    def duplicate(rows: list[dict[str, str]]) -> None:
        rows[3 * BLOCK_SIZE + 5]["policy_id"] = rows[7]["policy_id"]  # chunk 3 repeats an id of chunk 0

    rewrite(root / "dups.csv", duplicate)
    policies_csv(root / "noprem.csv", ROWS, seed=3)

    def drop_premium(rows: list[dict[str, str]]) -> None:
        for row in rows:
            del row["premium_pp"]

    rewrite(root / "noprem.csv", drop_premium)
    archive = stochastic_package(tmp / "model")
    with threaded_mesh(tmp, datasets=root) as started:
        yield Mesh(started.gateway, upload_package(started.gateway, archive))


def refused(mesh: Mesh, job_spec: job_pb2.JobSpec) -> str:
    with pytest.raises(grpc.RpcError) as info:
        submit(mesh.gateway, job_spec)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value
    return str(info.value.details())


@pytest.mark.timeout(180)
def test_duplicate_ids_in_two_chunks_are_refused_before_dispatch(mesh: Mesh) -> None:
    details = refused(mesh, spec(mesh.package_hash, "dups", 3, chunk_blocks=1))
    assert f"dataset.rows[{3 * BLOCK_SIZE + 5}].policy_id" in details and "duplicate_policy_id" in details
    events = submit(mesh.gateway, spec(mesh.package_hash, "pol", 3, chunk_blocks=1))
    assert events[-1].WhichOneof("event") == "result", kinds(events)


@pytest.mark.timeout(180)
def test_in_force_rows_without_a_premium_column_are_refused_naming_row_and_column(mesh: Mesh) -> None:
    details = refused(mesh, spec(mesh.package_hash, "noprem", 3))
    assert "premium_pp" in details and "dataset.rows[" in details and "INTERNAL" not in details


@pytest.mark.timeout(180)
def test_a_count_no_engine_can_hold_is_refused_naming_the_limit(mesh: Mesh) -> None:
    details = refused(mesh, spec(mesh.package_hash, "pol", 4_294_967_295))
    assert "spec.scenarios.count" in details and "GetCapabilities.max_scenarios" in details


@pytest.mark.timeout(180)
def test_a_count_too_large_for_the_datasets_horizon_fails_at_the_engines_refusal_not_never(mesh: Mesh) -> None:
    # 10,000,000 scenarios of one month would fit; of this dataset's horizon (years) they do
    # not: the engine's refusal is permanent (marked too-large) and fails the job at once
    started = time.monotonic()
    events = submit(mesh.gateway, spec(mesh.package_hash, "pol", 10_000_000, chunk_blocks=1))
    last = events[-1]
    assert last.WhichOneof("event") == "error", kinds(events)
    assert last.error.code == "RESOURCE_EXHAUSTED" and "no engine can run chunk" in last.error.message
    assert time.monotonic() - started < 60
    # the slot it held is free again: a job after it runs
    assert submit(mesh.gateway, spec(mesh.package_hash, "pol", 3))[-1].WhichOneof("event") == "result"
