"""An engine reads only the columns the model declares: a dataset may carry columns no model
reads (notes, spec ids, a wide free-text column), and those are neither read from storage nor
sent to the engine. The same job on the dataset with and without a wide undeclared column gives
the same result hash, and the wide one reads a fraction of its bytes from storage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from livecalc.engine.v1 import engine_pb2
from livecalc.gateway.v1 import job_pb2
from services.data.generate import generate
from services.valuation.blocks import BLOCK_SIZE
from tests.engine.mesh import datasets_dir, stochastic_package, upload_package
from tests.gateway.jobmesh import submit
from tests.inprocess import InProcessMesh, threaded_mesh

ROWS = 3 * BLOCK_SIZE - 100
NOTE_CHARS = 400


def storage_bytes(mesh: InProcessMesh) -> float:
    """Bytes the data service has read from storage (every source)."""
    registry = mesh.registries[mesh.data]
    return sum(
        s.value for m in registry.collect() for s in m.samples if s.name == "livecalc_data_storage_read_bytes_total"
    )


@pytest.mark.timeout(120)
def test_undeclared_columns_are_not_read(tmp_path: Path) -> None:
    root = datasets_dir(tmp_path)
    generate(root / "narrow.parquet", ROWS, 4)
    narrow = pq.read_table(root / "narrow.parquet")
    rng = np.random.default_rng(4)
    letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz0123456789", dtype="S1")
    notes = [rng.choice(letters, NOTE_CHARS).tobytes().decode() for _ in range(ROWS)]  # incompressible text
    pq.write_table(narrow.append_column("notes", pa.array(notes)), root / "wide.parquet")
    wide_file = (root / "wide.parquet").stat().st_size
    assert wide_file > 10 * (root / "narrow.parquet").stat().st_size
    archive = stochastic_package(tmp_path / "model")
    with threaded_mesh(tmp_path, datasets=root, threads=2) as mesh:
        package_hash = upload_package(mesh.gateway, archive)
        hashes, read = {}, {}
        for dataset in ("narrow", "wide"):
            before = storage_bytes(mesh)
            spec = job_pb2.JobSpec(package_hash=package_hash, dataset_id=dataset,
                                   scenarios=engine_pb2.ScenarioSpec(count=20))  # fmt: skip
            events = submit(mesh.gateway, spec)
            assert events[-1].WhichOneof("event") == "result", events[-1]
            hashes[dataset] = events[-1].result.result_hash
            read[dataset] = storage_bytes(mesh) - before
    assert hashes["wide"] == hashes["narrow"]
    # the wide file is nearly all notes: reading them would read about the whole file
    assert 0 < read["wide"] < 0.2 * wide_file, (read, wide_file)
