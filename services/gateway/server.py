"""`livecalc serve gateway`: configuration and assembly of the gateway's gRPC surface.

JobService runs jobs over the engines named by ``--engines`` (a list of HOST:PORT, or
``dns:///NAME:PORT``; env LIVECALC_ENGINES; default the local engine) and reads dataset
metadata from the data service at ``--data-address`` (env LIVECALC_DATA_ADDRESS; default the
local data service); jobs, events and results live in SQLite at ``--jobs-db`` (env
LIVECALC_JOBS_DB; default $LIVECALC_DATA_DIR/jobs.sqlite3). Engines download packages from
``--advertise-address`` (env LIVECALC_GATEWAY_ADVERTISE_ADDRESS; default this gateway's own
host:port). Beyond ``--max-pending-jobs`` unfinished jobs (env LIVECALC_MAX_PENDING_JOBS;
default 100) SubmitJob answers RESOURCE_EXHAUSTED. DataService is served here too, each RPC
forwarded to the data service for the caller's tenant (services/gateway/data_proxy.py), so
clients need the gateway's address alone. PackageService
stores packages in ``$LIVECALC_DATA_DIR/packages`` (default ./.livecalc/packages), or in an
Azure Blob container when a connection string and a container are given (flags, or
LIVECALC_PACKAGES_AZURE_CONNECTION_STRING / LIVECALC_PACKAGES_AZURE_CONTAINER). The
environment is read here only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer
from prometheus_client import CollectorRegistry

from livecalc.data.v1 import data_service_pb2_grpc
from livecalc.gateway.v1 import job_service_pb2, job_service_pb2_grpc, package_service_pb2, package_service_pb2_grpc
from services.common.auth.service import internal_channel_security, service_credentials
from services.common.config import DEFAULT_PORTS, resolve_server_config
from services.common.errors import InvalidArgument
from services.common.server import ServiceBinding
from services.common.service import ServiceParts
from services.common.settings import Setting, data_dir
from services.common.storage.location import StorageLocation, StorageSettings
from services.gateway.config import (
    DEFAULT_ENGINE_WAIT_SECONDS,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_PENDING_JOBS,
    DEFAULT_PROGRESS_SECONDS,
    DEFAULT_STALL_SECONDS,
    DispatchConfig,
    GatewayConfig,
    JobConfig,
)
from services.gateway.data_proxy import DATA_SERVICE, DataProxyServicer
from services.gateway.engines import DEFAULT_KEEPALIVE_SECONDS, EnginePool, EngineTargets
from services.gateway.inputs import DataServiceDatasets
from services.gateway.job_servicer import JobServicer
from services.gateway.jobs import JobManager
from services.gateway.loop_lag import LoopLagMonitor
from services.gateway.metrics import GatewayMetrics
from services.gateway.package_servicer import PackageServicer
from services.gateway.package_store import PackageStore
from services.gateway.store import JobStore

JOB_SERVICE = job_service_pb2.DESCRIPTOR.services_by_name["JobService"].full_name
PACKAGE_SERVICE = package_service_pb2.DESCRIPTOR.services_by_name["PackageService"].full_name
log = logging.getLogger(__name__)


N = TypeVar("N", int, float)


def _number(parse: Callable[[str], N], what: str) -> Callable[[str], N]:
    """`parse`, refusing bad text with the setting's name (``chunk attempts must be an integer``)."""

    def read(text: str) -> N:
        try:
            return parse(text)
        except ValueError:
            kind = "an integer" if parse is int else "a number"
            raise InvalidArgument(f"{what} must be {kind}, got {text!r}") from None

    return read


ENGINES: Setting[str | None] = Setting(
    "LIVECALC_ENGINES",
    str,
    None,
    flag="--engines",
    help="engines: HOST:PORT[,HOST:PORT…] or dns:///NAME:PORT",
    shown="the local engine",
)
DATA_ADDRESS: Setting[str | None] = Setting(
    "LIVECALC_DATA_ADDRESS",
    str,
    None,
    flag="--data-address",
    help="data service HOST:PORT",
    shown="the local data service",
)
JOBS_DB: Setting[str | None] = Setting(
    "LIVECALC_JOBS_DB", str, None, flag="--jobs-db", help="SQLite job store", shown="$LIVECALC_DATA_DIR/jobs.sqlite3"
)
ADVERTISE_ADDRESS: Setting[str | None] = Setting(
    "LIVECALC_GATEWAY_ADVERTISE_ADDRESS",
    str,
    None,
    flag="--advertise-address",
    help="HOST:PORT engines use to download packages from this gateway",
)
CHUNK_ATTEMPTS = Setting(
    "LIVECALC_CHUNK_ATTEMPTS",
    _number(int, "chunk attempts"),
    DEFAULT_MAX_ATTEMPTS,
    flag="--chunk-attempts",
    help="tries per chunk before a job fails",
    check=lambda n: n >= 1,
    rule="≥ 1",
    what="chunk attempts",
)
CHUNK_STALL_SECONDS = Setting(
    "LIVECALC_CHUNK_STALL_SECONDS",
    _number(float, "chunk stall seconds"),
    DEFAULT_STALL_SECONDS,
    flag="--chunk-stall-seconds",
    help="an engine that sends nothing on a chunk for this long is taken as hung and its chunk moved",
    check=lambda s: s > 0,
    rule="> 0",
    what="chunk stall seconds",
)
ENGINE_WAIT_SECONDS = Setting(
    "LIVECALC_ENGINE_WAIT_SECONDS",
    _number(float, "engine wait seconds"),
    DEFAULT_ENGINE_WAIT_SECONDS,
    flag="--engine-wait-seconds",
    help="a job whose work no engine takes (all unreachable, restarting or busy) waits this long in a row, then fails",
    check=lambda s: s > 0,
    rule="> 0",
    what="engine wait seconds",
)
ENGINE_KEEPALIVE_SECONDS = Setting(
    "LIVECALC_ENGINE_KEEPALIVE_SECONDS",
    _number(float, "engine keepalive seconds"),
    DEFAULT_KEEPALIVE_SECONDS,
    flag="--engine-keepalive-seconds",
    help="PING engines this often while chunks run and drop one that does not answer within as long, 0 for off",
    check=lambda s: s >= 0,
    rule="≥ 0 (0: off)",
    what="engine keepalive seconds",
)
MAX_PENDING_JOBS = Setting(
    "LIVECALC_MAX_PENDING_JOBS",
    _number(int, "max pending jobs"),
    DEFAULT_MAX_PENDING_JOBS,
    flag="--max-pending-jobs",
    help="unfinished (queued or running) jobs held before SubmitJob answers RESOURCE_EXHAUSTED, 0 for no limit",
    check=lambda n: n >= 0,
    rule="≥ 0 (0: no limit)",
    what="max pending jobs",
)
PROGRESS_SECONDS = Setting(
    "LIVECALC_PROGRESS_SECONDS",
    _number(float, "progress seconds"),
    DEFAULT_PROGRESS_SECONDS,
    flag="--progress-seconds",
    help="least seconds between two progress events of a running job once its first blocks are reported "
    "(those go out at once; its running statistics: one a second)",
    check=lambda s: s > 0,
    rule="> 0",
    what="progress seconds",
)
PACKAGES_ROOT: Setting[str | None] = Setting(
    "LIVECALC_PACKAGES_ROOT",
    str,
    None,
    flag="--packages-root",
    help="package directory",
    shown="$LIVECALC_DATA_DIR/packages",
)
PACKAGES_AZURE_CONNECTION_STRING: Setting[str | None] = Setting(
    "LIVECALC_PACKAGES_AZURE_CONNECTION_STRING",
    str,
    None,
    flag="--packages-azure-connection-string",
    help="store packages in Azure Blob",
)
PACKAGES_AZURE_CONTAINER: Setting[str | None] = Setting(
    "LIVECALC_PACKAGES_AZURE_CONTAINER",
    str,
    None,
    flag="--packages-azure-container",
    help="blob container of the packages",
)
PACKAGES = StorageSettings(PACKAGES_ROOT, PACKAGES_AZURE_CONNECTION_STRING, PACKAGES_AZURE_CONTAINER)
SETTINGS: tuple[Setting[Any], ...] = (
    ENGINES,
    DATA_ADDRESS,
    JOBS_DB,
    ADVERTISE_ADDRESS,
    CHUNK_ATTEMPTS,
    CHUNK_STALL_SECONDS,
    ENGINE_WAIT_SECONDS,
    ENGINE_KEEPALIVE_SECONDS,
    MAX_PENDING_JOBS,
    PROGRESS_SECONDS,
    PACKAGES_ROOT,
    PACKAGES_AZURE_CONNECTION_STRING,
    PACKAGES_AZURE_CONTAINER,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    for setting in SETTINGS:
        setting.add_argument(parser)


def resolve_package_location(args: argparse.Namespace, env: Mapping[str, str]) -> StorageLocation:
    """Flags win over the environment, which wins over defaults (the root: under the data dir)."""
    return PACKAGES.resolve(args, env, data_dir(env) / "packages")


def resolve_jobs_config(args: argparse.Namespace, env: Mapping[str, str]) -> GatewayConfig:
    """Flags win over the environment, which wins over defaults."""
    engines = ENGINES.read(args, env) or f"127.0.0.1:{DEFAULT_PORTS['engine'][0]}"
    data = DATA_ADDRESS.read(args, env) or f"127.0.0.1:{DEFAULT_PORTS['data'][0]}"
    db = JOBS_DB.read(args, env) or str(data_dir(env) / "jobs.sqlite3")
    advertise = ADVERTISE_ADDRESS.read(args, env)
    if not advertise:
        own = resolve_server_config("gateway", env, host=getattr(args, "host", None), port=getattr(args, "port", None))
        host = "127.0.0.1" if own.host in ("0.0.0.0", "::", "[::]") else own.host
        advertise = f"{host}:{own.port}"
    return GatewayConfig(
        engines=EngineTargets.parse(engines),
        data_address=data,
        jobs_db=Path(db),
        keepalive_seconds=ENGINE_KEEPALIVE_SECONDS.read(args, env),
        jobs=JobConfig(
            package_address=advertise,
            max_pending_jobs=MAX_PENDING_JOBS.read(args, env),
            progress_seconds=PROGRESS_SECONDS.read(args, env),
            dispatch=DispatchConfig(
                max_attempts=CHUNK_ATTEMPTS.read(args, env),
                stall_seconds=CHUNK_STALL_SECONDS.read(args, env),
                engine_wait_seconds=ENGINE_WAIT_SECONDS.read(args, env),
            ),
        ),
    )


class StoreReadiness:
    """The gateway is ready while its job store commits writes: overall health, `readiness` and
    JobService turn NOT_SERVING when the store starts failing (the store logs the error) and
    SERVING again once it writes. Liveness stays SERVING: a restart frees no disk."""

    NAMES = ("", "readiness", JOB_SERVICE)

    def __init__(self) -> None:
        self._failing = False
        self._health: HealthServicer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._updates: set[asyncio.Task[None]] = set()

    def store_health(self, error: BaseException | None) -> None:
        """The store's listener (called on its writer thread)."""
        self._failing = error is not None
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed
                self._loop.call_soon_threadsafe(self._update_soon)

    async def attach(self, health: HealthServicer) -> None:
        """`ServiceBinding.on_serving`: from now on the store's state sets these names' status."""
        self._health, self._loop = health, asyncio.get_running_loop()
        await self._update()

    def _update_soon(self) -> None:
        task = asyncio.get_running_loop().create_task(self._update())
        self._updates.add(task)
        task.add_done_callback(self._updates.discard)

    async def _update(self) -> None:
        if self._health is None:
            return
        status = health_pb2.HealthCheckResponse.NOT_SERVING if self._failing else health_pb2.HealthCheckResponse.SERVING
        for name in self.NAMES:
            await self._health.set(name, status)


async def build(args: argparse.Namespace, env: Mapping[str, str], registry: CollectorRegistry) -> ServiceParts:
    """The gateway's servicers over the resources it makes here, which it owns: the job store,
    package storage, data service clients, engine pool, job manager and loop-lag monitor are
    closed when the server stops (or when assembly fails half-way), newest first; the parts
    they are handed only borrow them."""
    jobs_config = resolve_jobs_config(args, env)
    async with contextlib.AsyncExitStack() as stack:
        # first: a store another gateway holds, or one that is damaged, stops the start here
        readiness = StoreReadiness()
        store = JobStore(jobs_config.jobs_db, on_health=readiness.store_health)
        stack.callback(store.close)
        location = resolve_package_location(args, env)
        storage = await location.open()
        stack.push_async_callback(storage.close)
        log.info("packages", extra={"fields": {"source": storage.kind, "at": location.where}})
        package_store = PackageStore(storage)
        packages = PackageServicer(package_store)
        metrics = GatewayMetrics.create(registry)
        # the mesh's own calls: a service token (when auth is on) and TLS (when configured)
        credentials = service_credentials("gateway", args, env)
        channels = internal_channel_security(args, env)
        datasets = DataServiceDatasets(jobs_config.data_address, credentials=credentials, security=channels)
        stack.push_async_callback(datasets.close)
        # DataService on the gateway's own address, forwarded for the caller's tenant (one address for clients)
        data_proxy = DataProxyServicer(jobs_config.data_address, credentials=credentials, security=channels)
        stack.push_async_callback(data_proxy.close)
        pool = EnginePool(
            jobs_config.engines,
            resolve_seconds=jobs_config.resolve_seconds,
            credentials=credentials,
            security=channels,
            keepalive_seconds=jobs_config.keepalive_seconds,
        )
        stack.push_async_callback(pool.close)
        manager = JobManager(
            store,
            pool,
            package_store,
            datasets=datasets,
            metrics=metrics,
            config=jobs_config.jobs,
            credentials=credentials,
        )
        stack.push_async_callback(manager.close)  # before the pool and the store it uses
        manager.recover()
        log.info(
            "jobs",
            extra={
                "fields": {
                    "engines": ",".join(jobs_config.engines.addresses) or f"dns:///{jobs_config.engines.dns_name}",
                    "data": jobs_config.data_address,
                    "store": str(jobs_config.jobs_db),
                }
            },
        )
        jobs = JobServicer(manager, metrics)
        loop_lag = LoopLagMonitor(registry)
        loop_lag.start()
        stack.push_async_callback(loop_lag.close)
        owned = stack.pop_all()  # assembled: the server's stop closes them

    return ServiceParts(
        bindings=[
            ServiceBinding(
                JOB_SERVICE,
                lambda s: job_service_pb2_grpc.add_JobServiceServicer_to_server(jobs, s),
                on_serving=readiness.attach,
            ),
            ServiceBinding(
                PACKAGE_SERVICE, lambda s: package_service_pb2_grpc.add_PackageServiceServicer_to_server(packages, s)
            ),
            ServiceBinding(
                DATA_SERVICE, lambda s: data_service_pb2_grpc.add_DataServiceServicer_to_server(data_proxy, s)
            ),
        ],
        on_stop=[owned.aclose],
    )
