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
import numpy as np

from services.common.errors import FailedPrecondition, LivecalcError
from services.valuation.interface.declaration import TERM_LIFE_CASH_FLOWS, TERM_LIFE_OUTPUTS

log = logging.getLogger(__name__)

#: The schema `PRAGMA user_version` of this code: 1 keeps a job's tenant and idempotency key
#: apart (0 kept them joined as 'tenant\x1fkey' in one unique column); 2 keeps every declared
#: output's values of a result and of a checkpoint (1 kept term life's, see `migrate_outputs`).
SCHEMA_VERSION: Final = 2
#: Term life's outputs in the order of schema 1's checkpoint totals: net_cf first, then the four
#: cash flows in the declaration's order (schema 1 wrote the primary's sum before the others').
#: Schema 2 keeps the declaration's order (`TERM_LIFE_OUTPUTS`, net_cf last), the order a
#: resumed job folds in.
_V1_CHECKPOINT_ORDER: Final = ("net_cf", *TERM_LIFE_CASH_FLOWS)

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
    vectors BLOB NOT NULL,
    output_count INTEGER NOT NULL DEFAULT 1
)""",
    """
CREATE TABLE IF NOT EXISTS checkpoints (
    job_id TEXT PRIMARY KEY,
    dataset_version TEXT NOT NULL,
    dataset_rows INTEGER NOT NULL,
    chunk_blocks INTEGER NOT NULL,
    next_block INTEGER NOT NULL,
    steps INTEGER NOT NULL,
    total BLOB,
    output_count INTEGER NOT NULL DEFAULT 5
)""",
    # added to schema 2 as it stands (no migration): a store without it has no variant job to
    # resume, and a gateway from before it never resumes a variant job (it fails it ABORTED)
    """
CREATE TABLE IF NOT EXISTS job_passes (
    job_id TEXT NOT NULL,
    pass_index INTEGER NOT NULL,
    package_hash TEXT NOT NULL,
    steps INTEGER,
    total BLOB,
    output_count INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, pass_index)
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
        if version < 2:
            migrate_outputs(db)
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


def migrate_outputs(db: sqlite3.Connection) -> None:
    """Schema 1 → 2 (inside the caller's transaction): results and checkpoints keep every
    declared output. A result row's `pv_net_cf` blob becomes `vectors` with `output_count` 1
    (the primary's values alone: the store kept only net_cf's). A checkpoint gets
    `output_count` 5, and its total, term life's five sums with net_cf first, is put in the
    model's declared order (net_cf last), the order a resumed job folds in. Tables that do not
    exist yet are left to the schema's CREATE statements."""
    tables = {str(r[0]) for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    changed = False
    if "results" in tables:
        columns = {str(r[1]) for r in db.execute("PRAGMA table_info(results)")}
        if "pv_net_cf" in columns:
            db.execute("ALTER TABLE results RENAME COLUMN pv_net_cf TO vectors")
        if "output_count" not in columns:
            db.execute("ALTER TABLE results ADD COLUMN output_count INTEGER NOT NULL DEFAULT 1")
            changed = True
    if "checkpoints" in tables:
        columns = {str(r[1]) for r in db.execute("PRAGMA table_info(checkpoints)")}
        if "output_count" not in columns:
            db.execute("ALTER TABLE checkpoints ADD COLUMN output_count INTEGER NOT NULL DEFAULT 5")
            changed = True
            order = [_V1_CHECKPOINT_ORDER.index(name) for name in TERM_LIFE_OUTPUTS]
            rows = db.execute("SELECT job_id, total FROM checkpoints WHERE total IS NOT NULL").fetchall()
            for job_id, blob in rows:
                sums = np.frombuffer(blob, dtype="<f8")
                if sums.size % len(order):  # not five sums a scenario: its job cannot resume
                    db.execute("DELETE FROM checkpoints WHERE job_id = ?", (job_id,))
                    continue
                total = np.ascontiguousarray(sums.reshape(len(order), -1)[order], dtype="<f8")
                db.execute("UPDATE checkpoints SET total = ? WHERE job_id = ?", (total.tobytes(), job_id))
    if changed:
        log.info("job store migrated to schema 2 (results and checkpoints keep every declared output)")
