"""The middle test tier: a whole mesh's real servicers on grpc.aio servers in the test's own process.

Between the fakes of tests.gateway.fakes (no wire) and the 5–7 processes of tests.meshes (real
processes, seconds to start each): a data service over a directory, engines running WASM on
their worker threads, and a gateway (JobService with its SQLite JobStore, PackageService,
the DataService proxy, an EnginePool over the engines) — each built by its service's own
`services.<name>.server.build`, the function `livecalc serve NAME` calls, and served by
`services.common.server.start_server` on 127.0.0.1:0, so clients talk to them over real
loopback gRPC with the real interceptors, health and reflection. Auth is off; nothing reads
the environment (every setting is a flag here, the environment given to `build` is empty).

    async with inprocess_mesh(tmp, datasets=root) as mesh:      # on the test's own event loop
        async with mesh.channel() as channel: ...

    with threaded_mesh(tmp, datasets=root) as mesh:             # for sync tests, module fixtures
        subprocess.run(["livecalc", "jobs", "list", "--address", mesh.gateway]) ...

`threaded_mesh` runs the same mesh on an event loop of its own thread, so a test may block (a
sync gRPC call, a `livecalc` subprocess pointed at it) while the servers go on answering.
What is about processes — signals, a killed or stopped service, `livecalc up` — stays on
tests.meshes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grpc import aio
from prometheus_client import CollectorRegistry

from livecalc_client import AsyncClient, Client
from services.common.config import ServerConfig
from services.common.server import RunningServer, start_server
from services.common.service import ServiceParts
from services.data import server as data_server
from services.engine import server as engine_server
from services.gateway import server as gateway_server
from tests.support import free_port

#: Stopping a test's servers: no drain (no balancer watches them), a short grace.
_GRACE_SECONDS = 2.0
#: Setup and teardown of a threaded mesh; longer means a service hangs.
_THREAD_SECONDS = 120.0


@dataclass
class InProcessMesh:
    """The addresses of a running in-process mesh (HOST:PORT each), and each server's metrics."""

    tmp: Path
    data: str
    engines: list[str]
    gateways: list[str]
    #: Each server's Prometheus registry, by address: what its /metrics would expose.
    registries: dict[str, CollectorRegistry] = field(default_factory=dict, repr=False)

    @property
    def gateway(self) -> str:
        """The first gateway's address (the only one, unless `gateways` asked for more)."""
        return self.gateways[0]

    def metric(self, address: str, name: str) -> float:
        """One unlabelled sample of the server at `address` (0 before it was ever set)."""
        return self.registries[address].get_sample_value(name) or 0.0

    def client(self, **options: Any) -> Client:
        """The light client on the gateway (datasets through the data service); the caller closes it."""
        return Client(self.gateway, data=self.data, **options)

    def async_client(self, **options: Any) -> AsyncClient:
        """`client()`'s asyncio twin, for tests on the mesh's own loop (`inprocess_mesh`)."""
        return AsyncClient(self.gateway, data=self.data, **options)

    @contextlib.asynccontextmanager
    async def channel(self, address: str | None = None) -> AsyncIterator[aio.Channel]:
        """An insecure grpc.aio channel to `address` (default: the gateway), closed on the way out."""
        async with aio.insecure_channel(address or self.gateway) as channel:
            yield channel


async def _serve(
    service: str, module: Any, flags: Mapping[str, object], *, port: int = 0
) -> tuple[RunningServer, CollectorRegistry]:
    """`livecalc serve SERVICE` with `flags` (argparse names) and an empty environment, in process."""
    registry = CollectorRegistry(auto_describe=True)
    parts: ServiceParts = await module.build(argparse.Namespace(**flags), {}, registry)
    config = ServerConfig(service=service, port=port, grace_seconds=_GRACE_SECONDS, drain_seconds=0.0)
    try:
        running = await start_server(config, parts.bindings, registry=registry, on_stop=parts.on_stop)
    except BaseException:
        for hook in parts.on_stop:
            await hook()
        raise
    return running, registry


@contextlib.asynccontextmanager
async def inprocess_mesh(
    tmp: Path,
    *,
    datasets: Path | None = None,
    engines: int = 1,
    threads: int = 1,
    slots: int = 1,
    gateways: Sequence[Sequence[int]] | None = None,
    engine_flags: Mapping[str, object] | None = None,
    gateway_flags: Mapping[str, object] | None = None,
) -> AsyncIterator[InProcessMesh]:
    """A data service over `datasets` (default TMP/datasets), `engines` engines and the gateways, each
    on a free loopback port of this process; stopped gateways first, the data service last.

    `gateways` lists each gateway's engines by index (default: one gateway over all of them).
    Engines keep their module caches and keys in TMP/cache-eN and TMP/state-eN, gateway K its job
    store and packages in TMP/gw (K = 0) or TMP/gwK, as tests.meshes.Services does for processes.
    `engine_flags` and `gateway_flags` are `livecalc serve` flags by their argparse names
    (``chunk_stall_seconds``).
    """
    root = datasets if datasets is not None else tmp / "datasets"
    root.mkdir(parents=True, exist_ok=True)
    over = [list(g) for g in gateways] if gateways is not None else [list(range(engines))]
    started: list[RunningServer] = []
    registries: dict[str, CollectorRegistry] = {}

    async def serve(service: str, module: Any, flags: Mapping[str, object], port: int = 0) -> str:
        running, registry = await _serve(service, module, flags, port=port)
        started.append(running)
        address = f"127.0.0.1:{running.port}"
        registries[address] = registry
        return address

    try:
        data = await serve("data", data_server, {"root": str(root)})
        # engines download packages from a gateway's advertised address, known before it starts
        ports = [free_port() for _ in over]
        engine_addresses = []
        for i in range(engines):
            flags = {
                "threads": threads,
                "slots": slots,
                "data": data,
                "gateway": f"127.0.0.1:{ports[0]}",
                "cache_dir": str(tmp / f"cache-e{i}"),
                "state_dir": str(tmp / f"state-e{i}"),
                **(engine_flags or {}),
            }
            engine_addresses.append(await serve("engine", engine_server, flags))
        gateway_addresses = []
        for k, (port, indices) in enumerate(zip(ports, over, strict=True)):
            store = tmp / ("gw" if k == 0 else f"gw{k}")
            store.mkdir(parents=True, exist_ok=True)
            flags = {
                "engines": ",".join(engine_addresses[i] for i in indices),
                "data_address": data,
                "jobs_db": str(store / "jobs.sqlite3"),
                "packages_root": str(store / "packages"),
                "advertise_address": f"127.0.0.1:{port}",
                **(gateway_flags or {}),
            }
            gateway_addresses.append(await serve("gateway", gateway_server, flags, port=port))
        yield InProcessMesh(tmp, data, engine_addresses, gateway_addresses, registries)
    finally:
        # gateways first (their jobs end), then the engines, then the data service they read
        for running in reversed(started):
            await running.stop()


@contextlib.contextmanager
def threaded_mesh(tmp: Path, **options: Any) -> Iterator[InProcessMesh]:
    """`inprocess_mesh(tmp, **options)` on an event loop of its own thread, for sync tests.

    The servers answer while the test blocks; leaving the block stops them and ends the thread.
    """
    ready: Future[InProcessMesh] = Future()
    ended: Future[None] = Future()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def run() -> None:
        try:
            async with inprocess_mesh(tmp, **options) as mesh:
                ready.set_result(mesh)
                await stop.wait()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc)
            raise

    def main() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(run())
            ended.set_result(None)
        except BaseException as exc:  # noqa: BLE001 - raised in the test's thread, by `ready` or after the stop
            ended.set_exception(exc)
        finally:
            loop.close()

    thread = threading.Thread(target=main, name="in-process mesh", daemon=True)
    thread.start()
    try:
        yield ready.result(timeout=_THREAD_SECONDS)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=_THREAD_SECONDS)
        assert not thread.is_alive(), "the in-process mesh did not stop"
        if ready.exception() is None:
            ended.result()  # an error while stopping fails the test that used the mesh
