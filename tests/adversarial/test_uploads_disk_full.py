"""A full disk during a dataset or package upload, against real servers on a small tmpfs (issue 19, item 10).

The upload answers RESOURCE_EXHAUSTED naming what it was writing and where, not INTERNAL; its
`.upload-*` file is gone at once; what was stored before stays readable; with room again the
same upload succeeds. Upload files of writers that died are removed when the data service or
the gateway's package store starts, however young, while an upload a live writer holds stays.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest

from livecalc.data.v1 import data_service_pb2, data_service_pb2_grpc
from services.data.generate import generate
from services.data.tenants import TENANTS_SCOPE, tenant_scope
from tests.data.test_service_backends import requests_for
from tests.engine.mesh import stochastic_package, upload_package
from tests.meshes import Services

TMPFS_BYTES = 2 << 20


@contextmanager
def tmpfs(path: Path, size: int = TMPFS_BYTES) -> Iterator[Path]:
    """A tmpfs of `size` bytes mounted at `path` for the block (skips where mounting is not permitted)."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill (needs root or CAP_SYS_ADMIN): {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(root: Path, leave: int) -> Path:
    """A filler file that leaves about `leave` bytes free on root's file system."""
    st = os.statvfs(root)
    free = st.f_bavail * st.f_frsize
    filler = root / "filler.bin"
    with filler.open("wb") as out:
        out.write(b"\0" * max(0, free - leave))
    return filler


def uploads_left(root: Path) -> list[Path]:
    return sorted(root.rglob(".upload-*"))


def dead_upload(directory: Path, name: str) -> Path:
    """An upload file as a killed writer leaves it: no lock held, written a moment ago."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f".upload-0123456789abcdef-{name}"
    path.write_bytes(b"policy_id,age\n1,30\n")
    return path


def test_full_disk_during_a_dataset_upload(tmp_path: Path) -> None:
    source = tmp_path / "big.csv"
    generate(source, 20_000, 5)  # about 1 MiB
    big = source.read_bytes()
    with tmpfs(tmp_path / "datasets") as root, Services(tmp_path) as services:
        generate(root / "pol.csv", 200, 1)
        tenant_dir = root / TENANTS_SCOPE / tenant_scope("acme")
        dead = [dead_upload(root, "old.csv"), dead_upload(tenant_dir, "old.parquet")]
        live = dead_upload(root, "live.csv")
        with live.open("rb") as held:
            fcntl.flock(held.fileno(), fcntl.LOCK_EX)  # a writer of another replica, still at work
            data = services.data(root)
            assert uploads_left(root) == [live]  # the dead writers' files went at start, the live one stays
        assert not any(p.exists() for p in dead)
        live.unlink()

        channel = grpc.insecure_channel(data.address)
        stub = data_service_pb2_grpc.DataServiceStub(channel)
        before = stub.GetDataset(data_service_pb2.GetDatasetRequest(dataset_id="pol"), timeout=30).dataset
        filler = fill(root, leave=256 << 10)
        with pytest.raises(grpc.RpcError) as info:
            stub.UploadDataset(iter(requests_for(big, "big", "csv")), timeout=60)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, info.value.details()
        assert f"no space left on device writing dataset 'big' under {root}" in (info.value.details() or "")
        assert uploads_left(root) == []
        # chunks smaller than the file buffer: the failed bytes wait in it, and closing fails again
        small = requests_for(big, "big", "csv")[:1] + [
            data_service_pb2.UploadDatasetRequest(chunk=big[i : i + 3000]) for i in range(0, len(big), 3000)
        ]
        with pytest.raises(grpc.RpcError) as info:
            stub.UploadDataset(iter(small), timeout=60)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, info.value.details()
        assert uploads_left(root) == []
        assert not (root / "big.csv").exists()
        after = stub.GetDataset(data_service_pb2.GetDatasetRequest(dataset_id="pol"), timeout=30).dataset
        assert after.version == before.version
        rows = list(stub.ReadRows(data_service_pb2.ReadRowsRequest(dataset_id="pol", start_row=0, end_row=200)))
        assert sum(r.row_count for r in rows) == 200

        filler.unlink()
        stored = stub.UploadDataset(iter(requests_for(big, "big", "csv")), timeout=60).dataset
        assert stored.row_count == 20_000 and uploads_left(root) == []
        channel.close()
        assert "Traceback" not in data.log()


def test_full_disk_during_a_package_upload(tmp_path: Path) -> None:
    archive = stochastic_package(tmp_path / "model")
    with tmpfs(tmp_path / "packages") as root, Services(tmp_path) as services:
        dead = dead_upload(root, f"package-{hashlib.sha256(b'x').hexdigest()}.zip")
        gateway = services.gateway(extra=["--packages-root", str(root)])
        assert not dead.exists() and uploads_left(root) == []
        filler = fill(root, leave=len(archive) // 2)
        with pytest.raises(grpc.RpcError) as info:
            upload_package(gateway.address, archive)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, info.value.details()
        details = info.value.details() or ""
        assert "no space left on device writing package " in details and f"under {root}" in details
        assert uploads_left(root) == []
        filler.unlink()
        assert len(upload_package(gateway.address, archive)) == 64
        assert uploads_left(root) == []
        assert "Traceback" not in gateway.log()
