"""Child processes of the mesh: started, waited for until they serve, stopped, measured.

The one place that starts and stops the services as OS processes, shared by `livecalc up`
(services.common.supervisor adds its restart policy), `livecalc bench mesh` and the tests:

- `launch` starts a command with its output in a log file, or line by line on a terminal
  prefixed with its label;
- `ServiceProcess.start` starts ``livecalc serve NAME`` on free loopback ports (or given ones)
  with its log file and waits until its health service says SERVING (services.common.readiness);
- `stop_in_stages` stops processes a group at a time: SIGTERM, then SIGKILL after a bound.

A service's peak memory comes from services.common.rss.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Self

from services.common import rss
from services.common.client import ChannelSecurity
from services.common.errors import Unavailable
from services.common.readiness import wait_serving

#: How long a stage may take to stop after SIGTERM before it is killed (`livecalc up`, bench mesh).
STOP_TIMEOUT_SECONDS = 30.0
#: ``livecalc serve`` as a child of this interpreter (its environment, its installed packages).
SERVE_COMMAND = (sys.executable, "-m", "services.cli", "serve")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pump(label: str, stream: IO[bytes], sink: IO[str] | None) -> None:
    for line in iter(stream.readline, b""):
        out = sink or sys.stderr
        out.write(f"[{label}] {line.decode(errors='replace')}")
        out.flush()
    stream.close()


def launch(
    argv: Sequence[str],
    env: Mapping[str, str],
    *,
    log: Path | None = None,
    label: str = "",
    sink: IO[str] | None = None,
    own_group: bool = False,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start `argv` with exactly the environment `env`.

    Its output (stdout and stderr) goes to the file `log` when given (truncated first), else line
    by line to `sink` (default stderr), each line prefixed with ``[label]``. `own_group` puts it
    in a process group of its own, so a terminal's Ctrl-C reaches only whoever started it, which
    then stops it in its own time.
    """
    group = 0 if own_group else None
    if log is not None:
        with log.open("wb") as out:  # the child has its own copy of the descriptor
            return subprocess.Popen(
                list(argv), stdout=out, stderr=subprocess.STDOUT, env=dict(env), cwd=cwd, process_group=group
            )
    proc = subprocess.Popen(
        list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=dict(env), cwd=cwd, process_group=group
    )
    assert proc.stdout is not None
    threading.Thread(target=_pump, args=(label, proc.stdout, sink), daemon=True).start()
    return proc


def stop_in_stages(
    stages: Iterable[Sequence[subprocess.Popen[bytes]]], timeout: float = STOP_TIMEOUT_SECONDS
) -> list[subprocess.Popen[bytes]]:
    """Stop each stage in turn: every running process of it gets SIGCONT (a stopped one holds
    SIGTERM until continued) and SIGTERM, and all are waited for together; those still running
    after `timeout` are killed and reaped before the next stage is signalled. Returns the killed
    ones."""
    killed: list[subprocess.Popen[bytes]] = []
    for stage in stages:
        for proc in stage:
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in stage:
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.0))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                killed.append(proc)
    return killed


@dataclass(eq=False)
class ServiceProcess:
    """``livecalc serve NAME`` running as its own process on loopback ports, its output in `log_path`.

    Whoever starts one stops it (`terminate`, `kill`, or `stop_in_stages` with others).
    """

    #: The service: data, engine or gateway.
    name: str
    port: int
    metrics_port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    #: The flags it was started with after its ports (a restart gives them again).
    extra: tuple[str, ...] = ()
    #: Set on top of the starting process's environment.
    env: Mapping[str, str] = field(default_factory=dict)
    #: Its name in messages (several engines share a `name`); the name when empty.
    label: str = ""

    @classmethod
    def start(
        cls,
        name: str,
        log_path: Path,
        *,
        extra: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        ports: tuple[int, int] | None = None,
        label: str = "",
        ready_timeout: float | None = 30.0,
        cwd: Path | None = None,
    ) -> Self:
        """Start it on free loopback ports (or ``ports``: gRPC, metrics), then wait up to
        `ready_timeout` seconds until it serves (None: do not wait). A service that exits or is
        not ready in time is killed, and `Unavailable` raised."""
        port, metrics_port = ports or (free_port(), free_port())
        argv = [*SERVE_COMMAND, name, "--port", str(port), "--metrics-port", str(metrics_port), *extra]
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        proc = launch(argv, full_env, log=log_path, cwd=cwd)
        service = cls(name, port, metrics_port, proc, log_path, tuple(extra), dict(env or {}), label)
        if ready_timeout is not None:
            service.wait_ready(ready_timeout)
        return service

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 30.0, security: ChannelSecurity | None = None) -> None:
        """Wait until its health service says SERVING; kills it and raises `Unavailable` when it
        exits first or `timeout` passes."""
        try:
            wait_serving(
                self.address, timeout=timeout, proc=self.proc, label=self.label or self.name, security=security
            )
        except Unavailable:
            self.kill()
            raise

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def peak_rss_bytes(self) -> int | None:
        """Its peak resident set (VmHWM) while it runs; None once it is gone."""
        return rss.peak_rss_bytes(self.proc.pid)

    def kill(self) -> int:
        """SIGKILL (no graceful stop), then reap; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        return self.proc.wait(timeout=10)

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM, then wait; returns the exit code. One still running after `timeout` is killed,
        and `subprocess.TimeoutExpired` raised."""
        if stop_in_stages([[self.proc]], timeout):
            raise subprocess.TimeoutExpired(self.proc.args, timeout)
        return self.proc.wait()
