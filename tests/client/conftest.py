"""A small mesh (data, one engine, gateway) shared by a client test module: as real processes
(`small_mesh`, for the tests about processes: signals, the README run, a fresh venv) or in this
process (`inprocess_small_mesh`, tests.inprocess: the same servicers, started in milliseconds)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pytest

from services.valuation.blocks import BLOCK_SIZE
from tests.engine.mesh import policies_csv, stochastic_package
from tests.inprocess import threaded_mesh
from tests.meshes import Services
from tests.support import ServiceProcess

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
    with Services(tmp) as services:
        data = services.data(root)
        engine = services.engine(data, "e0")
        gateway = services.gateway(data, [engine])
        yield SmallMesh(tmp, root, data, engine, gateway, model_dir, archive, table)


@dataclass
class InProcessSmallMesh:
    """`SmallMesh`'s datasets and package, served in this process: `data` and `gateway` are addresses."""

    tmp: Path
    root: Path
    data: str
    gateway: str
    model_dir: Path
    archive: bytes
    table: pa.Table


@pytest.fixture(scope="module")
def inprocess_small_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessSmallMesh]:
    tmp = tmp_path_factory.mktemp("client-inprocess")
    root = tmp / "datasets"
    root.mkdir()
    table = policies_csv(root / "pol.csv", ROWS)
    policies_csv(root / "long.csv", LONG_ROWS, seed=3)
    model_dir = tmp / "model"
    archive = stochastic_package(model_dir)
    with threaded_mesh(tmp, datasets=root) as mesh:
        yield InProcessSmallMesh(tmp, root, mesh.data, mesh.gateway, model_dir, archive, table)
