"""A gateway in process for the job-store suites: a `JobManager` over fake engines, datasets and
packages (tests.gateway.fakes), its store at DIR/jobs.sqlite3, and, when a test needs the wire,
the real JobService on an in-process grpc.aio server with the gateway's store readiness.

`restart()` is what a gateway restart does to the store: the old manager and store are closed
(or abandoned, as a SIGKILL leaves them), a new pair opens the same file and recovers.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

from grpc import aio

from livecalc.engine.v1 import engine_pb2
from livecalc.gateway.v1 import job_pb2, job_service_pb2_grpc
from services.common.auth.interceptor import _PRINCIPAL
from services.common.auth.tokens import Principal
from services.common.config import ServerConfig
from services.common.server import RunningServer, ServiceBinding, start_server
from services.gateway.job_servicer import JobServicer
from services.gateway.jobs import JobManager
from services.gateway.server import JOB_SERVICE, StoreReadiness
from services.gateway.store import JobStore
from services.valuation.blocks import BLOCK_SIZE
from tests.gateway.fakes import HASH, FakeEngineStub, fake_engine, fake_manager, partial_table

BLOCKS = 6
ROWS = BLOCKS * BLOCK_SIZE - 7
SCENARIOS = 4
TABLE = partial_table(BLOCKS, SCENARIOS, seed=19)


def job_spec(count: int = SCENARIOS, **fields: Any) -> job_pb2.JobSpec:
    return job_pb2.JobSpec(
        package_hash=HASH, dataset_id="pol", scenarios=engine_pb2.ScenarioSpec(count=count, seed=1), **fields
    )


def manager(
    directory: Path,
    *,
    delay: float = 0.0,
    store: JobStore | None = None,
    readiness: StoreReadiness | None = None,
    **config: Any,
) -> JobManager:
    """A manager over one fake engine valuing `TABLE` (`delay` seconds per block)."""
    if store is None:
        store = JobStore(directory / "jobs.sqlite3", on_health=readiness.store_health if readiness else None)
    engines = [fake_engine("e", FakeEngineStub(TABLE, ROWS, delay=delay))]
    return fake_manager(directory, engines, ROWS, store=store, **{"progress_seconds": 0.01, **config})


@contextlib.asynccontextmanager
async def serving(jobs: JobManager, readiness: StoreReadiness | None = None) -> AsyncIterator[RunningServer]:
    """The real JobService over `jobs` on a free loopback port (readiness wired when given)."""
    servicer = JobServicer(jobs, jobs.metrics)
    binding = ServiceBinding(
        JOB_SERVICE,
        lambda s: job_service_pb2_grpc.add_JobServiceServicer_to_server(servicer, s),
        on_serving=readiness.attach if readiness is not None else None,
    )
    running = await start_server(ServerConfig(service="gateway", port=0, grace_seconds=1, drain_seconds=0), [binding])
    try:
        yield running
    finally:
        await running.stop()


@contextlib.asynccontextmanager
async def channel(running: RunningServer) -> AsyncIterator[job_service_pb2_grpc.JobServiceStub]:
    async with aio.insecure_channel(f"127.0.0.1:{running.port}") as ch:
        yield job_service_pb2_grpc.JobServiceStub(ch)


@contextlib.contextmanager
def tenant(name: str) -> Iterator[None]:
    """Calls into the manager made inside run as `name`'s (auth on, without the wire)."""
    token = _PRINCIPAL.set(Principal("tester", name, frozenset({"submit", "read"})))
    try:
        yield
    finally:
        _PRINCIPAL.reset(token)


class FullDisk:
    """The writer's connection answers 'database or disk is full' while `full` is set, as SQLite
    does when the WAL cannot grow: at the COMMIT of a batch (or a probe), which rolls it back.
    Install before the store opens (`JobStore._connect` is patched for every store)."""

    def __init__(self, monkeypatch: Any) -> None:
        self.full = threading.Event()
        self.refused = 0
        connect = JobStore._connect
        disk = self

        class Connection:
            def __init__(self, db: sqlite3.Connection) -> None:
                self._db = db

            def execute(self, sql: str, *args: Any) -> Any:
                if disk.full.is_set() and sql == "COMMIT":
                    disk.refused += 1
                    self._db.execute("ROLLBACK")
                    raise sqlite3.OperationalError("database or disk is full")
                return self._db.execute(sql, *args)

            def __getattr__(self, name: str) -> Any:
                return getattr(self._db, name)

        def patched(store: JobStore) -> Any:
            db = connect(store)
            # only the writer thread's connection: reads go on as on a full disk
            return Connection(db) if threading.current_thread().name == "job store writer" else db

        monkeypatch.setattr(JobStore, "_connect", patched)


async def stopped(jobs: JobManager) -> None:
    """What a gateway's graceful stop does to its manager and store."""
    await jobs.close()
    jobs.store.close()


async def until(check: Callable[[], bool], what: str, seconds: float = 10.0) -> None:
    import asyncio

    deadline = asyncio.get_running_loop().time() + seconds
    while not check():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)
