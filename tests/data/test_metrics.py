"""The data service exports its storage reads on its Prometheus endpoint."""

from __future__ import annotations

import re
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest

from livecalc.data.v1 import data_service_pb2, data_service_pb2_grpc
from tests.support import VENV_BIN

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
