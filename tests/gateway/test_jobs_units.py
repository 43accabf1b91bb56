"""Fast tests of the gateway's job logic with fakes injected: planner, fold, event log, store,
statistics and result messages, dispatcher faults, and the job manager end to end."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import grpc
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from livecalc.engine.v1 import engine_pb2
from livecalc.gateway.v1 import job_pb2
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound
from services.gateway.dispatcher import DispatchConfig, Dispatcher, JobFailed
from services.gateway.engines import Engine, EngineTargets
from services.gateway.events import EventLog
from services.gateway.fold import COMPONENTS, JobFold
from services.gateway.jobs import JobManager
from services.gateway.live_job import JobConfig
from services.gateway.metrics import GatewayMetrics
from services.gateway.planner import plan, ranges
from services.gateway.results import join_parts, split_result, statistics_message
from services.gateway.store import JobStore, ResultKey
from services.valuation.blocks import BLOCK_SIZE, fold
from services.valuation.statistics import result_hash
from tests.gateway.fakes import (
    ROWS_3_BLOCKS,
    FakeDatasets,
    FakeEngineStub,
    FakeError,
    FakePackages,
    FakePool,
    fake_engine,
    partial_table,
)

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]
S = job_pb2.JobState
HASH = "ab" * 32


# planner


def test_plan_covers_every_block_once_in_order() -> None:
    p = plan(10 * BLOCK_SIZE + 1, slots=2, scenarios=100)
    assert p.blocks_total == 11 and len(p.chunks) >= 4
    covered = [b for c in p.chunks for b in range(c.first_block, c.end_block)]
    assert covered == list(range(11))
    fixed = plan(10 * BLOCK_SIZE, slots=8, scenarios=100, chunk_blocks=3)
    assert [(c.first_block, c.block_count) for c in fixed.chunks] == [(0, 3), (3, 3), (6, 3), (9, 1)]
    assert plan(BLOCK_SIZE, slots=4, scenarios=1).chunk_blocks == 1
    with pytest.raises(InvalidArgument):
        plan(0, slots=1, scenarios=1)


def test_ranges_groups_missing_blocks() -> None:
    assert ranges({7, 3, 4, 9, 5}) == [(3, 3), (7, 1), (9, 1)]


# fold


def _partial(table: np.ndarray, b: int, rows: int, first: int = 0, n: int | None = None) -> engine_pb2.BlockPartial:
    n = table.shape[2] if n is None else n
    start = b * BLOCK_SIZE
    return engine_pb2.BlockPartial(
        block_index=b,
        first_row=start,
        row_count=min(rows, start + BLOCK_SIZE) - start,
        first_scenario=first,
        **{name: table[b, i, first : first + n].tolist() for i, name in enumerate(COMPONENTS)},
    )


def test_fold_in_block_order_whatever_the_arrival_order_and_pieces() -> None:
    rows, n = ROWS_3_BLOCKS, 7
    table = partial_table(3, n)
    f = JobFold(rows, 3, n)
    assert f.add(_partial(table, 2, rows))
    assert f.folded_blocks == 0 and f.pending_blocks == 1 and f.estimate() is None
    assert not f.add(_partial(table, 0, rows, 0, 3))  # a block in scenario pieces
    assert f.add(_partial(table, 0, rows, 3, 4))
    assert f.folded_blocks == 1 and f.rows_done == BLOCK_SIZE
    est = f.estimate()
    assert est is not None and np.array_equal(est, table[0] * (rows / BLOCK_SIZE))
    f.add(_partial(table, 1, rows))
    assert f.complete and f.pending_blocks == 0
    assert f.total().tobytes() == fold(table).tobytes()
    with pytest.raises(Exception, match="twice"):
        f.add(_partial(table, 1, rows))


# event log


async def test_event_log_cursors_replay_and_follow_and_end_at_the_terminal_event() -> None:
    sunk: list[job_pb2.JobEvent] = []
    log = EventLog("j", sink=sunk.append)
    log.append(accepted=job_pb2.JobAccepted(blocks_total=2))
    seen: list[int] = []

    async def reader(after: int) -> list[int]:
        return [e.sequence async for e in log.follow(after)]

    task_all = asyncio.create_task(reader(0))
    task_mid = asyncio.create_task(reader(2))
    await asyncio.sleep(0)
    for i in range(1, 4):
        log.append(progress=job_pb2.JobProgress(blocks_done=i))
    log.append(result=job_pb2.JobResult(result_hash="h"))
    seen = await asyncio.wait_for(task_all, 5)
    assert seen == [1, 2, 3, 4, 5]
    assert await asyncio.wait_for(task_mid, 5) == [3, 4, 5]
    assert [e.sequence for e in sunk] == [1, 2, 3, 4, 5] and log.closed
    with pytest.raises(FailedPrecondition):
        log.append(progress=job_pb2.JobProgress())
    # a subscriber that never reads does not hold anything up: appends never wait
    assert [e.sequence async for e in log.follow(4)] == [5]


# store


def _job(job_id: str, ns: int, state: int) -> job_pb2.Job:
    job = job_pb2.Job(job_id=job_id, state=state)  # type: ignore[arg-type]
    job.create_time.FromNanoseconds(ns)
    return job


def test_store_survives_reopen_and_pages_newest_first(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    store = JobStore(path)
    for i in range(5):
        store.put_job(_job(f"j{i}", 1000 + i, S.JOB_STATE_SUCCEEDED if i % 2 else S.JOB_STATE_FAILED), f"k{i}")
        store.append_event(job_pb2.JobEvent(job_id=f"j{i}", sequence=1))
    key = ResultKey(HASH, "v1", "5:1:0.1:0.02:1")
    store.put_result("j1", key, preview=False, mean=3.0, end_ns=1, pv_net_cf=np.array([1.0, 2.0, 6.0]))
    store.put_result("j3", key, preview=True, mean=9.0, end_ns=2, pv_net_cf=np.array([9.0]))
    store.close()
    store = JobStore(path)
    page, token = store.list_jobs(2, "")
    assert [j.job_id for j in page] == ["j4", "j3"]
    page, token = store.list_jobs(2, token)
    assert [j.job_id for j in page] == ["j2", "j1"]
    page, token = store.list_jobs(2, token)
    assert [j.job_id for j in page] == ["j0"] and token == ""
    assert [j.job_id for j in store.list_jobs(0, "", S.JOB_STATE_SUCCEEDED)[0]] == ["j3", "j1"]
    assert store.job_by_key("k2") == "j2" and store.job_by_key("nope") is None
    assert store.events("j2")[0].sequence == 1
    assert store.latest_full_mean(key) == ("j1", 3.0)
    vector = store.result_vector("j1")
    assert vector is not None and vector.tolist() == [1.0, 2.0, 6.0]
    with pytest.raises(InvalidArgument):
        store.list_jobs(1, "garbage")
    store.close()


# results


def test_statistics_message_and_result_parts() -> None:
    pvs = partial_table(1, 501)[0]
    msg = statistics_message(pvs)
    v = pvs[0]
    assert msg.mean == np.mean(v) and msg.std == np.std(v, ddof=1) and msg.scenario_count == 501
    assert msg.percentiles[5].level == 50.0 and msg.percentiles[5].value == np.percentile(v, 50)
    assert msg.ctes[3].value == np.mean(np.sort(v)[: math.ceil(0.01 * 501)])
    assert msg.mean_pv_claims == np.mean(pvs[2])
    result = job_pb2.JobResult(pv_net_cf=v.tolist(), result_hash=result_hash(v))
    parts, slim = split_result(result, part_values=100)
    assert len(parts) == 6 and slim.pv_net_cf_in_parts and not slim.pv_net_cf
    assert join_parts(parts) == v.tolist()
    assert all(p.ByteSize() < 4 << 20 for p in parts)
    small_parts, same = split_result(result)
    assert small_parts == [] and same is result


# dispatcher


def _dispatcher(
    engines: list[Engine], rows: int, n: int, chunk_blocks: int, **kw: object
) -> tuple[Dispatcher, JobFold]:
    p = plan(rows, slots=2, scenarios=n, chunk_blocks=chunk_blocks)
    f = JobFold(rows, p.blocks_total, n)
    from livecalc.engine.v1 import engine_service_pb2

    d = Dispatcher(
        FakePool(engines),  # type: ignore[arg-type]
        engine_service_pb2.RunChunkRequest(job_id="j"),
        p,
        f,
        config=DispatchConfig(max_attempts=3, backoff_seconds=0.01),
        metrics=GatewayMetrics.create(CollectorRegistry()),
        window_blocks=int(kw.get("window", 4)),  # type: ignore[call-overload]
    )
    return d, f


async def test_dispatch_retries_only_the_missing_blocks_elsewhere() -> None:
    rows, n = 6 * BLOCK_SIZE, 5
    table = partial_table(6, n)
    failed_once: set[int] = set()

    def flaky(request: object, block: int) -> FakeError | None:
        if block == 4 and 4 not in failed_once:
            failed_once.add(4)
            return FakeError(grpc.StatusCode.UNAVAILABLE, "engine gone")
        return None

    bad = FakeEngineStub(table, rows, fail=flaky)
    other = FakeEngineStub(table, rows, fail=flaky)  # whichever computes block 4 first fails once
    engines = [fake_engine("a", bad), fake_engine("b", other)]
    d, f = _dispatcher(engines, rows, n, 3)
    await asyncio.wait_for(d.run(), 10)
    assert f.total().tobytes() == fold(table).tobytes()
    # each finished chunk's summary measured its engine's slot: 10 steps a block in 0.5 s a block
    speeds = {e.slot_steps_per_second for e in engines}
    assert speeds <= {0.0, 20.0} and 20.0 in speeds
    sent = sorted((r.blocks.first_block, r.blocks.block_count) for s in (bad, other) for r in s.requests)
    assert sent == [(0, 3), (3, 3), (4, 2)]  # block 3 had arrived: only 4 and 5 went out again
    assert d.steps > 0


async def test_dispatch_fails_at_once_on_invalid_argument_and_bounds_retries() -> None:
    rows, n = 4 * BLOCK_SIZE, 3
    table = partial_table(4, n)
    bad_row = FakeEngineStub(
        table,
        rows,
        fail=lambda r, b: FakeError(grpc.StatusCode.INVALID_ARGUMENT, "row 2100: age_at_entry") if b == 2 else None,
    )
    d, _ = _dispatcher([fake_engine("a", bad_row)], rows, n, 1)
    with pytest.raises(JobFailed) as info:
        await asyncio.wait_for(d.run(), 10)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT and "row 2100" in info.value.message
    dead = FakeEngineStub(table, rows, fail=lambda r, b: FakeError(grpc.StatusCode.UNAVAILABLE, "down"))
    d, _ = _dispatcher([fake_engine("a", dead)], rows, n, 1)
    with pytest.raises(JobFailed) as info:
        await asyncio.wait_for(d.run(), 10)
    assert info.value.code == grpc.StatusCode.UNAVAILABLE and "3 times" in info.value.message


async def test_dispatch_keeps_to_slots_and_the_window() -> None:
    rows, n = 20 * BLOCK_SIZE, 2
    table = partial_table(20, n)
    stub = FakeEngineStub(table, rows, delay=0.001)
    d, f = _dispatcher([fake_engine("a", stub, slots=2)], rows, n, 1, window=3)
    await asyncio.wait_for(d.run(), 10)
    assert stub.max_in_flight <= 2 and f.complete
    firsts = [r.blocks.first_block for r in stub.requests]
    assert firsts == sorted(firsts)  # block order


# job manager


async def _manager(tmp_path: Path, stub: FakeEngineStub, rows: int) -> JobManager:
    return JobManager(
        JobStore(tmp_path / "jobs.sqlite3"),
        FakePool([fake_engine("a", stub)]),  # type: ignore[arg-type]
        FakePackages(HASH),  # type: ignore[arg-type]
        datasets=FakeDatasets(rows),
        metrics=GatewayMetrics.create(CollectorRegistry()),
        config=JobConfig(package_address="gw", progress_seconds=0.01, statistics_seconds=0.02),
    )


def _spec(count: int, **kw: object) -> job_pb2.JobSpec:
    fields: dict[str, object] = {"package_hash": HASH, "dataset_id": "pol", **kw}
    return job_pb2.JobSpec(scenarios=engine_pb2.ScenarioSpec(count=count, seed=1), **fields)  # type: ignore[arg-type]


async def test_manager_runs_a_job_with_running_statistics_and_a_large_result_in_parts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import services.gateway.jobs as jobs_module

    monkeypatch.setattr(jobs_module, "split_result", lambda r: split_result(r, part_values=4))
    monkeypatch.setattr(jobs_module, "PART_VALUES", 4)
    rows, n = 6 * BLOCK_SIZE - 5, 10
    table = partial_table(6, n)
    manager = await _manager(tmp_path, FakeEngineStub(table, rows, delay=0.02, piece=3), rows)
    job_id = await manager.submit(_spec(n, chunk_blocks=1))
    events = [e async for e in manager.follow(job_id)]
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[0] == "accepted" and kinds[-1] == "result" and "statistics" in kinds
    assert kinds[-4:-1] == ["result_part"] * 3
    result = events[-1].result
    assert result.pv_net_cf_in_parts and not result.pv_net_cf
    vector = join_parts([e.result_part for e in events if e.WhichOneof("event") == "result_part"])
    assert vector == fold(table)[0].tolist() and result.result_hash == result_hash(fold(table)[0])
    stats = [e.statistics for e in events if e.WhichOneof("event") == "statistics"]
    first = stats[0]
    done_blocks = first.policies_done // BLOCK_SIZE
    scaled = fold(table[:done_blocks])[0] * (rows / first.policies_done)
    assert first.statistics.mean == pytest.approx(float(np.mean(scaled)), rel=1e-12)
    job = manager.get(job_id)
    assert job.state == S.JOB_STATE_SUCCEEDED and job.result.pv_net_cf_in_parts
    assert [e async for e in manager.follow(job_id, len(events) - 1)] == events[-1:]
    await manager.close()
    manager.store.close()


async def test_manager_validation_and_cancel(tmp_path: Path) -> None:
    rows, n = 3 * BLOCK_SIZE, 2
    manager = await _manager(tmp_path, FakeEngineStub(partial_table(3, n), rows, delay=5), rows)
    with pytest.raises(NotFound):
        await manager.submit(job_pb2.JobSpec(package_hash="cd" * 32, dataset_id="pol"))
    with pytest.raises(NotFound):
        await manager.submit(_spec(2, dataset_id="other"))
    with pytest.raises(InvalidArgument) as info:
        await manager.submit(_spec(0))
    assert "spec.scenarios.count" in info.value.details()
    with pytest.raises(InvalidArgument) as info:
        await manager.submit(_spec(2, preview=job_pb2.PreviewSpec(sample_rows=rows + 1)))
    assert "spec.preview.sample_rows" in info.value.details()
    job_id = await manager.submit(_spec(2), idempotency_key="k")
    assert await manager.submit(_spec(2), idempotency_key="k") == job_id
    await asyncio.sleep(0.05)
    job = await asyncio.wait_for(manager.cancel(job_id, "enough"), 5)
    assert job.state == S.JOB_STATE_CANCELLED
    events = [e async for e in manager.follow(job_id)]
    assert events[-1].cancelled.reason == "enough"
    assert sum(e.WhichOneof("event") in ("result", "error", "cancelled") for e in events) == 1
    await manager.close()
    manager.store.close()


def test_engine_targets_parse() -> None:
    assert EngineTargets.parse("a:1, b:2").addresses == ("a:1", "b:2")
    dns = EngineTargets.parse("dns:///engine.ns.svc:50052")
    assert (dns.dns_name, dns.dns_port) == ("engine.ns.svc", 50052)
    for bad in ("", "dns:///noport", "host"):
        with pytest.raises(InvalidArgument):
            EngineTargets.parse(bad)


async def test_dispatch_without_engines_fails_unavailable_in_bounded_time() -> None:
    from livecalc.engine.v1 import engine_service_pb2

    p = plan(BLOCK_SIZE, slots=1, scenarios=1)
    d = Dispatcher(
        FakePool([]),  # type: ignore[arg-type]
        engine_service_pb2.RunChunkRequest(job_id="j"),
        p,
        JobFold(BLOCK_SIZE, 1, 1),
        config=DispatchConfig(engine_scan_seconds=0.05, engine_wait_seconds=0.2),
        metrics=GatewayMetrics.create(CollectorRegistry()),
        window_blocks=1,
    )
    with pytest.raises(JobFailed) as info:
        await asyncio.wait_for(d.run(), 5)
    assert info.value.code == grpc.StatusCode.UNAVAILABLE and "no engine" in info.value.message


def test_a_job_without_a_result_is_stored_and_listed_without_one(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite3")
    store.put_job(job_pb2.Job(job_id="j", state=S.JOB_STATE_RUNNING))
    store.flush()
    stored = store.get_job("j")
    assert stored is not None and not stored.HasField("result")
    (listed,), _ = store.list_jobs(10, "", 0)
    assert not listed.HasField("result")
    store.close()
