"""The job store's writer thread: writes leave the event loop, commit in order and in batches,
transactions stay whole, and an event reaches its subscribers only once it is persisted."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from livecalc.engine.v1 import engine_pb2
from livecalc.gateway.v1 import job_pb2
from services.gateway.events import EventLog
from services.gateway.store import Checkpoint, JobStore
from services.gateway.store_writer import StoreClosed, StoreWriter, _Write
from services.valuation.blocks import BLOCK_SIZE
from tests.gateway.fakes import HASH, FakeEngineStub, fake_engine, fake_manager, partial_table
from tests.waits import async_wait_for

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


def held(store: JobStore) -> threading.Event:
    """Hold the writer (as a slow fsync would) until the returned event is set."""
    started, release = threading.Event(), threading.Event()

    def hold(db: sqlite3.Connection) -> None:
        started.set()
        release.wait(10)

    store._writer.submit([_Write(hold, Future())])
    assert started.wait(10)
    return release


def event(job_id: str, sequence: int) -> job_pb2.JobEvent:
    return job_pb2.JobEvent(job_id=job_id, sequence=sequence, progress=job_pb2.JobProgress(blocks_done=sequence))


def count_batches(store: JobStore, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    sizes: list[int] = []
    commit = StoreWriter._commit

    def counted(db: sqlite3.Connection, batch: list[Any]) -> None:
        sizes.append(len(batch))
        commit(db, batch)

    monkeypatch.setattr(store._writer, "_commit", counted)
    return sizes


def test_writes_commit_in_order_in_one_batch_and_reads_see_committed_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = JobStore(tmp_path / "jobs.sqlite3")
    sizes = count_batches(store, monkeypatch)
    release = held(store)
    futures = [store.append_event(event("j", i)) for i in range(1, 201)]
    assert store.events("j") == [] and not any(f.done() for f in futures)  # queued, not committed
    release.set()
    store.flush()
    assert all(f.done() and f.exception() is None for f in futures)
    assert [e.sequence for e in store.events("j")] == list(range(1, 201))
    assert sizes == [1, 201], sizes  # the held write, then all the queued ones (and flush's) in one transaction
    store.close()
    with pytest.raises(StoreClosed):
        store.append_event(event("j", 201))


def test_a_transaction_commits_whole_or_not_at_all_and_a_failed_one_spares_its_batch(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite3")
    store.append_event(event("j", 1))
    release = held(store)
    total = np.arange(10.0).reshape(5, 2)
    with store.transaction():
        bad_cp = store.put_checkpoint(Checkpoint("j", "v1", 10, 1, 3, 30, total))
        duplicate = store.append_event(event("j", 1))  # the same sequence again: the unit fails
    good = store.append_event(event("j", 2))
    with pytest.raises(ZeroDivisionError), store.transaction():
        store.drop_checkpoint("j")
        raise ZeroDivisionError
    release.set()
    with pytest.raises(sqlite3.IntegrityError):
        duplicate.result(10)
    with pytest.raises(sqlite3.IntegrityError):
        bad_cp.result(10)
    assert good.result(10) is None
    assert store.checkpoint("j") is None  # rolled back with the duplicate event
    assert [e.sequence for e in store.events("j")] == [1, 2]
    with store.transaction():
        store.put_checkpoint(Checkpoint("j", "v1", 10, 1, 3, 30, total))
        store.append_event(event("j", 3))
    store.close()  # commits what is queued
    reopened = JobStore(tmp_path / "jobs.sqlite3")
    cp = reopened.checkpoint("j")
    assert cp is not None and cp.next_block == 3 and cp.total is not None and cp.total.tobytes() == total.tobytes()
    assert [e.sequence for e in reopened.events("j")] == [1, 2, 3]
    reopened.close()


def test_queued_checkpoints_of_a_job_leave_the_newest(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite3")
    release = held(store)
    total = np.ones((5, 2))
    for block in range(1, 6):
        with store.transaction():
            store.put_checkpoint(Checkpoint("a", "v1", 10, 1, block, block, total * block))
            store.append_event(event("a", block))
        store.put_checkpoint(Checkpoint("b", "v1", 10, 1, block, block, total))
    store.drop_checkpoint("b")
    release.set()
    store.flush()
    a = store.checkpoint("a")
    assert a is not None and a.next_block == 5 and a.total is not None and a.total.tobytes() == (total * 5).tobytes()
    assert store.checkpoint("b") is None and [e.sequence for e in store.events("a")] == [1, 2, 3, 4, 5]
    store.close()


async def test_a_stalled_write_does_not_stall_the_loop_and_events_stream_once_persisted(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite3")
    log = EventLog("j", sink=store.append_event)
    seen: list[tuple[int, bool]] = []

    async def follow() -> None:
        async for e in log.follow(0):
            seen.append((e.sequence, e.sequence in {s.sequence for s in store.events("j")}))

    follower = asyncio.create_task(follow())
    log.append(accepted=job_pb2.JobAccepted())
    await async_wait_for(lambda: seen == [(1, True)], "the accepted event streamed once persisted")
    release = held(store)
    for i in range(500):  # reached with the writer held: appending does not wait for the store
        log.append(progress=job_pb2.JobProgress(blocks_done=i))
    ticked = asyncio.Event()
    asyncio.get_running_loop().call_soon(ticked.set)
    await asyncio.wait_for(ticked.wait(), 10)  # the loop runs on while the writer is held
    await asyncio.sleep(0.05)  # a chance for an event that is not persisted to stream (none may)
    assert not release.is_set() and seen == [(1, True)]
    release.set()
    log.append(result=job_pb2.JobResult(result_hash="h"))
    await asyncio.wait_for(follower, 10)
    assert [s for s, _ in seen] == list(range(1, 503)) and all(persisted for _, persisted in seen)
    store.close()


def test_an_in_memory_store_reads_what_it_wrote() -> None:
    store = JobStore(":memory:")
    job = job_pb2.Job(job_id="j", state=job_pb2.JobState.JOB_STATE_RUNNING)
    store.put_job(job, "key", "t1")
    job.state = job_pb2.JobState.JOB_STATE_SUCCEEDED  # a snapshot was queued, not the message
    store.flush()
    recorded = store.get_job("j")
    assert recorded is not None and recorded.state == job_pb2.JobState.JOB_STATE_RUNNING
    assert store.job_by_key("key", "t1") == "j" and store.job_by_key("key") is None and store.tenant_of("j") == "t1"
    store.close()


async def test_submit_answers_once_the_job_is_recorded_and_a_key_in_flight_answers_its_job(tmp_path: Path) -> None:
    rows, n = 2 * BLOCK_SIZE, 2
    store = JobStore(tmp_path / "jobs.sqlite3")
    engines = [fake_engine("a", FakeEngineStub(partial_table(2, n), rows, delay=0.01))]
    manager = fake_manager(tmp_path, engines, rows, store=store, progress_seconds=0.01)
    spec = job_pb2.JobSpec(package_hash=HASH, dataset_id="pol", scenarios=engine_pb2.ScenarioSpec(count=n, seed=1))
    release = held(store)
    first = asyncio.create_task(manager.submit(spec, idempotency_key="k"))
    await asyncio.sleep(0.05)
    assert not first.done()  # waits for its record
    assert await asyncio.wait_for(manager.submit(spec, idempotency_key="k"), 5) == manager._same_job("", "k", spec)
    release.set()
    job_id = await asyncio.wait_for(first, 5)
    assert store.get_job(job_id) is not None and manager.get(job_id).job_id == job_id
    events = [e async for e in manager.follow(job_id)]
    assert events[-1].WhichOneof("event") == "result"
    await asyncio.sleep(0.05)
    assert job_id not in manager._live  # ended: read from the store, which has all of it
    assert store.events(job_id) == events and manager.get(job_id).state == job_pb2.JobState.JOB_STATE_SUCCEEDED
    await manager.close()
    store.close()
