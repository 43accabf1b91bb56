"""Shared test helpers: free loopback ports and services started as real OS processes."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from services.common.errors import Unavailable
from services.common.readiness import wait_serving

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServiceProcess:
    """`livecalc serve NAME` running as its own process on free loopback ports."""

    name: str
    port: int
    metrics_port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    extra: Sequence[str] = field(default=())
    env: Mapping[str, str] = field(default_factory=dict)  # set on top of this process's environment

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> int:
        """SIGKILL (no graceful stop), then reap; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        return self.proc.wait(timeout=10)

    def pause(self) -> None:
        """SIGSTOP: the process hangs with its sockets open."""
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after `pause`."""
        self.proc.send_signal(signal.SIGCONT)

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM, then wait; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
            raise


def start_service(
    name: str,
    tmp: Path,
    *,
    extra: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    grace: float = 5.0,
    wait: bool = True,
    ports: tuple[int, int] | None = None,
) -> ServiceProcess:
    """Start `livecalc serve NAME` on free ports (or ``ports``: gRPC, metrics) and wait until it is SERVING."""
    port, metrics_port = ports or (free_port(), free_port())
    log_path = tmp / f"{name}-{port}.log"
    restarts = 0
    while log_path.exists():  # a restart on the same port keeps the earlier log
        restarts += 1
        log_path = tmp / f"{name}-{port}-{restarts}.log"
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                str(VENV_BIN / "livecalc"),
                "serve",
                name,
                "--port",
                str(port),
                "--metrics-port",
                str(metrics_port),
                "--grace",
                str(grace),
                *extra,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=ROOT,
        )
    service = ServiceProcess(name, port, metrics_port, proc, log_path, extra, dict(env or {}))
    if wait:
        try:
            wait_serving(service.address, proc=proc, label=name)
        except Unavailable as exc:
            proc.kill()
            raise TimeoutError(f"{exc}:\n{service.log()}") from None
    return service


def restart_service(service: ServiceProcess, tmp: Path, *, grace: float = 5.0) -> ServiceProcess:
    """Start `service` again (after it stopped or was killed) on the same ports with the same flags
    and environment."""
    if service.proc.poll() is None:
        raise RuntimeError(f"{service.name} on {service.address} is still running")
    ports = (service.port, service.metrics_port)
    return start_service(service.name, tmp, extra=service.extra, env=service.env, grace=grace, ports=ports)


def metrics_text(service: ServiceProcess) -> str:
    """The service's /metrics exposition."""
    url = f"http://127.0.0.1:{service.metrics_port}/metrics"
    return str(urllib.request.urlopen(url, timeout=5).read().decode())


def metric(service: ServiceProcess, name: str) -> float:
    """One unlabelled sample of the service's /metrics."""
    for line in metrics_text(service).splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not exposed")


def ports_free(ports: Sequence[int]) -> bool:
    """Whether every one of `ports` can be bound on 127.0.0.1 right now."""
    for port in ports:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def free_offset(ports_at: Callable[[int], Sequence[int]]) -> int:
    """A random `livecalc up --port-offset` whose ports (`ports_at(offset)`) are all free."""
    return next(o for o in random.sample(range(1000, 15000), 50) if ports_free(ports_at(o)))


def read_until_up(proc: subprocess.Popen[bytes], seconds: float) -> list[str]:
    """`livecalc up`'s output lines up to "livecalc mesh is up" (the last one), its end, or `seconds`."""
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        line = proc.stdout.readline().decode()
        lines.append(line)
        if "livecalc mesh is up" in line or not line:
            break
    return lines


@contextmanager
def livecalc_up(args: Sequence[str], *, seconds: float, env: Mapping[str, str] | None = None) -> Iterator[UpRun]:
    """`livecalc up ARGS` until its "mesh is up" line (or its end, or `seconds`); killed on the way out
    if still running. Stop it with `UpRun.stop()` to see it end on SIGINT."""
    proc = subprocess.Popen(
        [str(VENV_BIN / "livecalc"), "up", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        env=None if env is None else dict(env),
    )
    try:
        yield UpRun(proc, read_until_up(proc, seconds))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


@dataclass
class UpRun:
    proc: subprocess.Popen[bytes]
    lines: list[str]

    def stop(self, seconds: float = 60) -> str:
        """SIGINT, then everything it printed after the "mesh is up" line."""
        self.proc.send_signal(signal.SIGINT)
        out, _ = self.proc.communicate(timeout=seconds)
        return out.decode()
