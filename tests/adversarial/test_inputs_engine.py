"""Hostile policy values against real data, gateway and engine processes (issue 19, items 6 and 7).

Non-finite and absurd amounts, and in-force rows of a dataset without premium_pp, are
INVALID_ARGUMENT naming the dataset row and column, from the engine and from ValidateDataset
alike; never a SUCCEEDED job with inf/NaN statistics, never INTERNAL. A package whose
assumptions make one in-bounds policy overflow is refused the same way: the engine finds the
policy inside its block.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from livecalc.data.v1 import data_service_pb2, data_service_pb2_grpc
from livecalc.gateway.v1 import job_pb2
from services.valuation.blocks import BLOCK_SIZE
from services.valuation.packages.package import build_directory
from tests.engine.mesh import (
    chunk_request,
    dataset_version,
    datasets_dir,
    policies_csv,
    run_chunk,
    stochastic_package,
    upload_package,
)
from tests.gateway.jobmesh import get_job, spec, submit
from tests.meshes import Services
from tests.support import ServiceProcess

ROWS = BLOCK_SIZE + 200  # two blocks: row numbers inside the second block are offset
BAD = BLOCK_SIZE + 77
SCENARIOS = 4


@dataclass
class Mesh:
    data: ServiceProcess
    gateway: ServiceProcess
    engine: ServiceProcess
    package: str
    overflowing_package: str


def with_column(table: pa.Table, column: str, values: object) -> pa.Table:
    """`table` with `column` replaced by `values`."""
    return table.set_column(table.schema.get_field_index(column), column, pa.array(values))


def _overflowing_package(root: Path) -> bytes:
    """The reference package with a maintenance expense of 1e300 a year: finite, but a policy
    of a billion policies overflows."""
    stochastic_package(root)
    expenses = root / "assumptions" / "expenses.json"
    data = json.loads(expenses.read_text())
    data["maintenance"] = 1e300
    expenses.write_text(json.dumps(data, indent=2) + "\n")
    archive, _ = build_directory(root, source_date_epoch=0)
    return archive


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    tmp = tmp_path_factory.mktemp("inputs")
    root = datasets_dir(tmp)
    table = policies_csv(root / "pol.csv", ROWS)
    amounts = table.column("sum_assured").to_numpy().astype(np.float64)
    counts = table.column("policy_count").to_numpy().astype(np.float64)
    huge_sa, huge_count = amounts.copy(), counts.copy()
    huge_sa[BAD], huge_count[BAD] = 1e300, 1e300
    huge = with_column(with_column(table, "sum_assured", huge_sa), "policy_count", huge_count)
    pacsv.write_csv(huge, root / "huge.csv")
    nan_sa = amounts.copy()
    nan_sa[BAD] = np.nan
    pacsv.write_csv(with_column(table, "sum_assured", nan_sa), root / "nan.csv")
    # in force (duration_mth 5) at BAD only, and no premium_pp column at all
    durations = np.zeros(ROWS, dtype=np.int64)
    durations[BAD] = 5
    pacsv.write_csv(with_column(table, "duration_mth", durations).drop_columns(["premium_pp"]), root / "noprem.csv")
    # every policy_count 1 but BAD's, which is in bounds (1e9) yet overflows under 1e300 expenses
    ones = np.ones(ROWS)
    ones[BAD] = 1e9
    pacsv.write_csv(with_column(table, "policy_count", ones), root / "billion.csv")
    with Services(tmp) as services:
        started = services.mesh(root)
        package = upload_package(started.gateway.address, stochastic_package(tmp / "model"))
        overflowing = upload_package(started.gateway.address, _overflowing_package(tmp / "overflow"))
        yield Mesh(started.data, started.gateway, started.engine, package, overflowing)


def _chunk_error(mesh: Mesh, dataset_id: str, package: str | None = None) -> tuple[grpc.StatusCode, str]:
    version = dataset_version(mesh.data.address, dataset_id)
    request = chunk_request(package or mesh.package, mesh.gateway.address, dataset_id, version,
                            first_block=0, block_count=2, scenarios=SCENARIOS)  # fmt: skip
    with pytest.raises(grpc.RpcError) as info:
        run_chunk(mesh.engine.address, request)
    return info.value.code(), info.value.details() or ""


def _job_error(mesh: Mesh, dataset_id: str, package: str) -> str:
    """The error of a job on the dataset: refused at submit, or FAILED; never a result."""
    try:
        events = submit(mesh.gateway.address, spec(package, dataset_id, SCENARIOS))
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, exc.details()
        return exc.details() or ""
    last = events[-1]
    assert last.WhichOneof("event") == "error", f"the job ended with {last}"
    assert last.error.code == "INVALID_ARGUMENT"
    assert get_job(mesh.gateway.address, events[0].job_id).state == job_pb2.JOB_STATE_FAILED
    return last.error.message


def _names(message: str, row: int, column: str) -> bool:
    """Whether a job's error names the row and column (the engine's words, or the gateway's at submit)."""
    return f"row {row}: {column}" in message or f"rows[{row}].{column}" in message


def _validation(mesh: Mesh, dataset_id: str) -> data_service_pb2.ValidateDatasetResponse:
    with grpc.insecure_channel(mesh.data.address) as channel:
        stub = data_service_pb2_grpc.DataServiceStub(channel)
        return stub.ValidateDataset(data_service_pb2.ValidateDatasetRequest(dataset_id=dataset_id), timeout=60)


def test_huge_amounts_are_refused_naming_the_row_not_a_job_of_inf(mesh: Mesh) -> None:
    code, details = _chunk_error(mesh, "huge")
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert f"row {BAD}: sum_assured" in details and f"row {BAD}: policy_count" in details
    message = _job_error(mesh, "huge", mesh.package)
    assert _names(message, BAD, "sum_assured"), message
    report = _validation(mesh, "huge")
    assert not report.valid
    assert {(v.row, v.column, v.rule) for v in report.violations} == {
        (BAD, "sum_assured", "range"),
        (BAD, "policy_count", "range"),
    }
    assert all(v.message.count(v.column) == 1 for v in report.violations), report.violations


def test_nan_amount_is_refused_naming_row_and_column(mesh: Mesh) -> None:
    code, details = _chunk_error(mesh, "nan")
    assert code == grpc.StatusCode.INVALID_ARGUMENT and f"row {BAD}: sum_assured" in details
    report = _validation(mesh, "nan")
    assert [(v.row, v.column, v.rule) for v in report.violations] == [(BAD, "sum_assured", "range")]


def test_in_force_row_without_premium_column_is_invalid_argument_not_internal(mesh: Mesh) -> None:
    code, details = _chunk_error(mesh, "noprem")
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert f"row {BAD}: premium_pp: is required when duration_mth > 0" in details
    report = _validation(mesh, "noprem")
    assert not report.valid and list(report.missing_columns) == []
    assert [(v.row, v.column, v.rule) for v in report.violations] == [(BAD, "premium_pp", "premium_required")]
    assert report.violations[0].message.startswith("premium_pp is required when duration_mth > 0")


def test_a_policy_that_overflows_inside_its_block_is_named(mesh: Mesh) -> None:
    assert _validation(mesh, "billion").valid  # every input is in bounds: the assumptions make it overflow
    code, details = _chunk_error(mesh, "billion", mesh.overflowing_package)
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert f"row {BAD}: policy_count: is 1e+09, which gives the output" in details
    assert "non_finite" not in details and "inf" in details
    message = _job_error(mesh, "billion", mesh.overflowing_package)
    assert _names(message, BAD, "policy_count"), message
    # the same dataset under the reference assumptions is fine
    events = submit(mesh.gateway.address, spec(mesh.package, "billion", SCENARIOS))
    assert events[-1].WhichOneof("event") == "result"
    assert all(np.isfinite(o.values).all() and len(o.values) == SCENARIOS for o in events[-1].result.outputs)
