"""Helpers of the CLI tests: the `livecalc` console script as a subprocess, free port offsets, PNG headers."""

from __future__ import annotations

import os
import struct
import subprocess
from pathlib import Path

from services.common.config import DEFAULT_PORTS
from tests.support import ROOT, VENV_BIN, free_offset

LIVECALC = str(VENV_BIN / "livecalc")


def livecalc(*argv: str, timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LIVECALC, *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        check=False,
    )


def free_port_offset(engines: int = 1) -> int:
    """An offset for `livecalc run --port-offset` under which every port of the mesh is free."""
    ports = [p for pair in DEFAULT_PORTS.values() for p in pair]
    return free_offset(lambda offset: [p + offset + k for p in ports for k in range(engines + 1)])


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (after checking the signature)."""
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert head[12:16] == b"IHDR"
    width, height = struct.unpack(">II", head[16:24])
    return int(width), int(height)


def hash_line(stdout: str) -> str:
    lines = [line for line in stdout.splitlines() if line.startswith("result hash")]
    assert len(lines) == 1, stdout
    return lines[0].split()[-1]
