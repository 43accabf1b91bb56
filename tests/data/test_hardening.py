"""Issue 8, in process, on a local directory and on a real Azurite: each test failed before.

Uploads are checked fully before an atomic commit (item 2), commits of one id are
serialized with the index they install (3), hostile CSVs are refused at upload and listed
as unreadable when placed by hand (4), per-row/per-sample caps and the memory budget (5),
exact int64 sample cells (7), and strict page tokens (9).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import anyio
import pytest

from livecalc.data.v1 import data_pb2, data_service_pb2
from services.common.errors import FailedPrecondition, InvalidArgument, ResourceExhausted
from services.common.storage.base import CountingStorage
from services.data.catalog import Catalog
from services.data.cli import sample_document
from services.data.limits import DataLimits, MemoryBudget
from services.data.servicer import DataServicer
from tests.data.test_service_backends import _visible, read_all, upload

pytestmark = pytest.mark.anyio
HEADER = "policy_id,age_at_entry,sex,policy_term,policy_count,sum_assured,duration_mth,premium_pp"


def policies(first_id: int, n: int, sex: str = "M") -> bytes:
    lines = [HEADER, *(f"{first_id + i},{30 + i % 9},{sex},10,1,100000,0,12.5" for i in range(n))]
    return ("\n".join(lines) + "\n").encode()


async def stored_bytes(storage: CountingStorage, name: str) -> bytes:
    info = await storage.stat(name)
    assert info is not None
    return await storage.read_range(name, 0, info.size)


async def test_a_refused_overwrite_keeps_the_previous_version(
    storage: CountingStorage, small_files: dict[str, Path]
) -> None:
    servicer = DataServicer(Catalog(storage))
    good = policies(1, 500)
    before = await upload(servicer, good, "d", "csv")
    parquet = await upload(servicer, small_files["parquet"].read_bytes(), "p", "parquet")
    wide = policies(1, 10).replace(b"\n2,", b"\n" + b"9" * 70_000 + b",", 1)  # one row over the row cap
    quoted = policies(1, 600).replace(b"\n300,", b'\n"3\n00",', 1)  # a line break in a quoted field, late
    for bad, fmt, target in ((wide, "csv", "d"), (quoted, "csv", "d"), (b"PAR1 not really PAR1", "parquet", "d")):
        with pytest.raises(InvalidArgument, match="nothing was stored"):
            await upload(servicer, bad, target, fmt, overwrite=True)
    with pytest.raises(InvalidArgument, match="nothing was stored"):
        await upload(servicer, quoted, "p", "csv", overwrite=True)  # the other format's copy stays too
    assert await stored_bytes(storage, "d.csv") == good
    assert await stored_bytes(storage, "p.parquet") == small_files["parquet"].read_bytes()
    for catalog in (servicer.catalog, Catalog(storage)):  # this process, and a restarted one
        entry = await catalog.get("d")
        assert entry.version == before.version and entry.rows == 500
    table = await read_all(servicer, "d", 0, 500)
    assert table.column("policy_id").to_pylist() == list(range(1, 501))
    assert (await servicer.catalog.get("p")).version == parquet.version
    assert sorted(n for n in await _visible(storage) if not n.startswith(".")) == ["d.csv", "p.parquet"]


async def test_concurrent_overwrites_never_mix_versions(storage: CountingStorage) -> None:
    servicer = DataServicer(Catalog(storage))
    # same size, different content: local change tokens of equal size and mtime must differ
    contents = [policies(1, 2000, "M"), policies(1, 2000, "F")]
    assert len(contents[0]) == len(contents[1])
    await upload(servicer, contents[0], "c", "csv")
    refused: list[str] = []

    async def overwrite(data: bytes) -> None:
        try:
            await upload(servicer, data, "c", "csv", overwrite=True)
        except FailedPrecondition as exc:  # Azure: one staged upload per blob at a time
            assert storage.kind == "azure_blob" and "another upload" in exc.message
            refused.append(exc.message)

    for trial in range(4):
        async with anyio.create_task_group() as tg:
            for data in contents:
                tg.start_soon(overwrite, data)
        stored = await stored_bytes(storage, "c.csv")
        assert stored in contents
        sex = "M" if stored == contents[0] else "F"
        for catalog in (servicer.catalog, Catalog(storage)):  # persisted: a restart agrees
            entry = await catalog.get("c")
            if storage.kind == "local":
                assert entry.version == f"sha256:{hashlib.sha256(stored).hexdigest()}", trial
            info = await storage.stat("c.csv")
            assert info is not None and entry.info.change_token == info.change_token
        table = await read_all(servicer, "c", 0, 2000, columns=["sex"])
        assert set(table.column("sex").to_pylist()) == {sex}, trial


async def test_hostile_csvs_are_refused_and_never_break_the_listing(storage: CountingStorage) -> None:
    servicer = DataServicer(Catalog(storage))
    await upload(servicer, policies(1, 10), "fine", "csv")
    long_header = ("a" * 131_073 + ",b\n1,2\n").encode()
    nuls = b"\0" * (1 << 20)
    for data in (long_header, nuls, b"a,b\n1,2\n" + b"x" * 70_000 + b"\n"):
        with pytest.raises(InvalidArgument, match="nothing was stored"):
            await upload(servicer, data, "bad", "csv")
    assert sorted(await _visible(storage)) == [".fine.csv.idx", "fine.csv"]
    # the same files placed by hand: listed as unreadable with the reason, the rest still listed
    await storage.put("hdr.csv", long_header)
    await storage.put("nul.csv", nuls)
    for _ in range(2):
        listed = await servicer.ListDatasets(data_service_pb2.ListDatasetsRequest(), None)
        by_id = {d.dataset_id: d for d in listed.datasets}
        assert set(by_id) == {"fine", "hdr", "nul"}
        assert by_id["fine"].error == "" and by_id["fine"].row_count == 10
        assert "limit per row" in by_id["hdr"].error and by_id["hdr"].size_bytes == len(long_header)
        assert "NUL byte" in by_id["nul"].error
    with pytest.raises(FailedPrecondition, match="NUL"):
        await servicer.GetDataset(data_service_pb2.GetDatasetRequest(dataset_id="nul"), None)


async def test_int64_cells_are_exact(storage: CountingStorage) -> None:
    servicer = DataServicer(Catalog(storage))
    big = [2**53 + 1, 2**63 - 1, -(2**63), 1278]
    text = "policy_id,premium_pp,sex\n" + "".join(f"{v},{0.5 + i},M\n" for i, v in enumerate(big))
    await upload(servicer, text.encode(), "ints", "csv")
    request = data_service_pb2.SampleRowsRequest(dataset_id="ints", n=4, seed=1, columns=["sex", "policy_id"])
    reply = await servicer.SampleRows(request, None)
    assert [c.name for c in reply.columns] == ["policy_id", "sex"]  # schema order, not request order
    rows = {r["row"]: r["values"] for r in sample_document(reply)["rows"]}
    assert {row: values["policy_id"] for row, values in rows.items()} == dict(enumerate(big))
    assert all(isinstance(v["policy_id"], int) for v in rows.values())
    assert reply.rows[0].cells[0].WhichOneof("value") == "int64_value"


async def test_sample_and_read_caps(storage: CountingStorage) -> None:
    limits = DataLimits(max_sample_bytes=50_000, max_message_rows=100, memory_budget_bytes=64 << 20)
    servicer = DataServicer(Catalog(storage), limits=limits)
    await upload(servicer, policies(1, 5000), "caps", "csv")
    with pytest.raises(ResourceExhausted, match="per-sample cap"):
        await servicer.SampleRows(data_service_pb2.SampleRowsRequest(dataset_id="caps", n=2000), None)
    ok = await servicer.SampleRows(data_service_pb2.SampleRowsRequest(dataset_id="caps", n=100), None)
    assert len(ok.rows) == 100
    request = data_service_pb2.ReadRowsRequest(dataset_id="caps", start_row=0, end_row=5000, batch_rows=1000)
    counts = [m.row_count async for m in servicer.ReadRows(request, None)]
    assert sum(counts) == 5000 and max(counts) == 100
    # a budget smaller than one read: refused at once, naming the budget
    tight = DataServicer(servicer.catalog, limits=DataLimits(memory_budget_bytes=1 << 20))
    with pytest.raises(ResourceExhausted, match=r"memory budget of 1\.0 MiB"):
        _ = [m async for m in tight.ReadRows(request, None)]
    assert tight.budget.reserved == 0


async def test_memory_budget_waits_then_refuses() -> None:
    budget = MemoryBudget(100, wait_seconds=0.2)
    async with budget.reserve(60, "first"):
        with pytest.raises(ResourceExhausted, match="in use"):
            async with budget.reserve(60, "second"):
                pass
        async with budget.reserve(40, "third"):
            assert budget.reserved == 100
    got: list[str] = []

    async def later() -> None:
        async with budget.reserve(80, "waiter"):
            got.append("in")

    async with anyio.create_task_group() as tg, budget.reserve(80, "holder"):
        tg.start_soon(later)
        await anyio.sleep(0.05)
        assert got == []
    assert got == ["in"] and budget.reserved == 0 and budget.peak_reserved == 100


async def test_garbage_page_tokens_are_refused(storage: CountingStorage) -> None:
    servicer = DataServicer(Catalog(storage))
    for i in range(3):
        await upload(servicer, policies(i, 2), f"d{i}", "csv")
    first = await servicer.ListDatasets(data_service_pb2.ListDatasetsRequest(page_size=2), None)
    second = await servicer.ListDatasets(
        data_service_pb2.ListDatasetsRequest(page_size=2, page_token=first.next_page_token), None
    )
    assert [d.dataset_id for d in second.datasets] == ["d2"]
    for garbage in ("zzz", "!!!!", "bm9wZQ==", first.next_page_token + "x", "YWZ0ZXI6Li4v"):
        with pytest.raises(InvalidArgument, match="page_token"):
            await servicer.ListDatasets(data_service_pb2.ListDatasetsRequest(page_token=garbage), None)


async def test_upload_reaches_the_format_of_its_sink(storage: CountingStorage) -> None:
    """The dataset source reported is the backend's, through the storage-neutral kind."""
    servicer = DataServicer(Catalog(storage))
    ds = await upload(servicer, policies(1, 3), "src", "csv")
    expected = data_pb2.DATASET_SOURCE_LOCAL if storage.kind == "local" else data_pb2.DATASET_SOURCE_AZURE_BLOB
    assert ds.source == expected
