"""docs/model-authoring.md, followed literally: every ```shell command of the guide run in order in
an empty directory, every edit it shows applied, every output and excerpt it quotes checked; the
job it values is then checked against a numpy implementation of the same product
(tests/sdk/endowment.py) per policy and scenario to 1e-9 relative, and its result hash against
the same package run in-process on the WASM host.

The only changes to the guide's commands: `livecalc up` gets a free `--port-offset` (and runs in
the background until the test ends), and commands that talk to a service get `--address` of that
mesh. Its services stop without draining (tests.support.NO_DRAIN): no balancer watches them. A
guide command that stops working fails this test.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from services.common.config import DEFAULT_PORTS
from services.engine.pipeline import PipelineRunner
from services.engine.runtime import Runtime
from services.engine.workers import WasmPool
from services.valuation.blocks import fold
from tests.sdk.endowment import OUTPUTS, Package, endowment_pvs
from tests.support import NO_DRAIN, ROOT, VENV_BIN, free_offset, read_until_up

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]

GUIDE = ROOT / "docs" / "model-authoring.md"
RTOL = 1e-9
_BLOCK = re.compile(
    r"<!-- (?P<marker>[^>]*?) -->\s*```[\w-]*\n(?P<marked>.*?)```|```shell\n(?P<shell>.*?)```", flags=re.DOTALL
)
DATA_COMMANDS = {("datasets", "upload"), ("datasets", "list"), ("datasets", "inspect"), ("datasets", "sample")}
GATEWAY_GROUPS = {"submit", "jobs", "package"}
LOCAL_PACKAGE_COMMANDS = {"init", "build", "validate", "inspect"}


@dataclass(frozen=True)
class Step:
    """One thing the guide has the reader do or see: ``kind`` is shell (``text``: commands),
    output (lines the last command printed), excerpt (text ``path`` holds) or edit (``text``
    found once in ``path`` becomes ``replace``)."""

    kind: str
    text: str
    path: str = ""
    replace: str = ""


def guide_steps(markdown: str) -> list[Step]:
    steps: list[Step] = []
    pending: tuple[str, str] | None = None
    for m in _BLOCK.finditer(markdown):
        if m["shell"] is not None:
            steps.append(Step("shell", m["shell"]))
            continue
        marker, body = m["marker"].strip(), m["marked"]
        if marker == "output":
            steps.append(Step("output", body))
        elif (excerpt := re.fullmatch(r"excerpt (\S+)", marker)) is not None:
            steps.append(Step("excerpt", body, excerpt[1]))
        elif (edit := re.fullmatch(r"edit (\S+): (find|replace)", marker)) is not None:
            if edit[2] == "find":
                assert pending is None, f"two finds in a row before {edit[1]}"
                pending = (edit[1], body)
            else:
                assert pending is not None and pending[0] == edit[1], f"a replace without its find in {edit[1]}"
                steps.append(Step("edit", pending[1], pending[0], body))
                pending = None
        else:
            raise AssertionError(f"unknown guide marker {marker!r}")
    assert pending is None, "a find without its replace"
    return steps


@dataclass
class Mesh:
    """`livecalc up` as the guide starts it, on ports shifted by ``offset``."""

    offset: int
    proc: subprocess.Popen[bytes] | None = None
    lines: list[str] = field(default_factory=list)

    def address(self, service: str) -> str:
        return f"127.0.0.1:{DEFAULT_PORTS[service][0] + self.offset}"

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def _argv(line: str, mesh: Mesh) -> list[str] | None:
    """The command of a guide line (None for a blank or comment line), pointed at ``mesh``."""
    argv = shlex.split(line, comments=True)
    if not argv:
        return None
    program, *args = argv
    if program == "python":
        return [sys.executable, *args]
    assert program == "livecalc", f"the guide's commands are livecalc or python: {line!r}"
    command = tuple(args[:2])
    if command in DATA_COMMANDS:
        args += ["--address", mesh.address("data")]
    elif args[0] in GATEWAY_GROUPS and not (args[0] == "package" and args[1] in LOCAL_PACKAGE_COMMANDS):
        args += ["--address", mesh.address("gateway")]
    return [str(VENV_BIN / "livecalc"), *args]


@dataclass
class Reader:
    """Follows the guide in ``cwd``: runs, edits, checks."""

    cwd: Path
    mesh: Mesh
    last: str = ""
    ran: list[str] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        path = f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"
        return {**os.environ, **NO_DRAIN, "PATH": path, "PYTHONUNBUFFERED": "1"}

    def shell(self, block: str) -> None:
        for line in block.splitlines():
            argv = _argv(line, self.mesh)
            if argv is None:
                continue
            self.ran.append(line)
            if argv[1:2] == ["up"]:
                self.start_mesh(argv)
                continue
            done = subprocess.run(
                argv, cwd=self.cwd, env=self.env(), capture_output=True, text=True, timeout=120, check=False
            )
            self.last = done.stdout + done.stderr
            should_fail = "fails" in line.partition("#")[2]
            assert (done.returncode != 0) == should_fail, f"{line}\nexit {done.returncode}\n{self.last}"

    def start_mesh(self, argv: list[str]) -> None:
        assert self.mesh.proc is None, "the guide starts the mesh once"
        self.mesh.proc = subprocess.Popen(
            [*argv, "--port-offset", str(self.mesh.offset)],
            cwd=self.cwd,
            env=self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.mesh.lines = read_until_up(self.mesh.proc, 90)
        assert "livecalc mesh is up" in self.mesh.lines[-1], "".join(self.mesh.lines)

    def follow(self, step: Step) -> None:
        if step.kind == "shell":
            self.shell(step.text)
        elif step.kind == "output":
            for line in step.text.splitlines():
                assert line.strip() in self.last, f"the guide shows {line.strip()!r}; the command printed:\n{self.last}"
        elif step.kind == "excerpt":
            assert step.text in (self.cwd / step.path).read_text(encoding="utf-8"), f"{step.path} lacks:\n{step.text}"
        else:
            path = self.cwd / step.path
            text = path.read_text(encoding="utf-8")
            assert text.count(step.text) == 1, f"{step.path} should hold once:\n{step.text}"
            path.write_text(text.replace(step.text, step.replace), encoding="utf-8")


def mesh_ports(offset: int) -> list[int]:
    return [p + offset for pair in DEFAULT_PORTS.values() for p in pair]


@pytest.fixture
def reader(tmp_path: Path) -> Iterator[Reader]:
    mesh = Mesh(free_offset(mesh_ports))
    try:
        yield Reader(tmp_path, mesh)
    finally:
        mesh.stop()
        if mesh.proc is not None and mesh.proc.stdout is not None:
            mesh.proc.stdout.close()


def test_the_guide_values_a_new_product_that_numpy_confirms(reader: Reader) -> None:
    steps = guide_steps(GUIDE.read_text(encoding="utf-8"))
    assert {s.kind for s in steps} == {"shell", "output", "excerpt", "edit"}
    for step in steps:
        reader.follow(step)
    for needed in ("package init", "package build", "package validate", "datasets upload", "package upload", "submit"):
        assert any(needed in line for line in reader.ran), f"the guide never runs livecalc {needed}"
    assert reader.mesh.proc is not None, "the guide never starts a mesh"

    result = json.loads((reader.cwd / "result.json").read_text(encoding="utf-8"))
    package = Package.read(reader.cwd / "endowment")
    assert package.parameter("claim_expense") == 150.0  # the guide's edit is in what was valued
    records = package.records(reader.cwd / "endowment" / "data" / "sample_policies.csv")
    pvs = endowment_pvs(package, records)
    assert [o["name"] for o in result["outputs"]] == list(OUTPUTS)
    assert result["policy_count"] == records.n_rows and result["statistics"]["scenario_count"] == 100
    for output in result["outputs"]:
        want = pvs[output["name"]].sum(axis=0)
        np.testing.assert_allclose(output["values"], want, rtol=RTOL, atol=0, err_msg=output["name"])

    with WasmPool(Runtime(), threads=2) as pool:
        runner = PipelineRunner(pool, package.binaries())
        run = runner.run(package.config["pipeline"], package.run_inputs(records))
        assert run.result_hash == result["result_hash"]
        for k, name in enumerate(OUTPUTS):
            assert np.array_equal(fold(run.partials[:, k, :]), np.asarray(result["outputs"][k]["values"])), name
        # per policy: a few rows valued alone (a block of one row is that row's values)
        rows = _sample_rows(records.columns)
        for row in rows:
            alone = runner.run(package.config["pipeline"], package.run_inputs(records.take([row])))
            for k, name in enumerate(OUTPUTS):
                np.testing.assert_allclose(alone.partials[0, k, :], pvs[name][row], rtol=RTOL, atol=0, err_msg=name)


def _sample_rows(c: Mapping[str, npt.NDArray[Any]]) -> list[int]:
    """New business, the shortest and the longest projection, a grouped row, a woman, the last row."""
    months = np.asarray(c["policy_term"]) * 12 - np.asarray(c["duration_mth"])
    picks = [
        int(np.flatnonzero(np.asarray(c["duration_mth"]) == 0)[0]),
        int(np.argmin(months)),
        int(np.argmax(months)),
        int(np.flatnonzero(np.asarray(c["policy_count"]) > 1)[0]),
        int(np.flatnonzero(np.asarray(c["sex"]) == 1)[0]),
        len(months) - 1,
    ]
    return sorted(set(picks))
