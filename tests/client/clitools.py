"""Helpers of the CLI tests: the `livecalc` console script as a subprocess, free port offsets, PNG headers."""

from __future__ import annotations

import os
import random
import socket
import struct
import subprocess
from pathlib import Path

from services.common.config import DEFAULT_PORTS
from tests.support import ROOT, VENV_BIN

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


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_offset(engines: int = 1) -> int:
    """An offset for `livecalc run --port-offset` under which every port of the mesh is free."""
    ports = [p for pair in DEFAULT_PORTS.values() for p in pair]
    for _ in range(200):
        offset = random.randrange(1000, 9000, 10)
        if all(_free(p + offset + k) for p in ports for k in range(engines + 1)):
            return offset
    raise RuntimeError("no free port offset found")


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
