"""Helpers of the CLI tests: the `livecalc` console script as a subprocess or in this process,
free port offsets, PNG headers."""

from __future__ import annotations

import contextlib
import io
import os
import struct
import subprocess
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path

from services.cli import main
from services.common.config import DEFAULT_PORTS
from tests.support import NO_DRAIN, ROOT, VENV_BIN, free_offset

LIVECALC = str(VENV_BIN / "livecalc")


def livecalc(*argv: str, timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`livecalc ARGV…` as a process, `env` on top of this process's environment and `NO_DRAIN` (the
    services that `run` and `bench` start stop without draining)."""
    return subprocess.run(
        [LIVECALC, *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, **NO_DRAIN, **(env or {})},
        check=False,
    )


#: One in-process command at a time: each replaces this process's environment and streams.
_IN_PROCESS = threading.Lock()


def livecalc_in_process(
    *argv: str, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """`livecalc ARGV…` run by the console script's own `main` in this process, its stdout, stderr and
    exit status captured as `livecalc` returns them, `env` set on top of the environment and the
    working directory `cwd` (default: this one) meanwhile.

    What a process adds (the interpreter's start, about a second each) is left out; a test of what
    only a process shows (signals, `$(…)` in a shell, an uncaught traceback) runs `livecalc`."""
    out, err = io.StringIO(), io.StringIO()
    with (
        _IN_PROCESS,
        _environment(env or {}),
        contextlib.chdir(cwd or Path.cwd()),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse: usage errors (2) and --help (0)
            code = exc.code if isinstance(exc.code, int) else 1
    return subprocess.CompletedProcess([LIVECALC, *argv], code, out.getvalue(), err.getvalue())


@contextlib.contextmanager
def _environment(env: Mapping[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


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
