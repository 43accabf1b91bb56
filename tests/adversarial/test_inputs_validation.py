"""ValidateDataset's report is complete for the model's rules, over the whole dataset (issue 19).

The gateway refuses a job at submit from this report, so a duplicate policy_id far from its
first occurrence (another row group, another CSV span, another hash partition) is reported,
and so are non-finite and out-of-range amounts, in-force rows without a premium and
age + term beyond 121. Validation of a dataset far larger than the memory budget is not
refused for memory it does not use.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from livecalc.data.v1 import data_service_pb2, data_service_pb2_grpc
from services.common.storage.local import LocalStorage
from services.data import validation
from services.data.catalog import Catalog
from services.data.limits import DataLimits
from services.data.servicer import DataServicer, read_overhead
from tests.adversarial.test_inputs_engine import with_column
from tests.engine.mesh import datasets_dir, policies_csv
from tests.meshes import Services
from tests.support import ServiceProcess

CSV_ROWS = 120_000  # several 4 MiB CSV spans
FIRST, REPEAT = 3, CSV_ROWS - 5
DUPLICATE = "duplicate_policy_id"
#: Ten rows, each breaking at most one rule (see the test that reads them).
RULE_ROWS: dict[str, list[object]] = {
    "sum_assured": [1e300, np.inf, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0],
    "premium_pp": [None, None, np.nan, 2e15, None, 5.0, None, None, None, None],
    "duration_mth": [0, 0, 0, 0, 7, 7, 0, 0, 0, 0],
    "age_at_entry": [30, 30, 30, 30, 30, 30, 100, 30, 30, 30],
    "policy_term": [10, 10, 10, 10, 10, 10, 22, 10, 10, 10],
}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    tmp = tmp_path_factory.mktemp("validate")
    root = datasets_dir(tmp)
    table = policies_csv(tmp / "base.csv", CSV_ROWS, seed=3)
    ids = table.column("policy_id").to_numpy().copy()
    ids[REPEAT] = ids[FIRST]
    pacsv.write_csv(with_column(table, "policy_id", ids), root / "dups.csv")
    small = table.slice(0, 2000)
    small_ids = small.column("policy_id").to_numpy().copy()
    small_ids[1999] = small_ids[0]  # first and last row groups
    small_ids[1000] = small_ids[999]  # neighbours across a row-group edge
    pq.write_table(with_column(small, "policy_id", small_ids), root / "dups_pq.parquet", row_group_size=100)
    rules = small.slice(0, 10)
    for column, values in RULE_ROWS.items():
        rules = with_column(rules, column, values)
    pacsv.write_csv(rules, root / "rules.csv")
    with Services(tmp) as services:
        yield services.data(root)


def _validate(address: str, dataset_id: str, max_violations: int = 0) -> data_service_pb2.ValidateDatasetResponse:
    with grpc.insecure_channel(address) as channel:
        stub = data_service_pb2_grpc.DataServiceStub(channel)
        request = data_service_pb2.ValidateDatasetRequest(dataset_id=dataset_id, max_violations=max_violations)
        return stub.ValidateDataset(request, timeout=120)


def test_duplicate_policy_id_across_the_whole_csv_dataset(data: ServiceProcess) -> None:
    report = _validate(data.address, "dups")
    assert not report.valid and report.rows_checked == CSV_ROWS and report.violation_count == 1
    (v,) = report.violations
    assert (v.row, v.column, v.rule) == (REPEAT, "policy_id", "duplicate_policy_id")
    assert [(c.rule, c.count) for c in report.rule_counts] == [("duplicate_policy_id", 1)]


def test_duplicate_policy_id_across_parquet_row_groups(data: ServiceProcess) -> None:
    report = _validate(data.address, "dups_pq")
    assert [(v.row, v.rule) for v in report.violations] == [(1000, DUPLICATE), (1999, DUPLICATE)]


def test_every_rule_of_the_model_is_reported_with_its_row(data: ServiceProcess) -> None:
    report = _validate(data.address, "rules", max_violations=1000)
    got = {(v.row, v.column, v.rule) for v in report.violations}
    assert got == {
        (0, "sum_assured", "range"),  # 1e300: beyond the bound
        (1, "sum_assured", "range"),  # inf
        (2, "premium_pp", "range"),  # NaN is a value, not an empty cell
        (3, "premium_pp", "range"),  # 2e15: beyond the bound
        (4, "premium_pp", "premium_required"),  # in force, no premium
        (6, "policy_term", "range"),  # 100 + 22 > 121
        (6, "policy_term", "coverage"),  # and its ages 100..121 run past the mortality table's 120
    }
    assert report.violation_count == len(got)
    for v in report.violations:
        assert f"{v.column} {v.column}" not in v.message, v.message


@pytest.mark.anyio
async def test_hash_partitions_find_duplicates_of_structured_ids(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ids in steps of the partition count would all fall into one partition under `id % n`."""
    monkeypatch.setattr(validation, "IDS_PER_PASS", 500)
    rows = 2000  # four partitions of about 500 ids
    table = policies_csv(tmp_path / "base.csv", rows, seed=3)
    ids = np.arange(rows, dtype=np.int64) * 4
    ids[1700] = ids[20]
    ids[1900] = ids[1899]
    root = tmp_path / "datasets"
    root.mkdir()
    pacsv.write_csv(with_column(table, "policy_id", ids), root / "steps.csv")
    spread = np.bincount(validation.partition_of(ids, 4), minlength=4)
    assert spread.max() < 700, spread
    # a memory budget below rows × 64 bytes of ids: validation holds only one partition's
    catalog = Catalog(LocalStorage(root))
    budget = read_overhead(await catalog.get("steps")) + rows * 64 // 2
    servicer = DataServicer(catalog, limits=DataLimits(memory_budget_bytes=budget))
    report = await servicer.ValidateDataset(data_service_pb2.ValidateDatasetRequest(dataset_id="steps"), None)
    assert [(v.row, v.rule) for v in report.violations] == [(1700, DUPLICATE), (1900, DUPLICATE)]
