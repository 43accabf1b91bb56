"""`livecalc up`: the embedded mesh — data, engine(s) and gateway as child processes.

Each service runs as its own `livecalc serve` process (as it would in a cluster), with its
output prefixed by its name. ``--engines N`` starts N engines on consecutive ports from the
engine's default (50052, 50054, 50055, … stepping over the data and gateway ports), each with
its own metrics port; the gateway is given their addresses, the engines the data service's and
the gateway's. Ctrl-C or SIGTERM stops them all gracefully, gateway first.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from services.common.auth.service import internal_channel_security
from services.common.config import DEFAULT_PORTS
from services.common.errors import InvalidArgument
from services.common.readiness import wait_serving


@dataclass
class Child:
    """One service process of the mesh."""

    label: str
    address: str
    proc: subprocess.Popen[bytes]


def _pump(label: str, stream: IO[bytes], sink: IO[str] | None) -> None:
    for line in iter(stream.readline, b""):
        out = sink or sys.stderr
        out.write(f"[{label}] {line.decode(errors='replace')}")
        out.flush()


def _start(label: str, argv: list[str], env: dict[str, str], address: str, sink: IO[str] | None = None) -> Child:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    assert proc.stdout is not None
    threading.Thread(target=_pump, args=(label, proc.stdout, sink), daemon=True).start()
    return Child(label, address, proc)


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
    """The embedded mesh's data dir: the flag, else LIVECALC_DATA_DIR, else ./.livecalc."""
    return Path(value or os.environ.get("LIVECALC_DATA_DIR", ".livecalc")).resolve()


def mesh_plan(data_dir: Path, engines_count: int, off: int) -> tuple[list[tuple[str, list[str], str]], dict[str, str]]:
    """(label, argv, address) of each service to start, in start order, and their environment."""
    tls_client = os.environ.get("LIVECALC_TLS_CA") or os.environ.get("LIVECALC_TLS", "").lower() in ("1", "true", "yes")
    if os.environ.get("LIVECALC_TLS_CERT") and not tls_client:
        raise InvalidArgument(
            "LIVECALC_TLS_CERT serves TLS; set LIVECALC_TLS_CA (the CA of that certificate) or LIVECALC_TLS=1"
            " so the services can reach each other"
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "LIVECALC_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"}
    exe = [sys.executable, "-m", "services.cli", "serve"]
    plan: list[tuple[str, list[str], str]] = []
    data_port, data_metrics = (p + off for p in DEFAULT_PORTS["data"])
    plan.append(
        (
            "data",
            [
                *exe,
                "data",
                "--port",
                str(data_port),
                "--metrics-port",
                str(data_metrics),
                "--root",
                str(data_dir / "datasets"),
            ],
            f"127.0.0.1:{data_port}",
        )
    )
    gw_port, gw_metrics = (p + off for p in DEFAULT_PORTS["gateway"])
    data_address, gw_address = f"127.0.0.1:{data_port}", f"127.0.0.1:{gw_port}"
    engines = engine_ports(engines_count, off)
    for i, (port, metrics) in enumerate(engines):
        label = "engine" if len(engines) == 1 else f"engine-{i}"
        argv = [*exe, "engine", "--port", str(port), "--metrics-port", str(metrics)]
        plan.append((label, [*argv, "--data", data_address, "--gateway", gw_address], f"127.0.0.1:{port}"))
    plan.append(
        (
            "gateway",
            [*exe, "gateway", "--port", str(gw_port), "--metrics-port", str(gw_metrics)],
            gw_address,
        )
    )
    # the gateway reads its peers from the environment (flags of its own may come and go)
    env["LIVECALC_ENGINES"] = ",".join(f"127.0.0.1:{port}" for port, _ in engines)
    env["LIVECALC_DATA_ADDRESS"] = data_address
    env["LIVECALC_GATEWAY_ADVERTISE_ADDRESS"] = gw_address
    return plan, env


def start_children(
    plan: list[tuple[str, list[str], str]], env: dict[str, str], children: list[Child], sink: IO[str] | None = None
) -> None:
    """Start each service in order and wait until it serves; started ones are appended to
    ``children`` as they start, so the caller can stop them even when a later one fails.
    Their output goes to ``sink`` (default stderr), each line prefixed with the label."""
    # probe each child as its peers reach it: TLS when LIVECALC_TLS / LIVECALC_TLS_CA say so
    security = internal_channel_security(argparse.Namespace(), env)
    for label, argv, address in plan:
        child = _start(label, argv, env, address, sink)
        children.append(child)
        wait_serving(child.address, timeout=60, proc=child.proc, label=child.label, security=security)


def stop_children(children: list[Child]) -> None:
    """SIGTERM every child, gateway first, and wait for them (kill after 30 s)."""
    for child in reversed(children):
        if child.proc.poll() is None:
            child.proc.send_signal(signal.SIGTERM)
    for child in reversed(children):
        try:
            child.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.proc.kill()


def run_mesh(args: argparse.Namespace) -> int:
    """Start the mesh, wait for Ctrl-C/SIGTERM, stop it; returns the exit code."""
    plan, env = mesh_plan(data_dir_of(args.data_dir), int(args.engines), int(args.port_offset))
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    children: list[Child] = []
    try:
        start_children(plan, env, children)
        print(
            "livecalc mesh is up: " + ", ".join(f"{c.label} {c.address}" for c in children) + " (Ctrl-C stops it)",
            file=sys.stderr,
            flush=True,
        )
        while not stop.is_set():
            if any(c.proc.poll() is not None for c in children):
                dead = [c.label for c in children if c.proc.poll() is not None]
                print(f"livecalc: error: {', '.join(dead)} exited; stopping the mesh", file=sys.stderr)
                return 1
            stop.wait(0.5)
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        stop_children(children)
