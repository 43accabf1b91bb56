"""`livecalc up`: the embedded mesh — data, engine(s) and gateway as child processes.

Each service runs as its own `livecalc serve` process (as it would in a cluster), with its
output prefixed by its name. ``--engines N`` starts N engines on consecutive ports from the
engine's default (50052, 50054, 50055, … stepping over the data and gateway ports), each with
its own metrics port; the gateway is given their addresses, the engines the data service's and
the gateway's. A service that dies is started again (services.common.supervisor: backoff and a
restart budget). Ctrl-C, SIGTERM or SIGHUP stops them all gracefully in stages: the gateway
first, waited for (its running jobs checkpoint while the engines still serve), then the engines,
then the data service.

Auth is off unless the environment configures it (docs/security.md), and then the services bind
loopback only. ``--auth-dev`` turns on auth with the embedded dev secret
(`<data dir>/auth/dev-secret`, made on first start; tokens from `livecalc auth dev-token`), which
is what lets the mesh listen beyond loopback (``LIVECALC_HOST=0.0.0.0``, as the image does):
without auth such a bind is refused once, here, saying how, before any service starts.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import IO

from services.common import settings
from services.common.auth.config import check_bind, is_loopback, resolve_security_config
from services.common.auth.service import internal_channel_security
from services.common.config import DEFAULT_PORTS
from services.common.errors import FailedPrecondition, InvalidArgument, LivecalcError
from services.common.readiness import wait_serving
from services.common.supervisor import Child, ProcessSpec, RestartBudgetExceeded, Supervisor, spawn, stop_children

__all__ = [
    "Child",
    "check_listen",
    "data_dir_of",
    "engine_ports",
    "mesh_plan",
    "run_mesh",
    "start_children",
    "stop_children",
]

#: Stop order (highest first): the gateway checkpoints its running jobs while engines and the data
#: service still serve; then the engines, then the data service.
DATA_STAGE, ENGINE_STAGE, GATEWAY_STAGE = 0, 1, 2
#: How often `up` looks for exited services.
CHECK_SECONDS = 0.2


def engine_ports(count: int, offset: int = 0) -> list[tuple[int, int]]:
    """(gRPC port, metrics port) of each of ``count`` engines: consecutive from the engine's
    default ports (plus ``offset``), stepping over the ports of the other services."""
    if count < 1:
        raise InvalidArgument(f"--engines must be ≥ 1, got {count}")
    taken = {p + offset for name, ports in DEFAULT_PORTS.items() if name != "engine" for p in ports}
    grpc_port, metrics_port = (p + offset for p in DEFAULT_PORTS["engine"])
    out: list[tuple[int, int]] = []
    while len(out) < count:
        while grpc_port in taken:
            grpc_port += 1
        while metrics_port in taken:
            metrics_port += 1
        out.append((grpc_port, metrics_port))
        grpc_port, metrics_port = grpc_port + 1, metrics_port + 1
    return out


def data_dir_of(value: str | None) -> Path:
    """The embedded mesh's data dir, absolute (its services run elsewhere): the flag, else
    LIVECALC_DATA_DIR, else ./.livecalc (services.common.settings)."""
    return settings.data_dir(os.environ, value).resolve()


def mesh_plan(
    data_dir: Path, engines_count: int, off: int, *, auth_dev: bool = False
) -> tuple[list[ProcessSpec], dict[str, str]]:
    """Each service to start, in start order, and their environment (`auth_dev`: with the
    embedded dev secret's auth)."""
    tls_client = os.environ.get("LIVECALC_TLS_CA") or os.environ.get("LIVECALC_TLS", "").lower() in ("1", "true", "yes")
    if os.environ.get("LIVECALC_TLS_CERT") and not tls_client:
        raise InvalidArgument(
            "LIVECALC_TLS_CERT serves TLS; set LIVECALC_TLS_CA (the CA of that certificate) or LIVECALC_TLS=1"
            " so the services can reach each other"
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    # LIVECALC_SUPERVISOR_PID: each service stops when this process is gone (they run in process
    # groups of their own, so nothing else would stop them if it were killed)
    env = {
        **os.environ,
        "LIVECALC_DATA_DIR": str(data_dir),
        "PYTHONUNBUFFERED": "1",
        "LIVECALC_SUPERVISOR_PID": str(os.getpid()),
    }
    if auth_dev:
        env["LIVECALC_AUTH_DEV"] = "1"
    exe = (sys.executable, "-m", "services.cli", "serve")
    data_port, data_metrics = (p + off for p in DEFAULT_PORTS["data"])
    gw_port, gw_metrics = (p + off for p in DEFAULT_PORTS["gateway"])
    data_address, gw_address = f"127.0.0.1:{data_port}", f"127.0.0.1:{gw_port}"
    root = str(data_dir / "datasets")
    data_argv = (*exe, "data", "--port", str(data_port), "--metrics-port", str(data_metrics), "--root", root)
    plan = [ProcessSpec("data", data_argv, data_address, DATA_STAGE)]
    engines = engine_ports(engines_count, off)
    for i, (port, metrics) in enumerate(engines):
        label = "engine" if len(engines) == 1 else f"engine-{i}"
        argv = (*exe, "engine", "--port", str(port), "--metrics-port", str(metrics))
        peers = ("--data", data_address, "--gateway", gw_address)
        plan.append(ProcessSpec(label, (*argv, *peers), f"127.0.0.1:{port}", ENGINE_STAGE))
    gw_argv = (*exe, "gateway", "--port", str(gw_port), "--metrics-port", str(gw_metrics))
    plan.append(ProcessSpec("gateway", gw_argv, gw_address, GATEWAY_STAGE))
    # the gateway reads its peers from the environment (flags of its own may come and go)
    env["LIVECALC_ENGINES"] = ",".join(f"127.0.0.1:{port}" for port, _ in engines)
    env["LIVECALC_DATA_ADDRESS"] = data_address
    env["LIVECALC_GATEWAY_ADVERTISE_ADDRESS"] = gw_address
    return plan, env


def start_children(
    plan: Sequence[ProcessSpec],
    env: dict[str, str],
    children: list[Child],
    sink: IO[str] | None = None,
    *,
    stop: threading.Event | None = None,
) -> None:
    """Start each service in order and wait until it serves; started ones are appended to
    ``children`` as they start, so the caller can stop them even when a later one fails.
    Their output goes to ``sink`` (default stderr), each line prefixed with the label. Once
    ``stop`` is set no further service is started."""
    # probe each child as its peers reach it: TLS when LIVECALC_TLS / LIVECALC_TLS_CA say so
    security = internal_channel_security(argparse.Namespace(), env)
    for spec in plan:
        if stop is not None and stop.is_set():
            return
        child = spawn(spec, env, sink)
        children.append(child)
        wait_serving(child.address, timeout=60, proc=child.proc, label=child.label, security=security)


#: The signals that stop a mesh's owner: Ctrl-C, a service manager's stop, a closed terminal.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def stopping_on_signals(stop: Callable[[], None]) -> Iterator[threading.Event]:
    """Inside, the first of `STOP_SIGNALS` sets the event yielded and runs `stop` on a thread of
    its own; later ones are ignored.

    For a caller that starts the services and stops them on its way out (`livecalc run`): they
    run in process groups of their own, so a SIGHUP or SIGTERM that killed the caller would leave
    them running. Not an exception in the main thread, as Ctrl-C's default is: raised while a
    gRPC channel was being made, it crashed the process (SIGSEGV); stopping the services makes
    the caller's calls fail instead, and the caller sees the event set."""
    stopped = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if not stopped.is_set():
            stopped.set()
            threading.Thread(target=stop, name="stop on signal", daemon=True).start()

    previous = {s: signal.signal(s, on_signal) for s in STOP_SIGNALS}
    try:
        yield stopped
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def check_listen(env: Mapping[str, str]) -> None:
    """Protected mode for the whole mesh, before anything starts (each service checks again):
    a non-loopback LIVECALC_HOST without auth is refused in one line saying how to allow it."""
    host = env.get("LIVECALC_HOST") or "127.0.0.1"
    if is_loopback(host):
        return
    try:
        security = resolve_security_config(env)
    except OSError:
        return  # an unreadable secret file: each service names it as it starts
    try:
        check_bind(host, security)
    except FailedPrecondition:
        raise FailedPrecondition(
            f"refusing to listen on {host} (LIVECALC_HOST) without authentication: pass --auth-dev (tokens from"
            " `livecalc auth dev-token`), or set LIVECALC_AUTH_HS256_SECRET_FILE or LIVECALC_AUTH_JWKS"
            " (docs/security.md), or LIVECALC_INSECURE=1"
        ) from None


def _say(line: str) -> None:
    print(f"livecalc up: {line}", file=sys.stderr, flush=True)


def run_mesh(args: argparse.Namespace) -> int:
    """Start the mesh, restart a service that dies (within a budget), wait for Ctrl-C, SIGTERM or
    SIGHUP, stop it gateway first; returns the exit code."""
    auth_dev = bool(getattr(args, "auth_dev", False))
    plan, env = mesh_plan(data_dir_of(args.data_dir), int(args.engines), int(args.port_offset), auth_dev=auth_dev)
    check_listen(env)
    children: list[Child] = []
    started = threading.Event()

    def on_signal() -> None:
        if not started.is_set():  # a service that never comes up must not hold Ctrl-C for a minute
            stop_children(children)

    # The services run in process groups of their own, so a terminal's Ctrl-C and hangup reach
    # only `up`, which stops them in order (a hangup that killed `up` would orphan them). The
    # handlers stay installed while the mesh stops: a second Ctrl-C must not cut the stop short.
    supervisor: Supervisor | None = None
    with stopping_on_signals(on_signal) as stop:
        try:
            start_children(plan, env, children, stop=stop)
            started.set()
            if stop.is_set():
                return 0
            supervisor = Supervisor(children, env, say=_say)
            print(
                "livecalc mesh is up: " + ", ".join(f"{c.label} {c.address}" for c in children) + " (Ctrl-C stops it)",
                file=sys.stderr,
                flush=True,
            )
            if auth_dev:
                where = env["LIVECALC_DATA_DIR"]
                _say(
                    f"auth is on with the dev secret {Path(where) / 'auth' / 'dev-secret'}; a token:"
                    f" LIVECALC_DATA_DIR={where} livecalc auth dev-token --tenant T --role read,submit,upload"
                )
            while not stop.is_set():
                supervisor.check()
                stop.wait(CHECK_SECONDS)
            _say("stopping the mesh (gateway first)")
            return 0
        except RestartBudgetExceeded as exc:
            print(f"livecalc: error: {exc}; stopping the mesh", file=sys.stderr, flush=True)
            return 1
        except LivecalcError:
            if stop.is_set():
                return 0  # a start cut short by the signal: the service being waited for was stopped
            raise
        finally:
            if supervisor is not None:
                supervisor.stop()
            else:
                stop_children(children)
