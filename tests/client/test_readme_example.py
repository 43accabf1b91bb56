"""The README's Python client example, executed verbatim (the first ```python block) in a process
of its own against a mesh served from the test's process (tests.inprocess: the same servicers over
loopback gRPC); its environment variables point it at the test's gateway, dataset and package
(here a package directory, which livecalc-mesh builds; tests/client/test_light_client.py runs it
with livecalc-client alone and a package file)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.client.conftest import InProcessSmallMesh
from tests.support import ROOT

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]


def readme_python_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    assert blocks, "the README has no python example"
    return str(blocks[0])


def test_readme_python_example_runs_verbatim(inprocess_small_mesh: InProcessSmallMesh) -> None:
    small_mesh = inprocess_small_mesh
    env = {
        **os.environ,
        "LIVECALC_GATEWAY": small_mesh.gateway,
        "LIVECALC_DATASET": "pol",
        "LIVECALC_PACKAGE": str(small_mesh.model_dir),
    }
    done = subprocess.run(
        [sys.executable, "-c", readme_python_example()],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=150,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].endswith(" policies") and any(" / " in line for line in lines)
    assert "state succeeded policies " in done.stdout  # a typed Job's state, by name
    assert re.fullmatch(r"hash [0-9a-f]{64}", lines[-1]), done.stdout
