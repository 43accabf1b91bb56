"""The job store: jobs, their events and results in SQLite under the data dir.

Every write method serializes its record on the caller's thread and queues it for the store's
writer (store_writer.py: one thread owns the write connection, commits in issue order, batches
what is queued into one transaction, `transaction()` units commit whole or not at all); it
returns a `Written` future that completes once the write is committed. While commits fail (a
full disk) the store reports itself failing (`failure`, `on_health`). Reads use their own
connection on the caller's thread: WAL lets them run beside the writer, and they see committed
writes only (`written()` / `flush()` wait for those issued so far). Records are the JobService
messages themselves (serialized protobuf); a result's per-scenario values (every output's,
f64 [K][N] in declared order) are kept apart as little-endian float64 so records stay small
and ListJobs never reads them. Records and events written before results carried declared
outputs are read in the current shape (legacy.py).

One gateway owns a store, which is checked and brought to the current schema when it opens
(store_file.py). A record that does not decode is skipped where jobs are listed and reported
with its job id (`StoreDataLoss` where that one job is asked for).

A running job's fold is checkpointed (`Checkpoint`: the next block to fold, the exact
running total of every output as float64 bytes, the steps of the folded blocks) in the same
transaction as the progress event that reports it, so a restarted gateway resumes the job
from that block and ends with the same bits (docs/architecture.md "8. The store, checkpoints and resume").
A job with variants values its plan in passes (the base's, then each variant's): its passes are
recorded with its first checkpoint (`put_pass`: each pass's package hash), a finished pass's
total and steps in one transaction with the next pass's first checkpoint, and the checkpoint is
then the running pass's, the first one without a total.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import grpc
import numpy as np
from google.protobuf.message import DecodeError

from livecalc.gateway.v1 import job_pb2
from services.common.errors import InvalidArgument, LivecalcError
from services.gateway.legacy import upgrade_event, upgrade_job
from services.gateway.store_file import StoreUnusable, lock, open_schema
from services.gateway.store_writer import HealthListener, StoreWriter, Written
from services.valuation.arrays import F64

log = logging.getLogger(__name__)

DEFAULT_PAGE: Final = 50
MAX_PAGE: Final = 500
#: Bytes of job records one ListJobs page carries at most (gRPC's message limit is 4 MiB): a
#: page ends early, with a token, rather than fail on the wire.
MAX_PAGE_BYTES: Final = 3 * 1024 * 1024
#: Largest create_ns a page token may name (SQLite integers are signed 64-bit).
_MAX_NS: Final = 2**63 - 1

_memory_names = itertools.count()


@dataclass(frozen=True)
class ResultKey:
    """What makes two runs comparable: same package, dataset version and scenarios."""

    package_hash: str
    dataset_version: str
    scenarios_key: str


@dataclass(frozen=True)
class PassTotal:
    """A finished pass of a job with variants: its fold's total (f64 [K][N]) and its steps."""

    steps: int
    total: F64


@dataclass(frozen=True)
class Checkpoint:
    """Where a running job's fold stands: blocks before `next_block` are folded into `total`
    (f64 [K][N], K outputs)."""

    job_id: str
    dataset_version: str
    dataset_rows: int
    chunk_blocks: int
    next_block: int
    steps: int
    total: F64 | None
    #: A job with variants (read back, never written by `put_checkpoint`: `put_pass` writes
    #: them): each pass's package hash (the base's first) and the passes finished, in order;
    #: the fold above is then the running pass's, pass ``len(finished)``. Empty for a job
    #: without variants.
    packages: tuple[str, ...] = ()
    finished: tuple[PassTotal, ...] = ()


class StoreDataLoss(LivecalcError):
    """A record in the job store does not decode: that one job cannot be read."""

    code = grpc.StatusCode.DATA_LOSS


def _decode(kind: type[Any], blob: object, what: str) -> Any:
    """The message in `blob` (a job or an event in the current shape: legacy.py), or
    StoreDataLoss naming `what`."""
    try:
        message = kind.FromString(blob)
    except (DecodeError, TypeError, ValueError) as exc:
        raise StoreDataLoss(f"the job store's record of {what} cannot be read ({exc}): it is damaged") from None
    if kind is job_pb2.Job:
        upgrade_job(message)
    elif kind is job_pb2.JobEvent:
        upgrade_event(message)
    return message


def _decodable(kind: type[Any], rows: Iterable[tuple[object, dict[str, Any]]]) -> list[Any]:
    """The messages of (blob, where) rows, less those that do not decode: each is skipped and
    logged with `where` (its job id, an event's sequence), so one damaged record never hides
    the others."""
    out = []
    for blob, where in rows:
        what = " ".join(f"{k} {v}" for k, v in where.items())
        try:
            out.append(_decode(kind, blob, what))
        except StoreDataLoss as exc:
            log.warning("job store: a damaged record skipped", extra={"fields": {**where, "error": exc.message}})
    return out


class JobStore:
    """SQLite-backed records of jobs, events and results; writes go through one writer thread.

    Call the write methods and `transaction()` from one thread (the event loop's); reads from
    that thread too. `close()` commits every queued write first. `on_health` is called on the
    writer thread when the store starts failing to commit (with the error) and when it commits
    again (None). Opening raises `StoreLocked` when another process holds the store and
    `StoreUnusable` when the file is not a healthy SQLite database.
    """

    def __init__(self, path: Path | str, *, on_health: HealthListener | None = None) -> None:
        self._lock_fd: int | None = None
        if str(path) == ":memory:":
            # one shared in-memory database for the reading and the writing connection
            self._target, self._uri = f"file:livecalc-jobs-{next(_memory_names)}?mode=memory&cache=shared", True
        else:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._target, self._uri = str(path), False
            self._lock_fd = lock(Path(path))
        try:
            self._db = self._connect()
            open_schema(self._db)
        except sqlite3.DatabaseError as exc:
            self._unlock()
            raise StoreUnusable(
                f"the job store {path} is not a healthy SQLite database ({exc}); "
                "move it aside (a new one is created) or restore it from a backup"
            ) from None
        except BaseException:
            self._unlock()
            raise
        self._closed = False
        self._writer = StoreWriter(self._connect, self._target, on_health)

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

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
        self._writer.close()
        self._db.close()
        self._unlock()

    @property
    def failure(self) -> BaseException | None:
        """The error of the last batch that could not be committed, None while writes succeed."""
        return self._writer.failure

    def transaction(self) -> contextlib.AbstractContextManager[Written]:
        """The writes issued inside are committed together, or not at all (`StoreWriter.transaction`)."""
        return self._writer.transaction()

    def written(self) -> Written:
        """Completes once every write issued before it is committed."""
        return self._writer.written()

    def flush(self) -> None:
        """Block until every write issued so far is committed (start-up and tests; not on a busy loop)."""
        self._writer.flush()

    # jobs

    def put_job(
        self,
        job: job_pb2.Job,
        idempotency_key: str = "",
        tenant: str = "",
        request: job_pb2.JobSpec | None = None,
    ) -> Written:
        """Insert or replace a job's record (its result without the values). The tenant, the
        idempotency key (unique per tenant) and the spec as the client sent it (`request`, kept
        to compare a later submission with the same key) are set by the insert and never changed."""
        record = job_pb2.Job()
        record.CopyFrom(job)
        if record.HasField("result"):  # touching `result` of a job without one would create it
            for output in record.result.outputs:
                del output.values[:]
        row = (
            job.job_id,
            job.create_time.ToNanoseconds(),
            int(job.state),
            tenant,
            idempotency_key or None,
            record.SerializeToString(),
            None if request is None else request.SerializeToString(),
        )
        return self._writer.execute(
            "INSERT INTO jobs (job_id, create_ns, state, tenant, idempotency_key, record, request) "
            "VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (job_id) DO UPDATE SET state = excluded.state, record = excluded.record",
            row,
        )

    def tenant_of(self, job_id: str) -> str | None:
        """The tenant that submitted the job ('' with auth off), None when there is no such job."""
        row = self._db.execute("SELECT tenant FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return None if row is None else str(row[0])

    def get_job(self, job_id: str) -> job_pb2.Job | None:
        """The job's record; StoreDataLoss when it does not decode."""
        row = self._db.execute("SELECT record FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return None if row is None else _decode(job_pb2.Job, row[0], f"job {job_id}")

    def job_by_key(self, idempotency_key: str, tenant: str = "") -> str | None:
        """The job `tenant` submitted with this idempotency key."""
        found = self.request_by_key(idempotency_key, tenant)
        return None if found is None else found[0]

    def request_by_key(self, idempotency_key: str, tenant: str = "") -> tuple[str, job_pb2.JobSpec | None] | None:
        """(job id, the spec as its client sent it) of the job `tenant` submitted with this
        key; the spec is None for a job recorded before requests were kept."""
        row = self._db.execute(
            "SELECT job_id, request FROM jobs WHERE tenant = ? AND idempotency_key = ?", (tenant, idempotency_key)
        ).fetchone()
        if row is None:
            return None
        job_id = str(row[0])
        return job_id, None if row[1] is None else _decode(job_pb2.JobSpec, row[1], f"job {job_id}'s request")

    @staticmethod
    def _readable(rows: Iterable[tuple[Any, ...]]) -> list[job_pb2.Job]:
        """The records of rows (job_id, record), less those that do not decode (each logged)."""
        return _decodable(job_pb2.Job, ((blob, {"job": job_id}) for job_id, blob in rows))

    def jobs_in(self, states: Iterable[int]) -> list[job_pb2.Job]:
        """Jobs in these states (those whose record does not decode are skipped and logged)."""
        marks = ",".join("?" for _ in states)
        rows = self._db.execute(f"SELECT job_id, record FROM jobs WHERE state IN ({marks})", tuple(states))
        return self._readable(rows.fetchall())

    def count_by_state(self) -> dict[int, int]:
        return {int(s): int(n) for s, n in self._db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state")}

    def list_jobs(
        self, page_size: int, page_token: str, state: int = 0, tenant: str | None = None
    ) -> tuple[list[job_pb2.Job], str]:
        """One page of `tenant`'s jobs (every tenant's when None), newest first, up to
        `MAX_PAGE_BYTES` of records; the token is the last (create_ns, job_id) returned."""
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
                if not 0 <= ns <= _MAX_NS:
                    raise ValueError(ns_text)
            except ValueError:
                raise InvalidArgument("page_token is not one this service issued") from None
            where.append("(create_ns < ? OR (create_ns = ? AND job_id < ?))")
            args += [ns, ns, after]
        rows = self._db.execute(
            f"SELECT create_ns, job_id, record FROM jobs WHERE {' AND '.join(where)} "
            "ORDER BY create_ns DESC, job_id DESC LIMIT ?",
            (*args, size + 1),
        ).fetchall()
        page: list[Any] = []
        total = 0
        for row in rows[:size]:
            total += len(row[2])
            if page and total > MAX_PAGE_BYTES:
                break
            page.append(row)
        token = f"{page[-1][0]}:{page[-1][1]}" if len(rows) > len(page) else ""
        return self._readable((r[1], r[2]) for r in page), token

    # events

    def append_event(self, event: job_pb2.JobEvent) -> Written:
        row = (event.job_id, event.sequence, event.SerializeToString())
        return self._writer.execute("INSERT INTO events (job_id, sequence, event) VALUES (?, ?, ?)", row)

    def events(self, job_id: str, after: int = 0) -> list[job_pb2.JobEvent]:
        """The job's events after `after`, in order (one that does not decode is skipped and logged)."""
        rows = self._db.execute(
            "SELECT sequence, event FROM events WHERE job_id = ? AND sequence > ? ORDER BY sequence", (job_id, after)
        ).fetchall()
        return _decodable(job_pb2.JobEvent, ((blob, {"job": job_id, "sequence": seq}) for seq, blob in rows))

    def last_sequence(self, job_id: str) -> int:
        """The highest sequence number persisted for the job (0 for none), decodable or not."""
        row = self._db.execute("SELECT MAX(sequence) FROM events WHERE job_id = ?", (job_id,)).fetchone()
        return int(row[0] or 0)

    # checkpoints

    def put_checkpoint(self, cp: Checkpoint) -> Written:
        total = None if cp.total is None else np.ascontiguousarray(cp.total, dtype="<f8").tobytes()
        outputs = 0 if cp.total is None else int(cp.total.shape[0])
        row = (cp.job_id, cp.dataset_version, cp.dataset_rows, cp.chunk_blocks, cp.next_block, cp.steps, total, outputs)
        sql = (
            "INSERT OR REPLACE INTO checkpoints (job_id, dataset_version, dataset_rows, chunk_blocks, next_block, "
            "steps, total, output_count) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        )
        return self._writer.execute(sql, row, supersedes=f"checkpoint {cp.job_id}")

    def checkpoint(self, job_id: str) -> Checkpoint | None:
        row = self._db.execute(
            "SELECT job_id, dataset_version, dataset_rows, chunk_blocks, next_block, steps, total, output_count "
            "FROM checkpoints WHERE job_id = ?",
            (job_id,),
        ).fetchone()
        if row is None:
            return None
        total = None
        if row[6] is not None:
            total = np.frombuffer(row[6], dtype="<f8").astype(np.float64).reshape(max(1, int(row[7])), -1)
        packages, finished = self._passes(job_id)
        return Checkpoint(
            str(row[0]), str(row[1]), int(row[2]), int(row[3]), int(row[4]), int(row[5]), total, packages, finished
        )

    def drop_checkpoint(self, job_id: str) -> Written:
        """Drop the job's checkpoint and its passes (one unit)."""
        with self.transaction() as unit:
            self._writer.execute(
                "DELETE FROM checkpoints WHERE job_id = ?", (job_id,), supersedes=f"checkpoint {job_id}"
            )
            self._writer.execute("DELETE FROM job_passes WHERE job_id = ?", (job_id,))
        return unit

    def put_pass(self, job_id: str, index: int, package_hash: str, done: PassTotal | None = None) -> Written:
        """Record pass ``index`` of a job with variants (0: the base) with its package hash, and
        its total and steps once it is ``done``."""
        total = None if done is None else np.ascontiguousarray(done.total, dtype="<f8").tobytes()
        row = (
            job_id,
            index,
            package_hash,
            None if done is None else done.steps,
            total,
            0 if done is None else int(done.total.shape[0]),
        )
        return self._writer.execute(
            "INSERT OR REPLACE INTO job_passes (job_id, pass_index, package_hash, steps, total, output_count) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            row,
        )

    def _passes(self, job_id: str) -> tuple[tuple[str, ...], tuple[PassTotal, ...]]:
        """The job's passes: every package hash in pass order and the finished passes' totals
        (those before the first pass without one: passes finish in order)."""
        rows = self._db.execute(
            "SELECT package_hash, steps, total, output_count FROM job_passes WHERE job_id = ? ORDER BY pass_index",
            (job_id,),
        ).fetchall()
        finished: list[PassTotal] = []
        for _, steps, total, outputs in rows:
            if total is None:
                break
            values = np.frombuffer(total, dtype="<f8").astype(np.float64).reshape(max(1, int(outputs)), -1)
            finished.append(PassTotal(int(steps), values))
        return tuple(str(r[0]) for r in rows), tuple(finished)

    # results

    def put_result(
        self, job_id: str, key: ResultKey, *, preview: bool, mean: float, end_ns: int, values: F64
    ) -> Written:
        """The result row: ``mean`` is the primary output's, ``values`` f64 [K][N] every output's
        values in declared order (or [1][N], the primary's alone, where only it is known)."""
        rows = np.atleast_2d(np.asarray(values, dtype=np.float64))
        blob = np.ascontiguousarray(rows, dtype="<f8").tobytes()
        row = (
            job_id,
            key.package_hash,
            key.dataset_version,
            key.scenarios_key,
            int(preview),
            mean,
            end_ns,
            blob,
            int(rows.shape[0]),
        )
        return self._writer.execute(
            "INSERT OR REPLACE INTO results (job_id, package_hash, dataset_version, scenarios_key, preview, mean, "
            "end_ns, vectors, output_count) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            row,
        )

    def result_values(self, job_id: str) -> F64 | None:
        """The result's values, f64 [rows][N]: every output's in declared order, or one row (the
        primary's alone) for results recorded before outputs."""
        row = self._db.execute("SELECT vectors, output_count FROM results WHERE job_id = ?", (job_id,)).fetchone()
        if row is None:
            return None
        return np.frombuffer(row[0], dtype="<f8").astype(np.float64).reshape(max(1, int(row[1])), -1)

    def latest_full_mean(self, key: ResultKey) -> tuple[str, float] | None:
        """(job id, mean of the primary output) of the latest full (not preview) run with these inputs."""
        row = self._db.execute(
            "SELECT job_id, mean FROM results WHERE package_hash = ? AND dataset_version = ? AND scenarios_key = ? "
            "AND preview = 0 ORDER BY end_ns DESC LIMIT 1",
            (key.package_hash, key.dataset_version, key.scenarios_key),
        ).fetchone()
        return None if row is None else (str(row[0]), float(row[1]))
