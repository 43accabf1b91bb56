"""One definition of the policy record: ValidateDataset and the engine's `Records` judge rows alike."""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from livecalc.data.v1 import data_service_pb2
from services.common.storage.local import LocalStorage
from services.data.catalog import Catalog
from services.data.servicer import DataServicer
from services.valuation.errors import ModelInputError
from services.valuation.interface.records import Records, term_life_rules

pytestmark = pytest.mark.anyio

POLICY_COLUMNS = ("policy_id", "age_at_entry", "sex", "policy_term", "policy_count", "sum_assured", "duration_mth",
                  "premium_pp")  # fmt: skip
HOSTILE_ROWS = [
    "1,30,M,10,1,100000,0,",  # good
    "2,forty,M,10,1,100000,0,",  # text in an integer column
    "3,30,X,10,1,100000,0,",  # sex not M/F
    "4,121,F,1,1,100000,0,",  # age out of range, and age + term > 121
    "5,30,M,0,1,100000,0,",  # term < 1
    "6,30,M,10,-1,100000,0,",  # policy_count < 0
    "7,30,M,10,1,0,0,",  # sum assured not > 0
    "8,30,M,10,1,100000,-1500,",  # issued too far ahead
    "9,30,M,10,1,100000,121,12.5",  # duration > 12·term
    "10,30,M,10,1,100000,12,",  # in force without a premium
    "11,30,M,10,1,100000,0,inf",  # infinite premium
    "1,30,M,10,1,100000,0,",  # duplicate id
    "13,30.5,M,10,1,100000,0,",  # not a whole number
    "14,,M,10,1,100000,0,",  # required cell empty
    "15,10,M,10,1,100000,0,",  # younger than the mortality table
    "16,30,f,10,,100000,-12,",  # empty optional cells take defaults, sex in any case, future business: valid
]


async def test_validation_and_engine_inputs_report_the_same_violations(tmp_path: Path) -> None:
    csv = ",".join(POLICY_COLUMNS) + "\n" + "\n".join(HOSTILE_ROWS) + "\n"
    root = tmp_path / "datasets"
    root.mkdir()
    (root / "hostile.csv").write_text(csv)
    servicer = DataServicer(Catalog(LocalStorage(root)))
    report = await servicer.ValidateDataset(
        data_service_pb2.ValidateDatasetRequest(dataset_id="hostile", max_violations=1000), None
    )
    by_data = {(v.row, v.column, v.rule) for v in report.violations}

    as_text = pacsv.ConvertOptions(column_types={c: pa.string() for c in POLICY_COLUMNS}, strings_can_be_null=True)
    table = pacsv.read_csv(io.BytesIO(csv.encode()), convert_options=as_text)
    with pytest.raises(ModelInputError) as info:
        Records.from_table(table, *term_life_rules())
    by_engine = {(v.row, v.column, v.rule) for v in info.value.violations}

    assert by_data == by_engine
    assert {row for row, _, _ in by_data} == set(range(1, 15))  # rows 0 and 15 are valid
    assert (14, "age_at_entry", "coverage") in by_data and (11, "policy_id", "duplicate_policy_id") in by_data
    assert report.violation_count == len(by_data)
