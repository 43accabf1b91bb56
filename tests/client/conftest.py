"""A small mesh (data, one engine, gateway) shared by a client test module, in this process
(`inprocess_small_mesh`, tests.inprocess: the real servicers over loopback gRPC, started in
milliseconds); a client in a process of its own (a `livecalc jobs watch` that gets SIGINT, the
README run, a fresh venv) reaches it the same way."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pytest

from services.valuation.blocks import BLOCK_SIZE
from tests.engine.mesh import datasets_dir, policies_csv, stochastic_package
from tests.inprocess import threaded_mesh

ROWS = 6 * BLOCK_SIZE - 100
LONG_ROWS = 40 * BLOCK_SIZE


@dataclass
class SmallInputs:
    """What both small meshes serve: datasets `pol` (`table`) and `long` in `root`, the
    stochastic package as a directory and as an archive, all under `tmp`."""

    tmp: Path
    root: Path
    model_dir: Path
    archive: bytes
    table: pa.Table


def small_inputs(tmp: Path) -> SmallInputs:
    root = datasets_dir(tmp)
    table = policies_csv(root / "pol.csv", ROWS)
    policies_csv(root / "long.csv", LONG_ROWS, seed=3)
    model_dir = tmp / "model"
    archive = stochastic_package(model_dir)
    return SmallInputs(tmp, root, model_dir, archive, table)


@dataclass
class InProcessSmallMesh(SmallInputs):
    """The small inputs, served in this process: `data` and `gateway` are addresses."""

    data: str
    gateway: str


@pytest.fixture(scope="module")
def inprocess_small_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessSmallMesh]:
    inputs = small_inputs(tmp_path_factory.mktemp("client-inprocess"))
    with threaded_mesh(inputs.tmp, datasets=inputs.root) as mesh:
        yield InProcessSmallMesh(**vars(inputs), data=mesh.data, gateway=mesh.gateway)
