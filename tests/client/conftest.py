"""A small mesh as real processes (data, one engine, gateway) shared by the client tests."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pytest

from services.valuation.blocks import BLOCK_SIZE
from tests.engine.mesh import policies_csv, stochastic_package
from tests.gateway.jobmesh import start_engine, start_gateway
from tests.support import ServiceProcess, start_service

ROWS = 6 * BLOCK_SIZE - 100
LONG_ROWS = 40 * BLOCK_SIZE


@dataclass
class SmallMesh:
    tmp: Path
    root: Path
    data: ServiceProcess
    engine: ServiceProcess
    gateway: ServiceProcess
    model_dir: Path
    archive: bytes
    table: pa.Table


@pytest.fixture(scope="module")
def small_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmallMesh]:
    tmp = tmp_path_factory.mktemp("client")
    root = tmp / "datasets"
    root.mkdir()
    table = policies_csv(root / "pol.csv", ROWS)
    policies_csv(root / "long.csv", LONG_ROWS, seed=3)
    model_dir = tmp / "model"
    archive = stochastic_package(model_dir)
    started: list[ServiceProcess] = []
    try:
        data = start_service("data", tmp, extra=["--root", str(root)])
        started.append(data)
        engine = start_engine(tmp, data, "e0")
        started.append(engine)
        gateway = start_gateway(tmp, data, [engine], tmp / "gw")
        started.append(gateway)
        yield SmallMesh(tmp, root, data, engine, gateway, model_dir, archive, table)
    finally:
        for service in reversed(started):
            service.terminate()
