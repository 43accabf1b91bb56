"""The job store: jobs, their events and results in SQLite under the data dir.

One connection, used from the event loop's thread only (calls are short: one row each;
WAL with synchronous=NORMAL keeps an append well under a millisecond). Records are the
JobService messages themselves (serialized protobuf); a result's pv_net_cf is kept apart as
little-endian float64 so records stay small and ListJobs never reads vectors.

A running job's fold is checkpointed (`Checkpoint`: the next block to fold and the exact
running total of the five PVs as float64 bytes) in the same transaction as the progress
event that reports it, so a restarted gateway resumes the job from that block and ends with
the same bits (DESIGN.md "Store").
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np

from livecalc.gateway.v1 import job_pb2
from services.common.errors import InvalidArgument
from services.valuation.arrays import F64

DEFAULT_PAGE: Final = 50
MAX_PAGE: Final = 500

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


class JobStore:
    """SQLite-backed records of jobs, events and results."""

    def __init__(self, path: Path | str) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        columns = {str(r[1]) for r in self._db.execute("PRAGMA table_info(jobs)")}
        if "tenant" not in columns:  # a store from before tenants: its jobs are the implicit tenant's
            self._db.execute("ALTER TABLE jobs ADD COLUMN tenant TEXT NOT NULL DEFAULT ''")

    def close(self) -> None:
        self._db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Everything written inside is committed together (or not at all)."""
        self._db.execute("BEGIN")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # jobs

    def put_job(self, job: job_pb2.Job, idempotency_key: str = "", tenant: str = "") -> None:
        """Insert or replace a job's record (its result without the vector); the tenant is
        set by the insert and never changed."""
        record = job_pb2.Job()
        record.CopyFrom(job)
        del record.result.pv_net_cf[:]
        self._db.execute(
            "INSERT INTO jobs (job_id, create_ns, state, idempotency_key, record, tenant) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (job_id) DO UPDATE SET state = excluded.state, record = excluded.record",
            (
                job.job_id,
                job.create_time.ToNanoseconds(),
                int(job.state),
                idempotency_key or None,
                record.SerializeToString(),
                tenant,
            ),
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

    def append_event(self, event: job_pb2.JobEvent) -> None:
        self._db.execute(
            "INSERT INTO events (job_id, sequence, event) VALUES (?, ?, ?)",
            (event.job_id, event.sequence, event.SerializeToString()),
        )

    def events(self, job_id: str, after: int = 0) -> list[job_pb2.JobEvent]:
        rows = self._db.execute(
            "SELECT event FROM events WHERE job_id = ? AND sequence > ? ORDER BY sequence", (job_id, after)
        ).fetchall()
        return [job_pb2.JobEvent.FromString(r[0]) for r in rows]

    # checkpoints

    def put_checkpoint(self, cp: Checkpoint) -> None:
        total = None if cp.total is None else np.ascontiguousarray(cp.total, dtype="<f8").tobytes()
        self._db.execute(
            "INSERT OR REPLACE INTO checkpoints VALUES (?, ?, ?, ?, ?, ?, ?)",
            (cp.job_id, cp.dataset_version, cp.dataset_rows, cp.chunk_blocks, cp.next_block, cp.steps, total),
        )

    def checkpoint(self, job_id: str, components: int = 5) -> Checkpoint | None:
        row = self._db.execute("SELECT * FROM checkpoints WHERE job_id = ?", (job_id,)).fetchone()
        if row is None:
            return None
        total = (
            None if row[6] is None else np.frombuffer(row[6], dtype="<f8").astype(np.float64).reshape(components, -1)
        )
        return Checkpoint(str(row[0]), str(row[1]), int(row[2]), int(row[3]), int(row[4]), int(row[5]), total)

    def drop_checkpoint(self, job_id: str) -> None:
        self._db.execute("DELETE FROM checkpoints WHERE job_id = ?", (job_id,))

    # results

    def put_result(
        self, job_id: str, key: ResultKey, *, preview: bool, mean: float, end_ns: int, pv_net_cf: F64
    ) -> None:
        vector = np.ascontiguousarray(pv_net_cf, dtype="<f8").tobytes()
        self._db.execute(
            "INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (job_id, key.package_hash, key.dataset_version, key.scenarios_key, int(preview), mean, end_ns, vector),
        )

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
