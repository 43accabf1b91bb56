"""The job store: jobs, their events and results in SQLite under the data dir.

Writes never run on the event loop. Each write method serializes its record on the
caller's thread (a snapshot: the caller may change its message afterwards) and queues it
for one writer thread that owns the write connection; it returns a `Written` future that
completes once the write is committed (await it with `asyncio.wrap_future` where a later
step depends on it, or ignore it). Writes are committed in the order they were issued; the
writer commits whatever is queued together in one transaction (a commit, and now and then a
WAL checkpoint with its fsync, is what stalled the loop when they ran on it: up to 290 ms
beside another suite on a shared machine).
`transaction()` groups the writes issued inside it into one unit that commits whole or not
at all. Reads use their own connection on the caller's thread: WAL lets them run beside the
writer, and they see committed writes only (`written()` / `flush()` wait for those issued
so far). Records are the JobService messages themselves (serialized protobuf); a result's
pv_net_cf is kept apart as little-endian float64 so records stay small and ListJobs never
reads vectors.

A running job's fold is checkpointed (`Checkpoint`: the next block to fold, the exact
running total of the five PVs as float64 bytes, the steps of the folded blocks) in the same
transaction as the progress event that reports it, so a restarted gateway resumes the job
from that block and ends with the same bits (DESIGN.md "Store").
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, NamedTuple, TypeAlias

import numpy as np

from livecalc.gateway.v1 import job_pb2
from services.common.errors import InvalidArgument
from services.valuation.arrays import F64

log = logging.getLogger(__name__)

DEFAULT_PAGE: Final = 50
MAX_PAGE: Final = 500
#: Units of writes the writer commits together at most.
MAX_BATCH: Final = 512

#: Completes (with the write's result) once the write is committed; see the module docstring.
Written: TypeAlias = "Future[Any]"
#: One write: runs on the writer's connection inside the batch's transaction.
_Op: TypeAlias = Callable[[sqlite3.Connection], Any]


class _Write(NamedTuple):
    op: _Op
    future: Future[Any]
    #: Writes with the same key replace one another (a job's checkpoint): of those in one
    #: batch only the last one runs.
    supersedes: str | None = None


#: Writes committed whole or not at all.
_Unit: TypeAlias = list[_Write]
_memory_names = itertools.count()

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    create_ns INTEGER NOT NULL,
    state INTEGER NOT NULL,
    idempotency_key TEXT UNIQUE,
    record BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_time ON jobs (create_ns DESC, job_id DESC);
CREATE TABLE IF NOT EXISTS events (
    job_id TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    event BLOB NOT NULL,
    PRIMARY KEY (job_id, sequence)
);
CREATE TABLE IF NOT EXISTS results (
    job_id TEXT PRIMARY KEY,
    package_hash TEXT NOT NULL,
    dataset_version TEXT NOT NULL,
    scenarios_key TEXT NOT NULL,
    preview INTEGER NOT NULL,
    mean REAL NOT NULL,
    end_ns INTEGER NOT NULL,
    pv_net_cf BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (
    job_id TEXT PRIMARY KEY,
    dataset_version TEXT NOT NULL,
    dataset_rows INTEGER NOT NULL,
    chunk_blocks INTEGER NOT NULL,
    next_block INTEGER NOT NULL,
    steps INTEGER NOT NULL,
    total BLOB
);
CREATE INDEX IF NOT EXISTS full_runs ON results (package_hash, dataset_version, scenarios_key, preview, end_ns);
"""


@dataclass(frozen=True)
class ResultKey:
    """What makes two runs comparable: same package, dataset version and scenarios."""

    package_hash: str
    dataset_version: str
    scenarios_key: str


@dataclass(frozen=True)
class Checkpoint:
    """Where a running job's fold stands: blocks before `next_block` are folded into `total` (f64 [5][N])."""

    job_id: str
    dataset_version: str
    dataset_rows: int
    chunk_blocks: int
    next_block: int
    steps: int
    total: F64 | None


class StoreClosed(RuntimeError):
    """A write after `JobStore.close()`."""


class JobStore:
    """SQLite-backed records of jobs, events and results; writes go through one writer thread.

    Call the write methods and `transaction()` from one thread (the event loop's); reads from
    that thread too. `close()` commits every queued write first.
    """

    def __init__(self, path: Path | str) -> None:
        if str(path) == ":memory:":
            # one shared in-memory database for the reading and the writing connection
            self._target, self._uri = f"file:livecalc-jobs-{next(_memory_names)}?mode=memory&cache=shared", True
        else:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._target, self._uri = str(path), False
        self._db = self._connect()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)
        columns = {str(r[1]) for r in self._db.execute("PRAGMA table_info(jobs)")}
        if "tenant" not in columns:  # a store from before tenants: its jobs are the implicit tenant's
            self._db.execute("ALTER TABLE jobs ADD COLUMN tenant TEXT NOT NULL DEFAULT ''")
        self._queue: queue.SimpleQueue[_Unit | None] = queue.SimpleQueue()
        self._collecting: _Unit | None = None
        self._closed = False
        self._writer = threading.Thread(target=self._write_loop, name="job store writer", daemon=True)
        self._writer.start()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self._target, isolation_level=None, uri=self._uri)
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=10000")
        if self._uri:
            db.execute("PRAGMA read_uncommitted=1")  # shared cache: reads take no table locks
        return db

    def close(self) -> None:
        """Commit every queued write, stop the writer and close the connections."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._writer.join()
        self._db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """The writes issued inside are committed together (or not at all: none is when the body
        raises). The body must not await: it collects this thread's writes until it ends."""
        if self._collecting is not None:
            yield  # inside another one: its writes join the outer unit
            return
        unit: _Unit = []
        self._collecting = unit
        try:
            yield
        except BaseException:
            for write in unit:
                write.future.cancel()
            raise
        finally:
            self._collecting = None
        if unit:
            self._submit(unit)

    def written(self) -> Written:
        """Completes once every write issued before it is committed."""
        future: Future[Any] = Future()
        self._submit([_Write(lambda db: None, future)])
        return future

    def flush(self) -> None:
        """Block until every write issued so far is committed (start-up and tests; not on a busy loop)."""
        self.written().result()

    def _execute(self, sql: str, row: tuple[Any, ...], supersedes: str | None = None) -> Written:
        """Queue one statement (its parameters already serialized)."""

        def op(db: sqlite3.Connection) -> None:
            db.execute(sql, row)

        future: Future[Any] = Future()
        write = _Write(op, future, supersedes)
        if self._collecting is not None:
            self._collecting.append(write)
        else:
            self._submit([write])
        return future

    def _submit(self, unit: _Unit) -> None:
        if self._closed:
            raise StoreClosed("the job store is closed")
        self._queue.put(unit)

    def _write_loop(self) -> None:
        db = self._connect()
        try:
            while True:
                unit = self._queue.get()
                if unit is None:
                    return
                batch = [unit]
                stop = False
                while len(batch) < MAX_BATCH:
                    try:
                        more = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        stop = True
                        break
                    batch.append(more)
                self._commit(db, batch)
                if stop:
                    return
        finally:
            db.close()

    @staticmethod
    def _commit(db: sqlite3.Connection, batch: list[_Unit]) -> None:
        """One transaction for the batch; a unit that fails is rolled back alone (its futures
        get the error), the others are committed. A write superseded later in the batch is
        skipped: a backlog (a slow disk) writes each job's checkpoint once, not once a second."""
        last = {w.supersedes: w for unit in batch for w in unit if w.supersedes is not None}

        def run(w: _Write) -> Any:
            return None if w.supersedes is not None and last[w.supersedes] is not w else w.op(db)

        outcomes: list[tuple[_Unit, list[Any] | BaseException]] = []
        try:
            db.execute("BEGIN IMMEDIATE")
            for unit in batch:
                whole = len(unit) > 1
                if whole:
                    db.execute("SAVEPOINT unit")
                try:
                    outcomes.append((unit, [run(w) for w in unit]))
                except Exception as exc:  # noqa: BLE001 - the unit's futures get it
                    if whole:
                        db.execute("ROLLBACK TO unit")
                    outcomes.append((unit, exc))
                if whole:
                    db.execute("RELEASE unit")
            db.execute("COMMIT")
        except Exception as exc:  # the batch is not written: every write of it fails
            log.exception("job store: a batch of writes failed", extra={"fields": {"units": len(batch)}})
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            outcomes = [(unit, exc) for unit in batch]
        for unit, outcome in outcomes:
            for i, (_, future, _) in enumerate(unit):
                if future.done():  # cancelled: its caller stopped waiting (the write stands)
                    continue
                if isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome[i])

    # jobs

    @staticmethod
    def _job_row(job: job_pb2.Job, idempotency_key: str, tenant: str) -> tuple[str, int, int, str | None, bytes, str]:
        record = job_pb2.Job()
        record.CopyFrom(job)
        del record.result.pv_net_cf[:]
        return (
            job.job_id,
            job.create_time.ToNanoseconds(),
            int(job.state),
            idempotency_key or None,
            record.SerializeToString(),
            tenant,
        )

    def put_job(self, job: job_pb2.Job, idempotency_key: str = "", tenant: str = "") -> Written:
        """Insert or replace a job's record (its result without the vector); the tenant is
        set by the insert and never changed."""
        return self._execute(
            "INSERT INTO jobs (job_id, create_ns, state, idempotency_key, record, tenant) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (job_id) DO UPDATE SET state = excluded.state, record = excluded.record",
            self._job_row(job, idempotency_key, tenant),
        )

    def tenant_of(self, job_id: str) -> str | None:
        """The tenant that submitted the job ('' with auth off), None when there is no such job."""
        row = self._db.execute("SELECT tenant FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return None if row is None else str(row[0])

    def get_job(self, job_id: str) -> job_pb2.Job | None:
        row = self._db.execute("SELECT record FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return None if row is None else job_pb2.Job.FromString(row[0])

    def job_by_key(self, idempotency_key: str) -> str | None:
        row = self._db.execute("SELECT job_id FROM jobs WHERE idempotency_key = ?", (idempotency_key,)).fetchone()
        return None if row is None else str(row[0])

    def jobs_in(self, states: Iterable[int]) -> list[job_pb2.Job]:
        marks = ",".join("?" for _ in states)
        rows = self._db.execute(f"SELECT record FROM jobs WHERE state IN ({marks})", tuple(states)).fetchall()
        return [job_pb2.Job.FromString(r[0]) for r in rows]

    def count_by_state(self) -> dict[int, int]:
        return {int(s): int(n) for s, n in self._db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state")}

    def list_jobs(
        self, page_size: int, page_token: str, state: int = 0, tenant: str | None = None
    ) -> tuple[list[job_pb2.Job], str]:
        """One page of `tenant`'s jobs (every tenant's when None), newest first; the token is the
        last (create_ns, job_id) returned."""
        if page_size < 0:
            raise InvalidArgument("page_size must be ≥ 0")
        size = min(page_size or DEFAULT_PAGE, MAX_PAGE)
        where: list[str] = ["1 = 1"]
        args: list[int | str] = []
        if state:
            where.append("state = ?")
            args.append(state)
        if tenant is not None:
            where.append("tenant = ?")
            args.append(tenant)
        if page_token:
            try:
                ns_text, after = page_token.split(":", 1)
                ns = int(ns_text)
            except ValueError:
                raise InvalidArgument("page_token is not one this service issued") from None
            where.append("(create_ns < ? OR (create_ns = ? AND job_id < ?))")
            args += [ns, ns, after]
        rows = self._db.execute(
            f"SELECT create_ns, job_id, record FROM jobs WHERE {' AND '.join(where)} "
            "ORDER BY create_ns DESC, job_id DESC LIMIT ?",
            (*args, size + 1),
        ).fetchall()
        page = rows[:size]
        token = f"{page[-1][0]}:{page[-1][1]}" if len(rows) > size else ""
        return [job_pb2.Job.FromString(r[2]) for r in page], token

    # events

    def append_event(self, event: job_pb2.JobEvent) -> Written:
        row = (event.job_id, event.sequence, event.SerializeToString())
        return self._execute("INSERT INTO events (job_id, sequence, event) VALUES (?, ?, ?)", row)

    def events(self, job_id: str, after: int = 0) -> list[job_pb2.JobEvent]:
        rows = self._db.execute(
            "SELECT event FROM events WHERE job_id = ? AND sequence > ? ORDER BY sequence", (job_id, after)
        ).fetchall()
        return [job_pb2.JobEvent.FromString(r[0]) for r in rows]

    # checkpoints

    def put_checkpoint(self, cp: Checkpoint) -> Written:
        total = None if cp.total is None else np.ascontiguousarray(cp.total, dtype="<f8").tobytes()
        row = (cp.job_id, cp.dataset_version, cp.dataset_rows, cp.chunk_blocks, cp.next_block, cp.steps, total)
        sql = "INSERT OR REPLACE INTO checkpoints VALUES (?, ?, ?, ?, ?, ?, ?)"
        return self._execute(sql, row, supersedes=f"checkpoint {cp.job_id}")

    def checkpoint(self, job_id: str, components: int = 5) -> Checkpoint | None:
        row = self._db.execute("SELECT * FROM checkpoints WHERE job_id = ?", (job_id,)).fetchone()
        if row is None:
            return None
        total = (
            None if row[6] is None else np.frombuffer(row[6], dtype="<f8").astype(np.float64).reshape(components, -1)
        )
        return Checkpoint(str(row[0]), str(row[1]), int(row[2]), int(row[3]), int(row[4]), int(row[5]), total)

    def drop_checkpoint(self, job_id: str) -> Written:
        return self._execute("DELETE FROM checkpoints WHERE job_id = ?", (job_id,), supersedes=f"checkpoint {job_id}")

    # results

    def put_result(
        self, job_id: str, key: ResultKey, *, preview: bool, mean: float, end_ns: int, pv_net_cf: F64
    ) -> Written:
        vector = np.ascontiguousarray(pv_net_cf, dtype="<f8").tobytes()
        row = (job_id, key.package_hash, key.dataset_version, key.scenarios_key, int(preview), mean, end_ns, vector)
        return self._execute("INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row)

    def result_vector(self, job_id: str) -> F64 | None:
        row = self._db.execute("SELECT pv_net_cf FROM results WHERE job_id = ?", (job_id,)).fetchone()
        return None if row is None else np.frombuffer(row[0], dtype="<f8").astype(np.float64)

    def latest_full_mean(self, key: ResultKey) -> tuple[str, float] | None:
        """(job id, mean pv_net_cf) of the latest full (not preview) run with these inputs."""
        row = self._db.execute(
            "SELECT job_id, mean FROM results WHERE package_hash = ? AND dataset_version = ? AND scenarios_key = ? "
            "AND preview = 0 ORDER BY end_ns DESC LIMIT 1",
            (key.package_hash, key.dataset_version, key.scenarios_key),
        ).fetchone()
        return None if row is None else (str(row[0]), float(row[1]))
