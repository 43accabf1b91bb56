"""DataService behaviour on both backends: a local directory and a real Azurite container.

The servicer is called in-process (errors surface as the typed exceptions the
interceptor maps to statuses); storage is real: files on disk, blobs in Azurite.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from livecalc.data.v1 import data_pb2, data_service_pb2
from services.common.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from services.common.storage.base import CountingStorage
from services.data.catalog import SOURCES, Catalog
from services.data.cli import sample_document
from services.data.servicer import DataServicer

pytestmark = pytest.mark.anyio
FORMATS = {"csv": data_pb2.DATASET_FORMAT_CSV, "parquet": data_pb2.DATASET_FORMAT_PARQUET}


def requests_for(
    data: bytes, dataset_id: str, fmt: str, *, sha: str | None = None, size: int | None = None, overwrite: bool = False
) -> list[data_service_pb2.UploadDatasetRequest]:
    header = data_service_pb2.UploadHeader(
        dataset_id=dataset_id,
        format=FORMATS[fmt],
        size_bytes=len(data) if size is None else size,
        sha256=sha or hashlib.sha256(data).hexdigest(),
        overwrite=overwrite,
    )
    chunks = [data[i : i + (1 << 20)] for i in range(0, len(data), 1 << 20)]
    return [
        data_service_pb2.UploadDatasetRequest(header=header),
        *(data_service_pb2.UploadDatasetRequest(chunk=c) for c in chunks),
    ]


async def _aiter(items: list[Any]) -> AsyncIterator[Any]:
    for item in items:
        yield item


async def upload(servicer: DataServicer, data: bytes, dataset_id: str, fmt: str, **kw: Any) -> data_pb2.Dataset:
    reply = await servicer.UploadDataset(_aiter(requests_for(data, dataset_id, fmt, **kw)), None)
    return reply.dataset


async def read_all(servicer: DataServicer, dataset_id: str, start: int, end: int, **kw: Any) -> pa.Table:
    request = data_service_pb2.ReadRowsRequest(dataset_id=dataset_id, start_row=start, end_row=end, **kw)
    tables = []
    expected_start = start
    async for message in servicer.ReadRows(request, None):
        assert message.start_row == expected_start
        assert len(message.arrow_ipc) < 4 << 20
        table = pa.ipc.open_stream(message.arrow_ipc).read_all()
        assert table.num_rows == message.row_count
        expected_start += message.row_count
        tables.append(table)
    assert expected_start == end
    return pa.concat_tables(tables) if tables else pa.table({})


def sample_dicts(reply: data_service_pb2.SampleRowsResponse) -> list[tuple[int, dict[str, Any]]]:
    return [(row["row"], row["values"]) for row in sample_document(reply)["rows"]]


async def test_metadata_sample_read_on_both_formats(storage: CountingStorage, small_files: dict[str, Path]) -> None:
    servicer = DataServicer(Catalog(storage))
    reference = pq.read_table(small_files["parquet"])
    samples = {}
    for fmt, path in small_files.items():
        ds = await upload(servicer, path.read_bytes(), f"pol_{fmt}", fmt)
        assert ds.row_count == 1000 and ds.format == FORMATS[fmt] and ds.source == SOURCES[storage.kind]
        assert ds.size_bytes == path.stat().st_size
        assert [c.name for c in ds.columns] == reference.column_names
        assert ds.version
        schema = await servicer.GetSchema(data_service_pb2.GetSchemaRequest(dataset_id=f"pol_{fmt}"), None)
        types = {c.name: c.type for c in schema.columns}
        assert types["policy_id"] == data_pb2.COLUMN_TYPE_INT64
        assert types["sex"] == data_pb2.COLUMN_TYPE_STRING
        assert types["policy_count"] == data_pb2.COLUMN_TYPE_FLOAT64
        assert types["premium_pp"] == data_pb2.COLUMN_TYPE_FLOAT64
        request = data_service_pb2.SampleRowsRequest(dataset_id=f"pol_{fmt}", n=25, seed=9)
        reply = await servicer.SampleRows(request, None)
        assert reply.dataset_row_count == 1000 and reply.version == ds.version
        samples[fmt] = sample_dicts(reply)
        # the sampled rows are the dataset's rows
        for row, values in samples[fmt]:
            assert values["policy_id"] == reference.column("policy_id")[row].as_py()
        # exact row ranges, any batch size, with projection
        table = await read_all(servicer, f"pol_{fmt}", 123, 877, batch_rows=100, columns=["policy_id", "sex"])
        assert table.column_names == ["policy_id", "sex"]
        assert table.column("policy_id").to_pylist() == reference.column("policy_id")[123:877].to_pylist()
        assert table.column("sex").to_pylist() == reference.column("sex")[123:877].to_pylist()
        full = await read_all(servicer, f"pol_{fmt}", 0, 1000)
        assert full.column("sum_assured").to_pylist() == reference.column("sum_assured").to_pylist()
        assert full.column("premium_pp").to_pylist() == reference.column("premium_pp").to_pylist()
        assert (await read_all(servicer, f"pol_{fmt}", 500, 500)).num_rows == 0
    # the same rows in the same order from either format (row numbers depend on rows, n, seed)
    assert samples["csv"] == samples["parquet"]
    listed = await servicer.ListDatasets(data_service_pb2.ListDatasetsRequest(page_size=1), None)
    assert [d.dataset_id for d in listed.datasets] == ["pol_csv"]
    page2 = await servicer.ListDatasets(data_service_pb2.ListDatasetsRequest(page_token=listed.next_page_token), None)
    assert [d.dataset_id for d in page2.datasets] == ["pol_parquet"] and not page2.next_page_token


async def test_metadata_reads_no_data(storage: CountingStorage, small_files: dict[str, Path]) -> None:
    servicer = DataServicer(Catalog(storage))
    for fmt, path in small_files.items():
        await upload(servicer, path.read_bytes(), f"m_{fmt}", fmt)
        fresh = Catalog(storage)  # a new process: sidecar and footer only
        storage.reset()
        entry = await fresh.get(f"m_{fmt}")
        assert entry.rows == 1000
        assert storage.bytes_read <= 70_000 and storage.bytes_read < path.stat().st_size * 2
        storage.reset()
        await fresh.get(f"m_{fmt}")
        assert storage.bytes_read == 0  # cached: a stat only


async def test_errors(storage: CountingStorage, small_files: dict[str, Path]) -> None:
    servicer = DataServicer(Catalog(storage))
    await upload(servicer, small_files["csv"].read_bytes(), "pol", "csv")
    with pytest.raises(NotFound):
        await servicer.GetDataset(data_service_pb2.GetDatasetRequest(dataset_id="nope"), None)
    for bad in ("../pol", "/etc/passwd", "a/b"):
        with pytest.raises(InvalidArgument):
            await servicer.GetDataset(data_service_pb2.GetDatasetRequest(dataset_id=bad), None)
    for n in (0, -1, 1001):
        with pytest.raises(InvalidArgument, match="n"):
            await servicer.SampleRows(data_service_pb2.SampleRowsRequest(dataset_id="pol", n=n), None)
    for start, end, why in ((-1, 5, "negative"), (10, 5, "reversed"), (0, 1001, "exceeds")):
        with pytest.raises(InvalidArgument, match=why):
            await read_all(servicer, "pol", start, end)
    with pytest.raises(InvalidArgument, match="no column"):
        await read_all(servicer, "pol", 0, 5, columns=["nope"])
    with pytest.raises(FailedPrecondition, match="version"):
        await read_all(servicer, "pol", 0, 5, expected_version="sha256:0")
    with pytest.raises(AlreadyExists):
        await upload(servicer, small_files["csv"].read_bytes(), "pol", "csv")
    with pytest.raises(AlreadyExists):
        await upload(servicer, small_files["parquet"].read_bytes(), "pol", "parquet")


async def test_text_in_numeric_column(storage: CountingStorage) -> None:
    servicer = DataServicer(Catalog(storage))
    lines = ["policy_id,age_at_entry,sex,policy_term,policy_count,sum_assured,duration_mth,premium_pp"]
    lines += [f"{i},{30 + i % 10},M,10,1,100000,0," for i in range(600)]
    lines[400] = "398,forty,M,10,1,100000,0,"  # data row 399, repeating the id of row 398
    lines[501] = "500,35,X,100,1,-5,0,"  # bad sex, term too long, sum assured ≤ 0
    await upload(servicer, ("\n".join(lines) + "\n").encode(), "bad", "csv")
    with pytest.raises(FailedPrecondition, match=r"row 399 column 'age_at_entry': 'forty' is not int64"):
        await read_all(servicer, "bad", 0, 600)
    report = await servicer.ValidateDataset(data_service_pb2.ValidateDatasetRequest(dataset_id="bad"), None)
    assert not report.valid and report.rows_checked == 600
    got = {(v.row, v.column, v.rule) for v in report.violations}
    assert (399, "age_at_entry", "type") in got
    assert (399, "policy_id", "duplicate_policy_id") in got
    assert {(500, "sex", "enum"), (500, "policy_term", "range"), (500, "sum_assured", "range")} <= got
    counts = {c.rule: c.count for c in report.rule_counts}
    # term 100 also needs ages beyond the mortality table (term life's declared coverage rule)
    assert counts == {"type": 1, "duplicate_policy_id": 1, "enum": 1, "range": 1, "coverage": 1}
    assert report.violation_count == 6
    assert [v.row for v in report.violations] == sorted(v.row for v in report.violations)
    capped = await servicer.ValidateDataset(
        data_service_pb2.ValidateDatasetRequest(dataset_id="bad", max_violations=2), None
    )
    assert len(capped.violations) == 2 and capped.violation_count == 6


async def test_validation_of_good_and_incomplete_data(storage: CountingStorage, small_files: dict[str, Path]) -> None:
    servicer = DataServicer(Catalog(storage))
    await upload(servicer, small_files["parquet"].read_bytes(), "good", "parquet")
    report = await servicer.ValidateDataset(data_service_pb2.ValidateDatasetRequest(dataset_id="good"), None)
    assert report.valid and report.violation_count == 0 and report.rows_checked == 1000
    buf = io.BytesIO()
    pq.write_table(pa.table({"policy_id": [1, 2, 2], "age_at_entry": [30, 130, 40]}), buf)
    await upload(servicer, buf.getvalue(), "partial", "parquet")
    report = await servicer.ValidateDataset(data_service_pb2.ValidateDatasetRequest(dataset_id="partial"), None)
    assert not report.valid
    assert report.missing_columns == ["sex", "policy_term", "sum_assured"]
    assert {(v.row, v.rule) for v in report.violations} == {(1, "range"), (2, "duplicate_policy_id")}
    with pytest.raises(InvalidArgument, match="unknown model"):
        await servicer.ValidateDataset(data_service_pb2.ValidateDatasetRequest(dataset_id="good", model="x"), None)


async def _visible(storage: CountingStorage) -> list[str]:
    return sorted(i.name for i in await storage.list())


async def test_failed_uploads_leave_nothing(storage: CountingStorage, small_files: dict[str, Path]) -> None:
    servicer = DataServicer(Catalog(storage))
    data = small_files["parquet"].read_bytes()
    with pytest.raises(InvalidArgument, match="SHA-256 mismatch"):
        await upload(servicer, data, "x", "parquet", sha="0" * 64)
    with pytest.raises(InvalidArgument, match="ended after"):
        await upload(servicer, data[:1000], "x", "parquet", sha=hashlib.sha256(data).hexdigest(), size=len(data))
    with pytest.raises(InvalidArgument, match="larger than"):
        await upload(servicer, data, "x", "parquet", size=10)
    with pytest.raises(InvalidArgument, match="magic"):
        await upload(servicer, b"not parquet at all", "x", "parquet")
    with pytest.raises(InvalidArgument, match="header"):
        await servicer.UploadDataset(_aiter([data_service_pb2.UploadDatasetRequest(chunk=b"x")]), None)

    async def interrupted() -> AsyncIterator[data_service_pb2.UploadDatasetRequest]:
        reqs = requests_for(data, "x", "parquet")
        yield reqs[0]
        yield data_service_pb2.UploadDatasetRequest(chunk=data[:5000])
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await servicer.UploadDataset(interrupted(), None)
    assert await _visible(storage) == []
    with pytest.raises(NotFound):
        await servicer.GetDataset(data_service_pb2.GetDatasetRequest(dataset_id="x"), None)
    # a good upload after all that works, and overwrite replaces the other format
    ds = await upload(servicer, data, "x", "parquet")
    assert ds.row_count == 1000
    ds = await upload(servicer, small_files["csv"].read_bytes(), "x", "csv", overwrite=True)
    assert ds.format == data_pb2.DATASET_FORMAT_CSV
    assert await _visible(storage) == [".x.csv.idx", "x.csv"]
    await servicer.DeleteDataset(data_service_pb2.DeleteDatasetRequest(dataset_id="x"), None)
    assert await _visible(storage) == []


async def test_changed_file_gets_new_version_and_index(storage: CountingStorage, small_files: dict[str, Path]) -> None:
    servicer = DataServicer(Catalog(storage))
    first = await upload(servicer, b"policy_id,sex\n1,M\n2,F\n", "c", "csv")
    second = await upload(servicer, b"policy_id,sex\n1,M\n2,F\n3,M\n", "c", "csv", overwrite=True)
    assert second.row_count == 3 and second.version != first.version
    again = await servicer.GetDataset(data_service_pb2.GetDatasetRequest(dataset_id="c"), None)
    assert again.dataset.version == second.version and again.dataset.row_count == 3
