"""Issue 8 against real data service processes: large uploads through the CLI on local and
Azurite (item 1), no upload leftovers (6), and the small ones (9)."""

from __future__ import annotations

import hashlib
import os
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from livecalc.data.v1 import data_pb2, data_service_pb2, data_service_pb2_grpc
from services.data.cli import UPLOAD_CHUNK_BYTES
from services.data.upload import CHUNK_LIMIT
from tests.data.conftest import copy_into
from tests.data.test_functional import as_json, livecalc
from tests.support import VENV_BIN
from tests.waits import wait_for

pytestmark = pytest.mark.slow


def big_csv(path: Path, megabytes: int) -> Path:
    row = "{},41,F,20,1,250000,3,99.75\n"
    with path.open("w") as f:
        f.write("policy_id,age_at_entry,sex,policy_term,policy_count,sum_assured,duration_mth,premium_pp\n")
        i = 0
        while f.tell() < megabytes << 20:
            f.writelines(row.format(i + k) for k in range(10_000))
            i += 10_000
    return path


@pytest.mark.parametrize("backend", ["local", "azure"])
def test_fifty_megabyte_upload_through_the_cli(
    backend: str, service_factory: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    assert UPLOAD_CHUNK_BYTES <= CHUNK_LIMIT < 4 << 20
    if backend == "local":
        data = service_factory("data", extra=["--root", str(tmp_path / "datasets")])
    else:
        env = {
            "LIVECALC_DATA_AZURE_CONNECTION_STRING": request.getfixturevalue("azurite"),
            "LIVECALC_DATA_AZURE_CONTAINER": f"u{secrets.token_hex(6)}",
        }
        data = service_factory("data", env=env)
    path = big_csv(tmp_path / "fifty.csv", 50)
    up = as_json("datasets", "upload", str(path), "--address", data.address)
    assert int(up["size_bytes"]) == path.stat().st_size > 50 << 20
    rows = int(up["row_count"])
    assert rows > 1_500_000
    if backend == "local":
        assert up["version"] == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
        assert (tmp_path / "datasets" / "fifty.csv").read_bytes() == path.read_bytes()
    last = as_json("datasets", "sample", "fifty", "--n", "3", "--address", data.address)
    assert all(0 <= r["values"]["policy_id"] < rows for r in last["rows"])


def _leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith(".upload-"))


def _wait_until_clean(root: Path, seconds: float = 5.0) -> list[str]:
    deadline = time.monotonic() + seconds
    while _leftovers(root) and time.monotonic() < deadline:
        time.sleep(0.05)
    return _leftovers(root)


def test_cancelled_and_rejected_uploads_leave_no_temp_files(service_factory: Any, tmp_path: Path) -> None:
    root = tmp_path / "datasets"
    root.mkdir()
    data = service_factory("data", extra=["--root", str(root)])
    header = data_service_pb2.UploadHeader(
        dataset_id="x", format=data_pb2.DATASET_FORMAT_CSV, size_bytes=100 << 20, sha256="0" * 64
    )
    started = threading.Event()

    def slow() -> Iterator[data_service_pb2.UploadDatasetRequest]:
        yield data_service_pb2.UploadDatasetRequest(header=header)
        yield data_service_pb2.UploadDatasetRequest(chunk=b"a,b\n" + b"1,2\n" * 1000)
        started.set()
        for _ in range(200):
            time.sleep(0.05)
            yield data_service_pb2.UploadDatasetRequest(chunk=b"1,2\n" * 1000)

    with grpc.insecure_channel(data.address) as channel:
        stub = data_service_pb2_grpc.DataServiceStub(channel)
        future = stub.UploadDataset.future(slow())
        assert started.wait(10)
        wait_for(lambda: _leftovers(root), "the upload to be staged in a temporary file", seconds=5)
        future.cancel()
        assert _wait_until_clean(root) == []

        # a message over the 4 MiB limit: grpc refuses it before the handler sees it
        def oversized() -> Iterator[data_service_pb2.UploadDatasetRequest]:
            yield data_service_pb2.UploadDatasetRequest(header=header)
            yield data_service_pb2.UploadDatasetRequest(chunk=b"a,b\n" + b"1,2\n" * 1000)
            wait_for(lambda: _leftovers(root), "the upload to be staged")  # then refused mid-upload
            yield data_service_pb2.UploadDatasetRequest(chunk=b"x" * (4 << 20))

        with pytest.raises(grpc.RpcError) as err:
            stub.UploadDataset(oversized(), timeout=20)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert _wait_until_clean(root) == []


def test_small_ones(service_factory: Any, tmp_path: Path, small_files: dict[str, Path]) -> None:
    root = tmp_path / "datasets"
    copy_into(root, small_files["csv"], "pol.csv")
    data = service_factory("data", extra=["--root", str(root)], grace=3.0)
    addr = ["--address", data.address]
    # an out-of-range --n is a usage error on one line, not a traceback
    huge = livecalc("datasets", "sample", "pol", "--n", "99999999999999999999", *addr)
    assert huge.returncode == 2 and "Traceback" not in huge.stderr
    assert "must be in 1..9223372036854775807" in huge.stderr.strip().splitlines()[-1]
    # a reader that stops early gets no "Broken pipe" error
    piped = subprocess.run(
        f"{VENV_BIN / 'livecalc'} datasets sample pol --n 1000 --json --address {data.address} | head -1",
        shell=True,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert piped.stdout == "{\n" and piped.stderr == "", piped.stderr
    with grpc.insecure_channel(data.address) as channel:
        # bytes that are no request at all: INVALID_ARGUMENT, not UNKNOWN
        raw = channel.unary_unary("/livecalc.data.v1.DataService/GetDataset")
        with pytest.raises(grpc.RpcError) as err:
            raw(b"\xff\xff\xff", timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        stub = data_service_pb2_grpc.DataServiceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.ListDatasets(data_service_pb2.ListDatasetsRequest(page_token="garbage"), timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # an RPC still running at shutdown ends with UNAVAILABLE, and the log stays clean
        header = data_service_pb2.UploadHeader(
            dataset_id="late", format=data_pb2.DATASET_FORMAT_CSV, size_bytes=1 << 30, sha256="0" * 64
        )

        def endless() -> Iterator[data_service_pb2.UploadDatasetRequest]:
            yield data_service_pb2.UploadDatasetRequest(header=header)
            yield data_service_pb2.UploadDatasetRequest(chunk=b"a,b\n")
            for _ in range(400):  # far longer than the grace period
                time.sleep(0.05)
                yield data_service_pb2.UploadDatasetRequest(chunk=b"1,2\n")

        future = stub.UploadDataset.future(endless(), timeout=30)
        wait_for(lambda: _leftovers(root), "the upload to be running")
        data.proc.terminate()
        with pytest.raises(grpc.RpcError) as err:
            future.result(timeout=20)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert data.proc.wait(timeout=10) == 0
    log = data.log()
    assert "Traceback" not in log and "CancelledError" not in log and " error " not in log, log
    assert os.path.exists(root / "pol.csv")
