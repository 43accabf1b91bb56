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
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar, cast

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
from services.common.storage.azure_blob import AzureBlobStorage, AzureConfig
from services.common.storage.base import Storage
from services.common.storage.local import LocalStorage
from services.gateway.data_proxy import DATA_SERVICE, DataProxyServicer
from services.gateway.dispatcher import DEFAULT_ENGINE_WAIT_SECONDS, DispatchConfig
from services.gateway.engines import DEFAULT_KEEPALIVE_SECONDS, EnginePool, EngineTargets
from services.gateway.inputs import DataServiceDatasets
from services.gateway.job_servicer import JobServicer
from services.gateway.jobs import JobManager
from services.gateway.live_job import JobConfig
from services.gateway.loop_lag import LoopLagMonitor
from services.gateway.metrics import GatewayMetrics
from services.gateway.package_servicer import PackageServicer
from services.gateway.package_store import PackageStore
from services.gateway.store import JobStore

JOB_SERVICE = job_service_pb2.DESCRIPTOR.services_by_name["JobService"].full_name
PACKAGE_SERVICE = package_service_pb2.DESCRIPTOR.services_by_name["PackageService"].full_name
log = logging.getLogger(__name__)
DEFAULT_MAX_PENDING_JOBS = 100


@dataclass(frozen=True)
class PackageConfig:
    """Where packages live: a local directory, or an Azure container."""

    root: Path
    azure: AzureConfig | None = None


@dataclass(frozen=True)
class JobsConfig:
    """Where the gateway's engines, data service and job store are."""

    engines: EngineTargets
    data_address: str
    jobs_db: Path
    advertise_address: str
    max_attempts: int = 4
    resolve_seconds: float = 30.0
    #: Unfinished jobs this gateway holds before SubmitJob answers RESOURCE_EXHAUSTED.
    max_pending_jobs: int = DEFAULT_MAX_PENDING_JOBS
    #: An engine silent this long on a chunk's stream is taken as hung and the chunk moved.
    stall_seconds: float = 60.0
    #: Keepalive PINGs on engine channels while calls are open (0: off); see engines.channel_options.
    keepalive_seconds: float = DEFAULT_KEEPALIVE_SECONDS
    #: How long a job waits in a row for an engine to take its work before it fails UNAVAILABLE.
    engine_wait_seconds: float = DEFAULT_ENGINE_WAIT_SECONDS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--engines",
        help="engines: HOST:PORT[,HOST:PORT…] or dns:///NAME:PORT (env LIVECALC_ENGINES; default the local engine)",
    )
    parser.add_argument(
        "--data-address", help="data service HOST:PORT (env LIVECALC_DATA_ADDRESS; default the local data service)"
    )
    parser.add_argument(
        "--jobs-db", help="SQLite job store (env LIVECALC_JOBS_DB; default $LIVECALC_DATA_DIR/jobs.sqlite3)"
    )
    parser.add_argument(
        "--advertise-address",
        help="HOST:PORT engines use to download packages from this gateway (env LIVECALC_GATEWAY_ADVERTISE_ADDRESS)",
    )
    parser.add_argument(
        "--chunk-attempts", type=int, help="tries per chunk before a job fails (env LIVECALC_CHUNK_ATTEMPTS; default 4)"
    )
    parser.add_argument(
        "--chunk-stall-seconds",
        type=float,
        help="an engine that sends nothing on a chunk for this long is taken as hung and its chunk moved "
        "(env LIVECALC_CHUNK_STALL_SECONDS; default 60)",
    )
    parser.add_argument(
        "--engine-wait-seconds",
        type=float,
        help="a job whose work no engine takes (all unreachable, restarting or busy) waits this long in a row, "
        f"then fails (env LIVECALC_ENGINE_WAIT_SECONDS; default {DEFAULT_ENGINE_WAIT_SECONDS:g})",
    )
    parser.add_argument(
        "--engine-keepalive-seconds",
        type=float,
        help="PING engines this often while chunks run and drop one that does not answer within as long, 0 for "
        f"off (env LIVECALC_ENGINE_KEEPALIVE_SECONDS; default {DEFAULT_KEEPALIVE_SECONDS:g})",
    )
    parser.add_argument(
        "--max-pending-jobs",
        type=int,
        help="unfinished (queued or running) jobs held before SubmitJob answers RESOURCE_EXHAUSTED, 0 for no limit "
        f"(env LIVECALC_MAX_PENDING_JOBS; default {DEFAULT_MAX_PENDING_JOBS})",
    )
    parser.add_argument(
        "--packages-root",
        help="package directory (env LIVECALC_PACKAGES_ROOT; default $LIVECALC_DATA_DIR/packages)",
    )
    parser.add_argument(
        "--packages-azure-connection-string",
        help="store packages in Azure Blob (env LIVECALC_PACKAGES_AZURE_CONNECTION_STRING)",
    )
    parser.add_argument(
        "--packages-azure-container", help="blob container of the packages (env LIVECALC_PACKAGES_AZURE_CONTAINER)"
    )


def resolve_package_config(args: argparse.Namespace, env: Mapping[str, str]) -> PackageConfig:
    """Flags win over the environment, which wins over defaults."""
    root = getattr(args, "packages_root", None) or env.get("LIVECALC_PACKAGES_ROOT")
    if not root:
        root = str(Path(env.get("LIVECALC_DATA_DIR") or ".livecalc") / "packages")
    conn = getattr(args, "packages_azure_connection_string", None) or env.get(
        "LIVECALC_PACKAGES_AZURE_CONNECTION_STRING"
    )
    container = getattr(args, "packages_azure_container", None) or env.get("LIVECALC_PACKAGES_AZURE_CONTAINER")
    azure = None
    if conn or container:
        if not (conn and container):
            raise InvalidArgument("Azure Blob needs both a connection string and a container name")
        if not 3 <= len(container) <= 63:
            raise InvalidArgument(f"Azure container names have 3 to 63 characters, got {container!r}")
        azure = AzureConfig(connection_string=conn, container=container)
    return PackageConfig(root=Path(root), azure=azure)


N = TypeVar("N", int, float)


@dataclass(frozen=True)
class _Setting(Generic[N]):
    """A number from a flag (typed by argparse), else its environment variable, else a default."""

    flag: str
    key: str
    default: N
    parse: Callable[[str], N]
    what: str

    def read(self, args: argparse.Namespace, env: Mapping[str, str]) -> N:
        value = getattr(args, self.flag, None)
        if value is not None:
            return cast(N, value)
        text = env.get(self.key, "")
        if text == "":
            return self.default
        try:
            return self.parse(text)
        except ValueError:
            kind = "an integer" if self.parse is int else "a number"
            raise InvalidArgument(f"{self.what} must be {kind}, got {text!r}") from None


_ATTEMPTS = _Setting("chunk_attempts", "LIVECALC_CHUNK_ATTEMPTS", 4, int, "chunk attempts")
_STALL = _Setting("chunk_stall_seconds", "LIVECALC_CHUNK_STALL_SECONDS", 60.0, float, "chunk stall seconds")
_KEEPALIVE = _Setting(
    "engine_keepalive_seconds",
    "LIVECALC_ENGINE_KEEPALIVE_SECONDS",
    DEFAULT_KEEPALIVE_SECONDS,
    float,
    "engine keepalive seconds",
)
_ENGINE_WAIT = _Setting(
    "engine_wait_seconds", "LIVECALC_ENGINE_WAIT_SECONDS", DEFAULT_ENGINE_WAIT_SECONDS, float, "engine wait seconds"
)
_PENDING = _Setting("max_pending_jobs", "LIVECALC_MAX_PENDING_JOBS", DEFAULT_MAX_PENDING_JOBS, int, "max pending jobs")


def resolve_jobs_config(args: argparse.Namespace, env: Mapping[str, str]) -> JobsConfig:
    """Flags win over the environment, which wins over defaults."""
    engines = getattr(args, "engines", None) or env.get("LIVECALC_ENGINES") or f"127.0.0.1:{DEFAULT_PORTS['engine'][0]}"
    data = (
        getattr(args, "data_address", None)
        or env.get("LIVECALC_DATA_ADDRESS")
        or f"127.0.0.1:{DEFAULT_PORTS['data'][0]}"
    )
    db = getattr(args, "jobs_db", None) or env.get("LIVECALC_JOBS_DB")
    if not db:
        db = str(Path(env.get("LIVECALC_DATA_DIR") or ".livecalc") / "jobs.sqlite3")
    advertise = getattr(args, "advertise_address", None) or env.get("LIVECALC_GATEWAY_ADVERTISE_ADDRESS")
    if not advertise:
        own = resolve_server_config("gateway", env, host=getattr(args, "host", None), port=getattr(args, "port", None))
        host = "127.0.0.1" if own.host in ("0.0.0.0", "::", "[::]") else own.host
        advertise = f"{host}:{own.port}"
    attempts = _ATTEMPTS.read(args, env)
    if attempts < 1:
        raise InvalidArgument(f"chunk attempts must be ≥ 1, got {attempts}")
    stall = _STALL.read(args, env)
    if stall <= 0:
        raise InvalidArgument(f"chunk stall seconds must be > 0, got {stall}")
    keepalive = _KEEPALIVE.read(args, env)
    if keepalive < 0:
        raise InvalidArgument(f"engine keepalive seconds must be ≥ 0 (0: off), got {keepalive}")
    engine_wait = _ENGINE_WAIT.read(args, env)
    if engine_wait <= 0:
        raise InvalidArgument(f"engine wait seconds must be > 0, got {engine_wait}")
    pending = _PENDING.read(args, env)
    if pending < 0:
        raise InvalidArgument(f"max pending jobs must be ≥ 0 (0: no limit), got {pending}")
    return JobsConfig(
        engines=EngineTargets.parse(engines),
        data_address=data,
        jobs_db=Path(db),
        advertise_address=advertise,
        max_attempts=attempts,
        max_pending_jobs=pending,
        stall_seconds=stall,
        keepalive_seconds=keepalive,
        engine_wait_seconds=engine_wait,
    )


async def open_storage(config: PackageConfig) -> Storage:
    if config.azure is not None:
        return await AzureBlobStorage.open(config.azure)
    local = LocalStorage(config.root)
    local.remove_stale_uploads()
    return local


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
    jobs_config = resolve_jobs_config(args, env)
    # first: a store another gateway holds, or one that is damaged, stops the start here
    readiness = StoreReadiness()
    store = JobStore(jobs_config.jobs_db, on_health=readiness.store_health)
    config = resolve_package_config(args, env)
    storage = await open_storage(config)
    where = config.azure.container if config.azure is not None else str(config.root)
    log.info("packages", extra={"fields": {"source": storage.kind, "at": where}})
    package_store = PackageStore(storage)
    packages = PackageServicer(package_store)
    metrics = GatewayMetrics.create(registry)
    # the mesh's own calls: a service token (when auth is on) and TLS (when configured)
    credentials = service_credentials("gateway", args, env)
    channels = internal_channel_security(args, env)
    datasets = DataServiceDatasets(jobs_config.data_address, credentials=credentials, security=channels)
    # DataService on the gateway's own address, forwarded for the caller's tenant (one address for clients)
    data_proxy = DataProxyServicer(jobs_config.data_address, credentials=credentials, security=channels)
    manager = JobManager(
        store,
        EnginePool(
            jobs_config.engines,
            resolve_seconds=jobs_config.resolve_seconds,
            credentials=credentials,
            security=channels,
            keepalive_seconds=jobs_config.keepalive_seconds,
        ),
        package_store,
        datasets=datasets,
        metrics=metrics,
        config=JobConfig(
            package_address=jobs_config.advertise_address,
            max_pending_jobs=jobs_config.max_pending_jobs,
            dispatch=DispatchConfig(
                max_attempts=jobs_config.max_attempts,
                stall_seconds=jobs_config.stall_seconds,
                engine_wait_seconds=jobs_config.engine_wait_seconds,
            ),
        ),
        credentials=credentials,
    )
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

    async def stop_jobs() -> None:
        await loop_lag.close()
        await manager.close()
        await datasets.close()
        await data_proxy.close()
        store.close()

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
        on_stop=[stop_jobs, storage.close],
    )
