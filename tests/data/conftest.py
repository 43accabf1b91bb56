"""Fixtures of the data service tests: small datasets, a real Azurite, large generated files."""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from services.common import rss
from services.common.storage.azure_blob import AzureBlobStorage, AzureConfig
from services.common.storage.base import CountingStorage, Storage
from services.common.storage.local import LocalStorage
from services.data.generate import generate
from tests.support import ROOT, VENV_BIN, free_port

AZURITE = ROOT / "node_modules" / ".bin" / "azurite-blob"
#: The well-known public key of the Azure storage emulator (not a secret).
EMULATOR_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
BIG_ROWS = 2_000_000
#: Peak resident memory of `livecalc datasets generate` for the big files, by suffix.
GENERATE_PEAK_MB: dict[str, float] = {}


def connection_string(port: int) -> str:
    return (
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
        f"AccountKey={EMULATOR_KEY};BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;"
    )


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Azurite blob emulator on a free port; yields its connection string."""
    if not AZURITE.exists():
        pytest.fail(f"{AZURITE} is missing: run `npm install` (package azurite)")
    port = free_port()
    workdir = tmp_path_factory.mktemp("azurite")
    proc = subprocess.Popen(
        [
            str(AZURITE),
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(port),
            "--inMemoryPersistence",
            "--skipApiVersionCheck",
            "--loose",
            "--disableTelemetry",
            "--silent",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=workdir,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail("Azurite did not start")
            time.sleep(0.1)
    try:
        yield connection_string(port)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.fixture(scope="session")
def small_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """1,000 generated policies as CSV and Parquet (same rows), generated once."""
    d = tmp_path_factory.mktemp("small")
    out = {"csv": d / "pol.csv", "parquet": d / "pol.parquet"}
    for path in out.values():
        generate(path, 1000, 11)
    return out


@pytest.fixture(scope="session")
def big_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """2,000,000 generated policies as CSV and Parquet, generated once per session."""
    d = tmp_path_factory.mktemp("big")
    out = {"csv": d / "big.csv", "parquet": d / "big_pq.parquet"}

    def generate_peak_mb(path: Path, rows: int) -> float:
        """Peak RSS of ``livecalc datasets generate`` as its own process, in MB."""
        proc = subprocess.Popen(
            [
                str(VENV_BIN / "livecalc"),
                "datasets",
                "generate",
                "--rows",
                str(rows),
                "--seed",
                "2024",
                "--out",
                str(path),
            ],
            stdout=subprocess.DEVNULL,
        )
        peak = rss.wait_peak_rss_bytes(proc)
        assert proc.returncode == 0
        return peak / (1 << 20)

    for path in out.values():
        # the CLI's own imports (pyarrow, numpy, wasmtime, grpc) are most of a run's peak; a run of
        # 1,000 rows measures them, so the difference is what generating 2M rows adds
        baseline = generate_peak_mb(d / f"tiny{path.suffix}", 1000)
        GENERATE_PEAK_MB[path.suffix] = generate_peak_mb(path, BIG_ROWS) - baseline
    return out


@pytest.fixture(params=["local", "azure"])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[CountingStorage]:
    """The same tests on a local directory and on a fresh container of a real Azurite."""
    inner: Storage
    if request.param == "local":
        inner = LocalStorage(tmp_path / "datasets")
    else:
        conn = request.getfixturevalue("azurite")
        inner = await AzureBlobStorage.open(AzureConfig(conn, f"t{secrets.token_hex(8)}"))
    counting = CountingStorage(inner)
    yield counting
    await counting.close()


def copy_into(root: Path, source: Path, name: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    target = root / name
    shutil.copyfile(source, target)
    return target
