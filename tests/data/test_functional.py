"""The data service as people and engines meet it: real processes, grpcurl, the CLI, Azurite.

The CLI's successful commands run through its `main` in this process (what they print is the
same; a process adds a second each); its errors run as `livecalc` processes, whose stderr must be
the one line the user sees."""

from __future__ import annotations

import json
import secrets
import subprocess
from pathlib import Path
from typing import Any

import grpc
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from livecalc.data.v1 import data_service_pb2, data_service_pb2_grpc
from tests.client.clitools import livecalc, livecalc_in_process
from tests.data.conftest import copy_into
from tests.support import VENV_BIN

pytestmark = pytest.mark.slow
GRPCURL = VENV_BIN / "grpcurl"


def as_json(*args: str) -> Any:
    result = livecalc_in_process(*args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_local_service_cli_grpcurl_and_statuses(
    service_factory: Any, tmp_path: Path, small_files: dict[str, Path]
) -> None:
    root = tmp_path / "datasets"
    copy_into(root, small_files["csv"], "pol.csv")
    data = service_factory("data", extra=["--root", str(root)])
    addr = ["--address", data.address]

    listed = as_json("datasets", "list", *addr)
    assert [d["dataset_id"] for d in listed["datasets"]] == ["pol"]
    shown = as_json("datasets", "show", "pol", *addr)
    assert shown["row_count"] == 1000 and shown["format"] == "DATASET_FORMAT_CSV"  # int64 as an integer
    assert shown["version"].startswith("sha256:")
    schema = as_json("datasets", "schema", "pol", *addr)
    assert schema["columns"][0] == {"name": "policy_id", "type": "COLUMN_TYPE_INT64", "nullable": True}
    sample = as_json("datasets", "sample", "pol", "--n", "5", "--seed", "42", *addr)
    assert len(sample["rows"]) == 5 and sample["dataset_row_count"] == 1000
    # ints as ints, columns in schema order, and the same bytes every time
    assert isinstance(sample["rows"][0]["values"]["policy_id"], int)
    assert list(sample["rows"][0]["values"]) == [c["name"] for c in schema["columns"]]
    again = livecalc_in_process("datasets", "sample", "pol", "--n", "5", "--seed", "42", *addr, "--json")
    assert again.stdout == json.dumps(sample, indent=2) + "\n"
    report = as_json("datasets", "validate", "pol", *addr)
    assert report["valid"] is True

    # upload the Parquet twin through the CLI, then the same sample comes back
    up = as_json("datasets", "upload", str(small_files["parquet"]), "--id", "pol_pq", *addr)
    assert up["row_count"] == 1000
    twin = as_json("datasets", "sample", "pol_pq", "--n", "5", "--seed", "42", *addr)
    assert [r["row"] for r in twin["rows"]] == [r["row"] for r in sample["rows"]]
    assert [r["values"] for r in twin["rows"]] == [r["values"] for r in sample["rows"]]

    # grpcurl: reflection, and readable JSON rows from SampleRows
    out = subprocess.run(
        [
            str(GRPCURL),
            "-plaintext",
            "-d",
            '{"dataset_id": "pol", "n": 3, "seed": 7}',
            data.address,
            "livecalc.data.v1.DataService/SampleRows",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    answer = json.loads(out)
    rows = answer["rows"]
    assert len(rows) == 3
    names = [c["name"] for c in answer["columns"]]
    assert names[:4] == ["policy_id", "age_at_entry", "sex", "policy_term"]
    first = dict(zip(names, rows[0]["cells"], strict=True))
    assert first["sex"]["stringValue"] in ("M", "F")
    assert first["policy_id"]["int64Value"].isdigit()  # int64: exact, as proto3 JSON's string

    # errors: one line on stderr, non-zero exit, the right status
    for args, status in (
        (("datasets", "show", "missing"), "not_found"),
        (("datasets", "show", "../etc"), "invalid_argument"),
        (("datasets", "show", "/etc/passwd"), "invalid_argument"),
        (("datasets", "sample", "pol", "--n", "1001"), "invalid_argument"),
        (("datasets", "upload", str(small_files["csv"]), "--id", "pol"), "already_exists"),
    ):
        result = livecalc(*args, *addr)
        assert result.returncode == 1, args
        assert result.stdout == ""
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"livecalc: error: {status}:"), result.stderr
    with grpc.insecure_channel(data.address) as channel:
        stub = data_service_pb2_grpc.DataServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            list(stub.ReadRows(data_service_pb2.ReadRowsRequest(dataset_id="pol", start_row=5, end_row=2)))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as err:
            stub.GetDataset(data_service_pb2.GetDatasetRequest(dataset_id="nope"))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    unreachable = livecalc("datasets", "list", "--address", "127.0.0.1:1")
    assert unreachable.returncode == 1 and "cannot reach the data service" in unreachable.stderr


def test_same_sample_from_local_and_azure_servers(
    service_factory: Any, tmp_path: Path, small_files: dict[str, Path], azurite: str
) -> None:
    root = tmp_path / "datasets"
    copy_into(root, small_files["parquet"], "pol.parquet")
    local = service_factory("data", extra=["--root", str(root)])
    env = {
        "LIVECALC_DATA_AZURE_CONNECTION_STRING": azurite,
        "LIVECALC_DATA_AZURE_CONTAINER": f"c{secrets.token_hex(6)}",
    }
    blob = service_factory("data", env=env)
    up = as_json("datasets", "upload", str(small_files["parquet"]), "--id", "pol", "--address", blob.address)
    assert up["source"] == "DATASET_SOURCE_AZURE_BLOB" and up["location"].endswith("/pol.parquet")
    a = as_json("datasets", "sample", "pol", "--n", "50", "--seed", "123", "--address", local.address)
    b = as_json("datasets", "sample", "pol", "--n", "50", "--seed", "123", "--address", blob.address)
    assert a["version"] != b["version"]  # content hash vs ETag
    assert a["rows"] == b["rows"]
    # ReadRows over blob returns exactly the rows
    reference = pq.read_table(small_files["parquet"])
    with grpc.insecure_channel(blob.address) as channel:
        stub = data_service_pb2_grpc.DataServiceStub(channel)
        request = data_service_pb2.ReadRowsRequest(dataset_id="pol", start_row=10, end_row=990, batch_rows=128)
        tables = [pa.ipc.open_stream(m.arrow_ipc).read_all() for m in stub.ReadRows(request)]
    assert pa.concat_tables(tables).equals(reference.slice(10, 980))
