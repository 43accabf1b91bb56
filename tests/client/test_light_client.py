"""The light client alone: a fresh virtual environment that installs only livecalc-client
(clients/python: grpcio and protobuf) has none of the services' dependencies nor a `services`
package, and runs the README's client example verbatim against a mesh, uploading a package
file (building a directory needs livecalc-mesh). The example runs in that environment's own
process; the mesh serves it from this one (tests.inprocess: the same servicers over loopback gRPC)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.client.conftest import InProcessSmallMesh
from tests.client.test_readme_example import readme_python_example
from tests.support import ROOT

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

ABSENT = ("wasmtime", "pyarrow", "matplotlib", "azure", "numpy", "services")


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, (cmd, done.stdout[-2000:], done.stderr[-4000:])
    return done


def test_the_light_client_installs_alone_and_runs_the_readme_example(
    inprocess_small_mesh: InProcessSmallMesh, tmp_path: Path
) -> None:
    small_mesh = inprocess_small_mesh
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["HOME"] = str(tmp_path / "home")
    env["PIP_CACHE_DIR"] = os.environ.get("PIP_CACHE_DIR", str(Path.home() / ".cache" / "pip"))
    # install from a copy of what the distribution is made of (setuptools writes build/ next to it)
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    shutil.copytree(ROOT / "clients" / "python", src / "clients" / "python", ignore=ignore)
    shutil.copytree(ROOT / "gen" / "livecalc", src / "gen" / "livecalc", ignore=ignore)
    venv = tmp_path / "venv"
    python = str(venv / "bin" / "python")
    _run([sys.executable, "-m", "venv", str(venv)], tmp_path, env, 120)
    _run([python, "-m", "pip", "install", "-q", str(src / "clients" / "python")], tmp_path, env, 240)
    work = tmp_path / "elsewhere"  # not the checkout: its services/ must not be importable
    work.mkdir()
    for name in ABSENT:
        probe = subprocess.run([python, "-c", f"import {name}"], cwd=work, env=env, capture_output=True, check=False)
        assert probe.returncode != 0, f"{name} is importable in the light client's environment"
    installed = _run([python, "-m", "pip", "list", "--format=freeze"], work, env, 60).stdout
    names = {line.split("==")[0].lower().replace("_", "-") for line in installed.splitlines()}
    # pip and setuptools: what python 3.11's venv starts with
    assert names <= {"livecalc-client", "grpcio", "protobuf", "typing-extensions", "pip", "setuptools"}, names

    package = work / "term-life.zip"
    package.write_bytes(small_mesh.archive)
    env |= {
        "LIVECALC_GATEWAY": small_mesh.gateway,
        "LIVECALC_DATASET": "pol",
        "LIVECALC_PACKAGE": str(package),
    }
    done = _run([python, "-c", readme_python_example()], work, env, 150)
    print(done.stdout)
    lines = done.stdout.splitlines()
    assert lines[0].endswith(" policies") and any(" / " in line for line in lines)
    assert "state succeeded policies " in done.stdout  # a typed Job's state, by name
    assert re.fullmatch(r"hash [0-9a-f]{64}", lines[-1]), done.stdout

    # a package directory needs livecalc-mesh's builder: a one-line error that says so
    script = (
        "from livecalc_client import Client\n"
        "from livecalc_client.errors import InvalidArgument\n"
        f"lc = Client({small_mesh.gateway!r})\n"
        "try:\n"
        f"    lc.upload_package({str(small_mesh.model_dir)!r})\n"
        "except InvalidArgument as exc:\n"
        "    print(exc)\n"
        "finally:\n"
        "    lc.close()\n"
    )
    refused = _run([python, "-c", script], work, env, 60).stdout
    assert "needs livecalc-mesh" in refused, refused
