"""The job store's file: one process holds it, it is checked when it opens, and its schema is
created or migrated there (`PRAGMA user_version` says which schema a file has).

`lock` holds `jobs.sqlite3.lock` beside the store (flock, for as long as its descriptor is
open), so a second gateway on the same data dir stops at start-up naming the holder's pid
instead of sharing the store. `open_schema` runs `PRAGMA quick_check` (a file that is not a
SQLite database, or is damaged, raises `sqlite3.DatabaseError`) and brings the schema to
`SCHEMA_VERSION` in one transaction.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
from pathlib import Path
from typing import Final

import grpc

from services.common.errors import FailedPrecondition, LivecalcError

log = logging.getLogger(__name__)

#: The schema `PRAGMA user_version` of this code: 1 keeps a job's tenant and idempotency key
#: apart (0 kept them joined as 'tenant\x1fkey' in one unique column).
SCHEMA_VERSION: Final = 1

JOBS_TABLE: Final = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    create_ns INTEGER NOT NULL,
    state INTEGER NOT NULL,
    tenant TEXT NOT NULL DEFAULT '',
    idempotency_key TEXT,
    record BLOB NOT NULL,
    request BLOB,
    UNIQUE (tenant, idempotency_key)
)"""
SCHEMA: Final = (
    JOBS_TABLE,
    "CREATE INDEX IF NOT EXISTS jobs_by_time ON jobs (create_ns DESC, job_id DESC)",
    """
CREATE TABLE IF NOT EXISTS events (
    job_id TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    event BLOB NOT NULL,
    PRIMARY KEY (job_id, sequence)
)""",
    """
CREATE TABLE IF NOT EXISTS results (
    job_id TEXT PRIMARY KEY,
    package_hash TEXT NOT NULL,
    dataset_version TEXT NOT NULL,
    scenarios_key TEXT NOT NULL,
    preview INTEGER NOT NULL,
    mean REAL NOT NULL,
    end_ns INTEGER NOT NULL,
    pv_net_cf BLOB NOT NULL
)""",
    """
CREATE TABLE IF NOT EXISTS checkpoints (
    job_id TEXT PRIMARY KEY,
    dataset_version TEXT NOT NULL,
    dataset_rows INTEGER NOT NULL,
    chunk_blocks INTEGER NOT NULL,
    next_block INTEGER NOT NULL,
    steps INTEGER NOT NULL,
    total BLOB
)""",
    "CREATE INDEX IF NOT EXISTS full_runs ON results (package_hash, dataset_version, scenarios_key, preview, end_ns)",
    "CREATE TABLE IF NOT EXISTS probe (id INTEGER PRIMARY KEY, ns INTEGER NOT NULL)",
)


class StoreUnusable(LivecalcError):
    """The job store cannot be opened: not a SQLite database, damaged, or from a newer schema."""

    code = grpc.StatusCode.DATA_LOSS


class StoreLocked(FailedPrecondition):
    """Another process (a second gateway on the same data dir) holds the job store."""


def lock(path: Path) -> int:
    """Hold `path`.lock (flock, exclusive) and write this pid into it; its descriptor."""
    lock_path = path.with_name(path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise StoreLocked(
            f"the job store in {path.parent} is in use by another process (pid {holder}, lock {lock_path}); "
            "one gateway per data dir"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def open_schema(db: sqlite3.Connection) -> None:
    """Check the file, then create or migrate the schema in one transaction."""
    db.execute("PRAGMA journal_mode=WAL")
    problems = [str(r[0]) for r in db.execute("PRAGMA quick_check")]
    if problems != ["ok"]:
        raise sqlite3.DatabaseError("; ".join(problems[:3]))
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise sqlite3.DatabaseError(f"schema version {version} is newer than this gateway's {SCHEMA_VERSION}")
    db.execute("BEGIN IMMEDIATE")
    try:
        if version < 1 and db.execute("SELECT 1 FROM sqlite_master WHERE name = 'jobs'").fetchone():
            migrate_keys(db)
        for statement in SCHEMA:
            db.execute(statement)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def migrate_keys(db: sqlite3.Connection) -> None:
    """Schema 0 → 1 (inside the caller's transaction): tenant and idempotency key in columns of
    their own, unique together. Schema 0 kept one unique key column, 'tenant\\x1fkey' for a
    tenant's jobs (the bare key without auth), so two tenants' keys could collide; the row's
    tenant column says how much of the joined key is the tenant's. Stores from before tenants
    get the column first."""
    columns = {str(r[1]) for r in db.execute("PRAGMA table_info(jobs)")}
    tenant = "tenant" if "tenant" in columns else "''"
    db.execute("DROP TABLE IF EXISTS jobs_v1")
    db.execute(JOBS_TABLE.replace("IF NOT EXISTS jobs", "jobs_v1"))
    db.execute(
        "INSERT INTO jobs_v1 (job_id, create_ns, state, tenant, idempotency_key, record) "
        f"SELECT job_id, create_ns, state, {tenant}, CASE "
        f"WHEN {tenant} != '' AND substr(idempotency_key, 1, length({tenant}) + 1) = {tenant} || char(31) "
        f"THEN substr(idempotency_key, length({tenant}) + 2) ELSE idempotency_key END, record FROM jobs"
    )
    db.execute("DROP TABLE jobs")
    db.execute("ALTER TABLE jobs_v1 RENAME TO jobs")
    log.info("job store migrated to schema 1 (tenant and idempotency key apart)")
