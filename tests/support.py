"""Shared test helpers: free loopback ports and services started as real OS processes.

The processes are started, waited for and stopped by services.common.processes (as `livecalc
up` and `livecalc bench mesh` start theirs); this adds what the tests need on top: log files that
survive a restart on the same ports, and SIGSTOP/SIGCONT for the fault tests.
"""

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
from dataclasses import dataclass
from pathlib import Path

from services.common import processes
from services.common.errors import Unavailable

__all__ = [
    "NO_DRAIN",
    "ROOT",
    "VENV_BIN",
    "ServiceProcess",
    "UpRun",
    "free_offset",
    "free_port",
    "livecalc_up",
    "metric",
    "metrics_text",
    "ports_free",
    "read_until_up",
    "restart_service",
    "start_service",
    "wait_started",
]

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
free_port = processes.free_port
#: The environment of services a test starts: no drain on SIGTERM. A drain lets probes and
#: balancers see NOT_SERVING before the port closes; no balancer watches a test's services, and
#: it cost each stop 1 s per stage (a mesh's 5.0 s → 1.7 s). A test of draining sets its own.
NO_DRAIN = {"LIVECALC_DRAIN_SECONDS": "0"}


class ServiceProcess(processes.ServiceProcess):
    """`livecalc serve NAME` running as its own process on free loopback ports; the fault tests
    can also hang it (`pause`) and let it go on (`resume`)."""

    def pause(self) -> None:
        """SIGSTOP: the process hangs with its sockets open."""
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after `pause`."""
        self.proc.send_signal(signal.SIGCONT)


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
    """Start `livecalc serve NAME` on free ports (or ``ports``: gRPC, metrics), its log in TMP, and
    wait until it is SERVING (TimeoutError with its log when it is not, after killing it)."""
    return _start(name, tmp, ["--grace", str(grace), *extra], env or {}, ports or (free_port(), free_port()), wait=wait)


def restart_service(service: ServiceProcess, tmp: Path) -> ServiceProcess:
    """Start `service` again (after it stopped or was killed) on the same ports with the same flags
    (its shutdown grace among them) and environment."""
    if service.proc.poll() is None:
        raise RuntimeError(f"{service.name} on {service.address} is still running")
    return _start(service.name, tmp, service.extra, service.env, (service.port, service.metrics_port), wait=True)


def _start(
    name: str, tmp: Path, flags: Sequence[str], env: Mapping[str, str], ports: tuple[int, int], *, wait: bool
) -> ServiceProcess:
    log_path = tmp / f"{name}-{ports[0]}.log"
    restarts = 0
    while log_path.exists():  # a restart on the same port keeps the earlier log
        restarts += 1
        log_path = tmp / f"{name}-{ports[0]}-{restarts}.log"
    service = ServiceProcess.start(name, log_path, extra=flags, env=env, ports=ports, ready_timeout=None, cwd=ROOT)
    if wait:
        wait_started(service)
    return service


def wait_started(service: ServiceProcess) -> None:
    """Wait until a service started with ``wait=False`` is SERVING (TimeoutError with its log when
    it is not, after killing it): several started first and waited for together start in parallel."""
    try:
        service.wait_ready(30.0)
    except Unavailable as exc:
        raise TimeoutError(f"{exc}:\n{service.log()}") from None


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
    if still running. Stop it with `UpRun.stop()` to see it end on SIGINT. `env` (default: this
    process's) over `NO_DRAIN`."""
    proc = subprocess.Popen(
        [str(VENV_BIN / "livecalc"), "up", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        env={**NO_DRAIN, **(os.environ if env is None else env)},
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
