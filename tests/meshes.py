"""The processes of a functional test's mesh: data service, engines and gateways, each a real
`livecalc serve` process on free loopback ports (tests.support), started with the flags the
suites share and stopped together when the fixture that started them ends.

    with Services(tmp) as services:
        data = services.data(root)
        engines = [services.engine(data, f"e{i}") for i in range(3)]
        gateway = services.gateway(data, engines)
        yield ...

or, for that usual shape (one gateway over every engine), `mesh = services.mesh(root, engines=3)`.

The inputs (the reference package with dynamic lapse on, generated policy datasets) come from
tests.engine.mesh; submitting jobs and reading their events from tests.gateway.jobmesh.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from services.common.processes import stop_in_stages
from tests.support import NO_DRAIN, ServiceProcess, free_port, restart_service, start_service, wait_started

#: How long each kind of service may take to stop before it is killed (and the test fails).
STOP_SECONDS = 15.0


@dataclass(frozen=True)
class MeshProcesses:
    """The usual mesh's processes (`Services.mesh`): a data service, its engines, one gateway over them all."""

    data: ServiceProcess
    engines: list[ServiceProcess]
    gateway: ServiceProcess

    @property
    def engine(self) -> ServiceProcess:
        """The first engine (the only one, unless `engines` asked for more)."""
        return self.engines[0]


class Services:
    """Services started over one temporary directory (their logs, caches and stores live there).

    Leaving the `with` block stops every one still running, newest first (a SIGSTOPped one is
    continued first: it holds SIGTERM until then). `extra` and `env` are given to every
    service, before and under each one's own; `env` over `NO_DRAIN` (a test of draining sets
    its own LIVECALC_DRAIN_SECONDS).
    """

    def __init__(self, tmp: Path, *, extra: Sequence[str] = (), env: Mapping[str, str] | None = None) -> None:
        self.tmp = tmp
        self.extra = tuple(extra)
        self.env = {**NO_DRAIN, **(env or {})}
        self.started: list[ServiceProcess] = []

    def start(
        self, name: str, *, extra: Sequence[str] = (), env: Mapping[str, str] | None = None, wait: bool = True
    ) -> ServiceProcess:
        """`livecalc serve NAME` with the shared flags and environment, then `extra` and `env`
        (`wait=False`: not waited for, see tests.support.wait_started)."""
        env = {**self.env, **(env or {})}
        ports = self._unused_ports()
        service = start_service(name, self.tmp, extra=[*self.extra, *extra], env=env, wait=wait, ports=ports)
        self.started.append(service)
        return service

    def _unused_ports(self) -> tuple[int, int]:
        """Two free ports that none of these services was given: a service not yet listening
        leaves its ports free, and a free port may be handed out again."""
        taken = {port for s in self.started for port in (s.port, s.metrics_port)}
        ports: list[int] = []
        while len(ports) < 2:
            if (port := free_port()) not in taken and port not in ports:
                ports.append(port)
        return ports[0], ports[1]

    def data(self, root: Path, *, env: Mapping[str, str] | None = None, wait: bool = True) -> ServiceProcess:
        """A data service over the datasets in `root`."""
        return self.start("data", extra=["--root", str(root)], env=env, wait=wait)

    def engine(
        self,
        data: ServiceProcess,
        name: str,
        *,
        threads: int = 1,
        slots: int | None = 1,
        extra: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        wait: bool = True,
    ) -> ServiceProcess:
        """An engine reading from `data`, its module cache in TMP/cache-NAME and its key in TMP/state-NAME
        (`slots=None`: no --slots flag)."""
        slots_flag = [] if slots is None else ["--slots", str(slots)]
        # its module cache and the key that signs it, both under the test's directory
        cache = ["--cache-dir", str(self.tmp / f"cache-{name}"), "--state-dir", str(self.tmp / f"state-{name}")]
        flags = ["--data", data.address, "--threads", str(threads), *slots_flag, *extra, *cache]
        return self.start("engine", extra=flags, env=env, wait=wait)

    def gateway(
        self,
        data: ServiceProcess | None = None,
        engines: Sequence[ServiceProcess] = (),
        *,
        store: str = "gw",
        extra: Sequence[str] = (),
        wait: bool = True,
    ) -> ServiceProcess:
        """A gateway over `engines` and `data` (each flag left out when not given), its job store
        and packages in TMP/STORE."""
        engines_flag = ["--engines", ",".join(e.address for e in engines)] if engines else []
        data_flag = [] if data is None else ["--data-address", data.address]
        env = {"LIVECALC_DATA_DIR": str(self.tmp / store)}
        return self.start("gateway", extra=[*engines_flag, *data_flag, *extra], env=env, wait=wait)

    def mesh(
        self, root: Path, engines: int = 1, *, slots: int | None = 1, gateway_extra: Sequence[str] = ()
    ) -> MeshProcesses:
        """A data service over `root`, `engines` engines on it (e0, e1, …, each with `slots`) and a
        gateway over them all (with `gateway_extra`).

        The data service and the engines start together (an engine reaches the data service only
        when it reads rows; together they take about half the time they take one by one on two
        cores), the gateway once they serve: its engine pool asks them for their capabilities, and
        a channel to an engine not yet listening would back off for a second or more."""
        data = self.data(root, wait=False)
        started = [self.engine(data, f"e{i}", slots=slots, wait=False) for i in range(engines)]
        for service in (data, *started):
            wait_started(service)
        return MeshProcesses(data, started, self.gateway(data, started, extra=gateway_extra))

    def restart(self, service: ServiceProcess) -> ServiceProcess:
        """`service` again (after it stopped or was killed) on the same ports, flags and environment."""
        again = restart_service(service, self.tmp)
        self.started.append(again)
        return again

    def stop(self) -> None:
        """Gateways, then engines, then data services: each kind signalled together and waited
        for before the next (one by one, a mesh of seven took 8–11 s to stop). One that had to be
        killed fails the test, once all are stopped."""
        running = [s for s in reversed(self.started) if s.proc.poll() is None]
        stages = [[s for s in running if s.name == kind] for kind in ("gateway", "engine")]
        stages.append([s for s in running if s.name not in ("gateway", "engine")])
        killed = stop_in_stages([[s.proc for s in stage] for stage in stages], STOP_SECONDS)
        if killed:
            names = [s.name for s in running if s.proc in killed]
            raise TimeoutError(f"{', '.join(names)} did not stop within {STOP_SECONDS:g} s of SIGTERM and was killed")

    def __enter__(self) -> Services:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
