"""The data service exports its storage reads, uploads and memory budget on its Prometheus endpoint."""

from __future__ import annotations

import hashlib
import re
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from livecalc.data.v1 import data_pb2, data_service_pb2, data_service_pb2_grpc
from services.data.limits import MIB
from services.data.upload import CHUNK_LIMIT
from tests.support import VENV_BIN, metrics_text

pytestmark = pytest.mark.slow


def read_bytes(metrics_port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    match = re.search(r'^livecalc_data_storage_read_bytes_total\{source="local"\} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


def test_sampling_reads_are_counted_and_bounded(service_factory: Any, tmp_path: Path) -> None:
    root = tmp_path / "datasets"
    root.mkdir()
    generate = [str(VENV_BIN / "livecalc"), "datasets", "generate", "--rows", "100000", "--seed", "3"]
    subprocess.run([*generate, "--out", str(root / "pol.csv")], check=True, capture_output=True, timeout=60)
    size = (root / "pol.csv").stat().st_size
    data = service_factory("data", extra=["--root", str(root)])
    with grpc.insecure_channel(data.address) as channel:
        stub = data_service_pb2_grpc.DataServiceStub(channel)
        stub.GetDataset(data_service_pb2.GetDatasetRequest(dataset_id="pol"), timeout=30)
        after_metadata = read_bytes(data.metrics_port)
        stub.SampleRows(data_service_pb2.SampleRowsRequest(dataset_id="pol", n=3, seed=7), timeout=30)
        after_sample = read_bytes(data.metrics_port)
    # The first sight of a CSV builds its index (one full pass); a 3-row sample then reads a
    # few checkpoint ranges, far less than the file.
    assert after_metadata >= size
    assert 0 < after_sample - after_metadata < size / 10


def _samples(service: Any) -> dict[str, float]:
    """Every sample of the service's /metrics by its name and labels as exposed."""
    samples: dict[str, float] = {}
    for line in metrics_text(service).splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def _upload(
    dataset_id: str, body: bytes, *, sha256: str | None = None, hold: threading.Event | None = None
) -> Iterator[data_service_pb2.UploadDatasetRequest]:
    """An upload's messages; with `hold`, the last chunk waits until it is set."""
    header = data_service_pb2.UploadHeader(
        dataset_id=dataset_id,
        format=data_pb2.DATASET_FORMAT_CSV,
        size_bytes=len(body),
        sha256=sha256 or hashlib.sha256(body).hexdigest(),
    )
    yield data_service_pb2.UploadDatasetRequest(header=header)
    half = len(body) // 2
    yield data_service_pb2.UploadDatasetRequest(chunk=body[:half])
    if hold is not None:
        hold.wait(30)
    yield data_service_pb2.UploadDatasetRequest(chunk=body[half:])


def test_uploads_and_the_memory_budget_are_exported(service_factory: Any, tmp_path: Path) -> None:
    """Uploads by outcome (calls and bytes), the budget and what is reserved from it, on /metrics."""
    source = tmp_path / "pol.csv"
    generate = [str(VENV_BIN / "livecalc"), "datasets", "generate", "--rows", "2000", "--seed", "5"]
    subprocess.run([*generate, "--out", str(source)], check=True, capture_output=True, timeout=60)
    body = source.read_bytes()
    data = service_factory("data", extra=["--root", str(tmp_path / "datasets"), "--memory-budget-mb", "100"])
    before = _samples(data)
    assert before["livecalc_data_memory_budget_bytes"] == 100 * MIB
    assert before["livecalc_data_memory_reserved_bytes"] == 0
    with grpc.insecure_channel(data.address) as channel:
        stub = data_service_pb2_grpc.DataServiceStub(channel)
        # An upload in flight holds its reservation (two chunks in flight for a CSV) until it ends.
        hold = threading.Event()
        pending = stub.UploadDataset.future(_upload("pol", body, hold=hold), timeout=60)
        deadline = time.monotonic() + 30
        while _samples(data)["livecalc_data_memory_reserved_bytes"] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _samples(data)["livecalc_data_memory_reserved_bytes"] == 2 * CHUNK_LIMIT
        hold.set()
        assert pending.result().dataset.row_count == 2000
        # The same id again without overwrite, and a body whose hash is not the announced one.
        with pytest.raises(grpc.RpcError) as exists:
            stub.UploadDataset(_upload("pol", body), timeout=60)
        assert exists.value.code() == grpc.StatusCode.ALREADY_EXISTS
        with pytest.raises(grpc.RpcError) as mismatch:
            stub.UploadDataset(_upload("other", body, sha256="0" * 64), timeout=60)
        assert mismatch.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    after = _samples(data)
    assert after['livecalc_data_uploads_total{outcome="ok"}'] == 1
    assert after['livecalc_data_upload_bytes_total{outcome="ok"}'] == len(body)
    # Refused before its chunks were read: counted, with the bytes that reached the service.
    assert after['livecalc_data_uploads_total{outcome="already_exists"}'] == 1
    assert after['livecalc_data_upload_bytes_total{outcome="already_exists"}'] < len(body)
    assert after['livecalc_data_uploads_total{outcome="invalid_argument"}'] == 1
    assert after['livecalc_data_upload_bytes_total{outcome="invalid_argument"}'] == len(body)
    assert after["livecalc_data_memory_reserved_bytes"] == 0
    assert after["livecalc_data_memory_budget_bytes"] == 100 * MIB
