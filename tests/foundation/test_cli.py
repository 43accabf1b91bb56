"""The `livecalc` command: clear one-line errors, and `up` runs and stops the mesh."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from services.common.config import DEFAULT_PORTS
from services.common.readiness import wait_serving
from tests.support import ROOT, VENV_BIN, free_offset, livecalc_up

LIVECALC = str(VENV_BIN / "livecalc")


def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LIVECALC, *args], capture_output=True, text=True, timeout=timeout, check=False, cwd=ROOT)


def test_every_registered_command_group_exists() -> None:
    from services.cli import _command_groups

    for module in _command_groups():
        assert (ROOT / (module.replace(".", "/") + ".py")).is_file(), module


def test_help_lists_the_commands() -> None:
    result = run("--help")
    assert result.returncode == 0
    for command in ("serve", "up", "bench"):
        assert command in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("serve", "data", "--port", "70000", "--metrics-port", "-1"), "port must be in 0..65535"),
        (
            ("serve", "gateway", "--host", "203.0.113.7", "--insecure", "--port", "0", "--metrics-port", "-1"),
            "cannot listen",
        ),
        (
            ("serve", "gateway", "--host", "203.0.113.7", "--port", "0", "--metrics-port", "-1"),
            "without authentication",
        ),
    ],
)
def test_bad_flags_give_one_clear_line(args: tuple[str, ...], message: str) -> None:
    result = run(*args)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("livecalc: error:"), result.stderr
    assert message in lines[-1]
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_up_starts_all_three_and_stops_on_sigint(tmp_path: Path) -> None:
    offset = free_offset(lambda o: [p + o for pair in DEFAULT_PORTS.values() for p in pair])
    with livecalc_up(["--data-dir", str(tmp_path / "data"), "--port-offset", str(offset)], seconds=60) as up:
        for name in ("data", "engine", "gateway"):
            wait_serving(f"127.0.0.1:{DEFAULT_PORTS[name][0] + offset}", timeout=10)
        out = up.stop(40)
    text = "".join(up.lines) + out
    proc = up.proc
    assert proc.returncode == 0, text
    assert "livecalc mesh is up" in text
    for name in ("data", "engine", "gateway"):  # each service itself logged its stop
        assert any(line.startswith(f"[{name}]") and line.rstrip().endswith("stopped") for line in text.splitlines()), (
            name,
            text,
        )
    with socket.socket() as s:  # the gateway's port is free again: nothing was left behind
        s.bind(("127.0.0.1", DEFAULT_PORTS["gateway"][0] + offset))
