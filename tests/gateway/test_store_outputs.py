"""A job store written before results carried declared outputs (schema 1, term life's five PVs
in named fields) still loads: records and events read in the current shape, result values and
checkpoints migrated, and a job left running resumes from its old checkpoint to the bits of an
uninterrupted run.

Schema 1 kept a result's pv_net_cf alone (results.pv_net_cf), a checkpoint's five sums with
net_cf first, and messages whose fields are reserved now: JobResult.pv_net_cf (2),
JobResultPart.pv_net_cf (2), Statistics.mean_pv_premiums..mean_pv_commissions (9–12). The
helpers below write those fields' bytes by hand.
"""

from __future__ import annotations

import sqlite3
import struct
from pathlib import Path

import numpy as np
import pytest

from livecalc.engine.v1 import engine_pb2
from livecalc.gateway.v1 import job_pb2
from services.gateway.jobs import JobManager
from services.gateway.store import JobStore
from services.gateway.store_file import SCHEMA_VERSION
from services.valuation.blocks import BLOCK_SIZE, fold
from services.valuation.statistics import result_hash
from tests.gateway.fakes import HASH, OUTPUTS, PRIMARY, FakeEngineStub, fake_engine, fake_manager, partial_table

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]
S = job_pb2.JobState

SCHEMA_1 = """
CREATE TABLE jobs (job_id TEXT PRIMARY KEY, create_ns INTEGER NOT NULL, state INTEGER NOT NULL,
    tenant TEXT NOT NULL DEFAULT '', idempotency_key TEXT, record BLOB NOT NULL, request BLOB,
    UNIQUE (tenant, idempotency_key));
CREATE INDEX jobs_by_time ON jobs (create_ns DESC, job_id DESC);
CREATE TABLE events (job_id TEXT NOT NULL, sequence INTEGER NOT NULL, event BLOB NOT NULL,
    PRIMARY KEY (job_id, sequence));
CREATE TABLE results (job_id TEXT PRIMARY KEY, package_hash TEXT NOT NULL, dataset_version TEXT NOT NULL,
    scenarios_key TEXT NOT NULL, preview INTEGER NOT NULL, mean REAL NOT NULL, end_ns INTEGER NOT NULL,
    pv_net_cf BLOB NOT NULL);
CREATE TABLE checkpoints (job_id TEXT PRIMARY KEY, dataset_version TEXT NOT NULL, dataset_rows INTEGER NOT NULL,
    chunk_blocks INTEGER NOT NULL, next_block INTEGER NOT NULL, steps INTEGER NOT NULL, total BLOB);
CREATE INDEX full_runs ON results (package_hash, dataset_version, scenarios_key, preview, end_ns);
CREATE TABLE probe (id INTEGER PRIMARY KEY, ns INTEGER NOT NULL);
PRAGMA user_version = 1;
"""
#: Schema 1's checkpoint order of term life's sums.
V1_ORDER = ("net_cf", "premiums", "claims", "expenses", "commissions")
MEANS = {"premiums": 10.0, "claims": 6.0, "commissions": 1.5}  # expenses 0: proto3 wrote nothing


def _varint(n: int) -> bytes:
    out = b""
    while True:
        low, n = n & 0x7F, n >> 7
        if not n:
            return out + bytes([low])
        out += bytes([low | 0x80])


def _field(number: int, data: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _double(number: int, value: float) -> bytes:
    return _varint(number << 3 | 1) + struct.pack("<d", value)


def legacy_statistics(values: np.ndarray) -> bytes:
    """Schema 1's Statistics of net_cf with the other outputs' means (fields 9–12)."""
    stats = job_pb2.Statistics(scenario_count=values.size, mean=float(values.mean()), min=float(values.min()))
    means = [_double(9 + i, MEANS[name]) for i, name in enumerate(V1_ORDER[1:]) if name in MEANS]
    return stats.SerializeToString() + b"".join(means)


def legacy_result(values: np.ndarray, *, with_vector: bool, in_parts: bool = False) -> bytes:
    result = job_pb2.JobResult(result_hash=result_hash(values), policy_count=7, outputs_in_parts=in_parts)
    vector = _field(2, np.asarray(values, dtype="<f8").tobytes()) if with_vector else b""
    return result.SerializeToString() + _field(1, legacy_statistics(values)) + vector


def legacy_job(job_id: str, values: np.ndarray) -> bytes:
    job = job_pb2.Job(job_id=job_id, state=S.JOB_STATE_SUCCEEDED)
    job.spec.CopyFrom(_spec(values.size))
    return job.SerializeToString() + _field(8, legacy_result(values, with_vector=False))


def legacy_event(job_id: str, sequence: int, kind: int, body: bytes) -> bytes:
    return job_pb2.JobEvent(job_id=job_id, sequence=sequence).SerializeToString() + _field(kind, body)


def _spec(count: int) -> job_pb2.JobSpec:
    return job_pb2.JobSpec(
        package_hash=HASH,
        dataset_id="pol",
        scenarios=engine_pb2.ScenarioSpec(count=count, seed=1, mean_reversion=0.1, volatility=0.01, include_base=True),
    )


def schema_1_store(path: Path, rows: list[tuple[str, tuple[object, ...]]]) -> None:
    with sqlite3.connect(path) as db:
        db.executescript(SCHEMA_1)
        for sql, row in rows:
            db.execute(sql, row)
    db.close()


def _manager(tmp_path: Path, stub: FakeEngineStub, rows: int) -> JobManager:
    return fake_manager(tmp_path, [fake_engine("a", stub)], rows, progress_seconds=0.01, statistics_seconds=0.02)


def test_a_schema_1_store_reads_results_as_term_lifes_five_outputs(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    net = np.array([3.0, -1.0, 4.5])
    parts = [job_pb2.JobResultPart(first_scenario=s, scenario_count=3).SerializeToString() for s in (0, 2)]
    schema_1_store(
        path,
        [
            (
                "INSERT INTO jobs (job_id, create_ns, state, record) VALUES (?, 1, 3, ?)",
                ("old", legacy_job("old", net)),
            ),
            (
                "INSERT INTO results VALUES ('old', ?, 'v1', 'k', 0, ?, 5, ?)",
                (HASH, float(net.mean()), np.asarray(net, dtype="<f8").tobytes()),
            ),
            (
                "INSERT INTO events VALUES ('old', 1, ?)",
                (legacy_event("old", 1, 6, _field(3, legacy_statistics(net))),),
            ),
            (
                "INSERT INTO events VALUES ('old', 2, ?)",
                (legacy_event("old", 2, 7, legacy_result(net, with_vector=True)),),
            ),
            # a large result's parts: net_cf's values alone, then the slim result
            (
                "INSERT INTO events VALUES ('big', 1, ?)",
                (legacy_event("big", 1, 10, parts[0] + _field(2, net[:2].tobytes())),),
            ),
            (
                "INSERT INTO events VALUES ('big', 2, ?)",
                (legacy_event("big", 2, 10, parts[1] + _field(2, net[2:].tobytes())),),
            ),
        ],
    )
    store = JobStore(path)
    assert store._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    job = store.get_job("old")
    assert job is not None
    result = job.result
    assert [(o.name, o.primary) for o in result.outputs] == [(n, n == "net_cf") for n in OUTPUTS.names]
    assert [(m.name, m.mean) for m in result.statistics.output_means] == [
        ("premiums", 10.0),
        ("claims", 6.0),
        ("expenses", 0.0),
        ("commissions", 1.5),
        ("net_cf", net.mean()),
    ]
    net_cf = result.outputs[PRIMARY]
    assert net_cf.statistics.mean == net.mean() and net_cf.statistics.min == -1.0 and not net_cf.values
    assert result.outputs[0].statistics == job_pb2.Statistics(scenario_count=3, mean=10.0)
    values = store.result_values("old")
    assert values is not None and values.tolist() == [net.tolist()]  # the primary's alone
    stats, final = store.events("old")
    assert [m.name for m in stats.statistics.statistics.output_means] == list(OUTPUTS.names)
    assert list(final.result.outputs[PRIMARY].values) == net.tolist() and final.result.result_hash == result_hash(net)
    assert [(p.result_part.output_index, list(p.result_part.values)) for p in store.events("big")] == [
        (PRIMARY, net[:2].tolist()),
        (PRIMARY, net[2:].tolist()),
    ]
    # written again, the record is in the current shape (no old fields left behind)
    store.put_job(job).result(10)
    raw = store._db.execute("SELECT record FROM jobs WHERE job_id = 'old'").fetchone()[0]
    assert job_pb2.Job.FromString(raw) == job
    store.close()
    JobStore(path).close()  # opening a migrated store again changes nothing


async def test_get_job_of_a_schema_1_result_fills_the_primarys_values(tmp_path: Path) -> None:
    net = np.array([3.0, -1.0, 4.5])
    schema_1_store(
        tmp_path / "jobs.sqlite3",
        [
            (
                "INSERT INTO jobs (job_id, create_ns, state, record) VALUES (?, 1, 3, ?)",
                ("old", legacy_job("old", net)),
            ),
            ("INSERT INTO results VALUES ('old', ?, 'v1', 'k', 0, 1.0, 5, ?)", (HASH, net.astype("<f8").tobytes())),
        ],
    )
    m = _manager(tmp_path, FakeEngineStub(partial_table(1, 3), BLOCK_SIZE), BLOCK_SIZE)
    job = m.get("old")
    assert list(job.result.outputs[PRIMARY].values) == net.tolist()
    assert not any(o.values for k, o in enumerate(job.result.outputs) if k != PRIMARY)
    await m.close()
    m.store.close()


async def test_a_job_left_running_by_a_schema_1_gateway_resumes_from_its_checkpoint_to_the_same_bits(
    tmp_path: Path,
) -> None:
    blocks, n, done = 6, 4, 2
    rows = blocks * BLOCK_SIZE - 9
    table = partial_table(blocks, n, seed=7)  # the declared order: net_cf last
    old_order = [OUTPUTS.names.index(name) for name in V1_ORDER]
    total = np.ascontiguousarray(fold(table[:done])[old_order], dtype="<f8")  # as schema 1 kept it: net_cf first
    job = job_pb2.Job(job_id="run", state=S.JOB_STATE_RUNNING, spec=_spec(n))
    job.spec.chunk_blocks = 1
    schema_1_store(
        tmp_path / "jobs.sqlite3",
        [
            ("INSERT INTO jobs (job_id, create_ns, state, record) VALUES ('run', 1, 2, ?)", (job.SerializeToString(),)),
            ("INSERT INTO checkpoints VALUES ('run', 'v1', ?, 1, ?, 0, ?)", (rows, done, total.tobytes())),
        ],
    )
    stub = FakeEngineStub(table, rows)
    m = _manager(tmp_path, stub, rows)
    checkpoint = m.store.checkpoint("run")
    assert checkpoint is not None and checkpoint.total is not None
    assert checkpoint.total.tobytes() == fold(table[:done]).tobytes()  # migrated to the declared order
    assert m.recover() == 1
    events = [e async for e in m.follow("run")]
    result = events[-1].result
    expected = fold(table)
    assert result.result_hash == result_hash(expected[PRIMARY])
    assert [list(o.values) for o in result.outputs] == expected.tolist()
    assert min(r.blocks.first_block for r in stub.requests) == done  # only the blocks after the checkpoint
    await m.close()
    m.store.close()
