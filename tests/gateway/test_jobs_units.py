"""Fast tests of the gateway's job logic with fakes injected: planner, fold, event log, store,
statistics and result messages, dispatcher faults, and the job manager end to end."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import grpc
import numpy as np
import pytest

from livecalc.engine.v1 import engine_pb2
from livecalc.gateway.v1 import job_pb2
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound
from services.gateway.dispatcher import Dispatcher, JobCannotFinish
from services.gateway.engines import Engine, EngineTargets
from services.gateway.events import EventLog
from services.gateway.fold import JobFold
from services.gateway.jobs import JobManager
from services.gateway.planner import plan, ranges
from services.gateway.results import final_result, join_parts, split_result, statistics_message, with_parts
from services.gateway.store import JobStore, ResultKey
from services.valuation.blocks import BLOCK_SIZE, fold
from services.valuation.interface.declaration import Outputs
from services.valuation.statistics import result_hash
from tests.gateway.fakes import (
    HASH,
    OUTPUTS,
    PRIMARY,
    ROWS_3_BLOCKS,
    FakeEngineStub,
    FakeError,
    block_partial,
    declaring,
    fake_dispatcher,
    fake_engine,
    fake_manager,
    partial_table,
)

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]
S = job_pb2.JobState


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


_partial = block_partial


def test_fold_in_block_order_whatever_the_arrival_order_and_pieces() -> None:
    rows, n = ROWS_3_BLOCKS, 7
    table = partial_table(3, n)
    f = JobFold(rows, 3, n, outputs=5)
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


def test_fold_refuses_a_partial_of_another_output_count_or_length() -> None:
    rows, n = ROWS_3_BLOCKS, 4
    f = JobFold(rows, 3, n, outputs=3)
    with pytest.raises(Exception, match="a partial of 5 outputs, the package declares 3"):
        f.add(_partial(partial_table(3, n), 0, rows))
    bad = _partial(partial_table(3, n, outputs=3), 0, rows)
    del bad.values[-1]
    with pytest.raises(Exception, match="11 values of 3 outputs"):
        f.add(bad)


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
    store.put_result("j1", key, preview=False, mean=3.0, end_ns=1, values=np.array([[1.0, 2.0, 6.0], [0.0, 1.0, 2.0]]))
    store.put_result("j3", key, preview=True, mean=9.0, end_ns=2, values=np.array([[9.0]]))
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
    values = store.result_values("j1")
    assert values is not None and values.tolist() == [[1.0, 2.0, 6.0], [0.0, 1.0, 2.0]]
    with pytest.raises(InvalidArgument):
        store.list_jobs(1, "garbage")
    store.close()


# results


def test_statistics_message_and_result_parts() -> None:
    values = partial_table(1, 501)[0]
    msg = statistics_message(values, OUTPUTS)
    v = values[PRIMARY]
    assert msg.mean == np.mean(v) and msg.std == np.std(v, ddof=1) and msg.scenario_count == 501
    assert msg.percentiles[5].level == 50.0 and msg.percentiles[5].value == np.percentile(v, 50)
    assert msg.ctes[3].value == np.mean(np.sort(v)[: math.ceil(0.01 * 501)])
    assert [(m.name, m.mean) for m in msg.output_means] == [
        (name, np.mean(values[k])) for k, name in enumerate(OUTPUTS.names)
    ]
    result = final_result(
        values, OUTPUTS, policy_count=1, dataset_version="v1", package_hash=HASH, steps=1, elapsed_seconds=1.0
    )
    assert result.result_hash == result_hash(v)
    parts, slim = split_result(result, part_values=100)
    # every output's values in parts of at most 100, output by output, each in scenario order
    assert len(parts) == 5 * 6 and slim.outputs_in_parts and not any(o.values for o in slim.outputs)
    assert [p.output_index for p in parts] == [k for k in range(5) for _ in range(6)]
    assert join_parts(parts) == {k: values[k].tolist() for k in range(5)}
    assert with_parts(slim, parts) == result
    assert all(p.ByteSize() < 4 << 20 for p in parts)
    small_parts, same = split_result(result)
    assert small_parts == [] and same is result


# dispatcher


def _dispatcher(
    engines: list[Engine], rows: int, n: int, chunk_blocks: int, window: int = 4
) -> tuple[Dispatcher, JobFold]:
    return fake_dispatcher(
        engines, rows, n, slots=2, chunk_blocks=chunk_blocks, window=window, max_attempts=3, backoff_seconds=0.01
    )


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
    speeds = {e.speeds.of(d.shape) for e in engines}
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
    with pytest.raises(JobCannotFinish) as info:
        await asyncio.wait_for(d.run(), 10)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT and "row 2100" in info.value.message
    dead = FakeEngineStub(table, rows, fail=lambda r, b: FakeError(grpc.StatusCode.UNAVAILABLE, "down"))
    d, _ = _dispatcher([fake_engine("a", dead)], rows, n, 1)
    with pytest.raises(JobCannotFinish) as info:
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


async def _manager(tmp_path: Path, stub: FakeEngineStub, rows: int, archive: bytes | None = None) -> JobManager:
    engines = [fake_engine("a", stub)]
    return fake_manager(tmp_path, engines, rows, archive=archive, progress_seconds=0.01, statistics_seconds=0.02)


def _spec(count: int, **kw: object) -> job_pb2.JobSpec:
    fields: dict[str, object] = {"package_hash": HASH, "dataset_id": "pol", **kw}
    return job_pb2.JobSpec(scenarios=engine_pb2.ScenarioSpec(count=count, seed=1), **fields)  # type: ignore[arg-type]


async def test_manager_runs_a_job_with_running_statistics_and_a_large_result_in_parts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import services.gateway.job_runner as job_runner_module
    import services.gateway.results as results_module

    monkeypatch.setattr(job_runner_module, "split_result", lambda r: split_result(r, part_values=4))
    monkeypatch.setattr(results_module, "PART_VALUES", 4)
    rows, n = 6 * BLOCK_SIZE - 5, 10
    table = partial_table(6, n)
    manager = await _manager(tmp_path, FakeEngineStub(table, rows, delay=0.02, piece=3), rows)
    job_id = await manager.submit(_spec(n, chunk_blocks=1))
    events = [e async for e in manager.follow(job_id)]
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[0] == "accepted" and kinds[-1] == "result" and "statistics" in kinds
    assert kinds[-16:-1] == ["result_part"] * 15  # 5 outputs × 3 parts of at most 4 values
    result = events[-1].result
    assert result.outputs_in_parts and not any(o.values for o in result.outputs)
    total = fold(table)
    joined = join_parts([e.result_part for e in events if e.WhichOneof("event") == "result_part"])
    assert joined == {k: total[k].tolist() for k in range(5)}
    assert result.result_hash == result_hash(total[PRIMARY])
    assert [o.name for o in result.outputs] == list(OUTPUTS.names)
    assert [o.primary for o in result.outputs] == [k == PRIMARY for k in range(5)]
    stats = [e.statistics for e in events if e.WhichOneof("event") == "statistics"]
    first = stats[0]
    done_blocks = first.policies_done // BLOCK_SIZE
    scaled = fold(table[:done_blocks]) * (rows / first.policies_done)
    assert first.statistics.mean == pytest.approx(float(np.mean(scaled[PRIMARY])), rel=1e-12)
    assert [m.name for m in first.statistics.output_means] == list(OUTPUTS.names)
    assert first.statistics.output_means[0].mean == pytest.approx(float(np.mean(scaled[0])), rel=1e-12)
    job = manager.get(job_id)
    assert job.state == S.JOB_STATE_SUCCEEDED and job.result.outputs_in_parts
    assert not any(o.values for o in job.result.outputs)
    assert [e async for e in manager.follow(job_id, len(events) - 1)] == events[-1:]
    await manager.close()
    manager.store.close()


async def test_the_last_running_statistics_are_the_results_and_precede_the_last_progress(tmp_path: Path) -> None:
    """The last progress line a client shows carries the result's mean: exact statistics go out
    once the fold is complete, just before the progress event that reports it (never scaled
    from a partial fold, never left behind by the last block)."""
    rows, n = 5 * BLOCK_SIZE - 9, 8
    table = partial_table(5, n)
    manager = await _manager(tmp_path, FakeEngineStub(table, rows, delay=0.03), rows)
    job_id = await manager.submit(_spec(n, chunk_blocks=1))
    events = [e async for e in manager.follow(job_id)]
    result = events[-1].result
    kinds = [e.WhichOneof("event") for e in events]
    last_stats = max(i for i, k in enumerate(kinds) if k == "statistics")
    last_progress = max(i for i, k in enumerate(kinds) if k == "progress")
    assert last_stats == last_progress - 1  # the final statistics, then the 100 % progress
    final = events[last_stats].statistics
    assert final.policies_done == final.policies_total == rows == events[last_progress].progress.policies_done
    assert final.statistics.mean == result.statistics.mean == float(np.mean(fold(table)[PRIMARY]))
    assert final.statistics == result.statistics  # every figure, output means included
    await manager.close()
    manager.store.close()


async def test_a_previews_uncertainty_comes_from_its_sample_groups(tmp_path: Path) -> None:
    """A preview of 3,000 of 30,000 policies runs in 8 groups of 375 (the fake answers group g
    with its block g mod 3); its uncertainty is the random-group estimate from them."""
    from services.valuation.preview_error import preview_uncertainty

    rows, n, sample = 30_000, 12, 3000
    table = partial_table(3, n)
    stub = FakeEngineStub(table, rows, delay=0.03)
    manager = await _manager(tmp_path, stub, rows)
    job_id = await manager.submit(_spec(n, preview=job_pb2.PreviewSpec(sample_rows=sample, seed=4)))
    events = [e async for e in manager.follow(job_id)]
    assert stub.requests[0].sample.group_rows == 375
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds.count("progress") >= 3 and "statistics" not in kinds  # a preview's ± is its result's
    result = events[-1].result
    groups = np.stack([table[g % 3] for g in range(8)])
    scaled = fold(groups)[PRIMARY] * (rows / sample)
    assert list(primary_values(result)) == scaled.tolist()
    expected = preview_uncertainty(
        groups[:, PRIMARY].mean(axis=1),
        [375] * 8,
        population=rows,
        scenario_standard_error=float(np.std(scaled, ddof=1) / np.sqrt(n)),
        scenarios=n,
    )
    assert expected is not None
    u = result.preview_uncertainty
    assert (u.confidence_level, u.sample_groups, u.sampling_degrees_of_freedom) == (95.0, 8, 7.0)
    assert u.sampling_standard_error == pytest.approx(expected.sampling_standard_error, rel=1e-12)
    assert u.scenario_standard_error == pytest.approx(result.statistics.standard_error, rel=1e-12)
    assert u.half_width == pytest.approx(expected.half_width, rel=1e-12)
    assert u.sampling_half_width == pytest.approx(expected.sampling_half_width, rel=1e-12)
    assert u.standard_error == pytest.approx(math.hypot(u.sampling_standard_error, u.scenario_standard_error))
    await manager.close()
    manager.store.close()


def primary_values(result: job_pb2.JobResult) -> list[float]:
    return list(next(o for o in result.outputs if o.primary).values)


async def _ended(manager: JobManager, job_id: str) -> None:
    """Wait until the job has left the live set (its reads go to the store)."""
    for _ in range(500):
        if job_id not in manager._live:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"job {job_id} stayed live")


async def test_a_package_declaring_three_outputs_gets_three_output_results_with_the_primarys_hash(
    tmp_path: Path,
) -> None:
    outputs = Outputs(("reserve", "profit", "tax"), 1)
    rows, n = 3 * BLOCK_SIZE - 7, 6
    table = partial_table(3, n, outputs=3)
    manager = await _manager(tmp_path, FakeEngineStub(table, rows), rows, declaring(outputs))
    job_id = await manager.submit(_spec(n, chunk_blocks=1))
    events = [e async for e in manager.follow(job_id)]
    result = events[-1].result
    total = fold(table)
    assert [(o.name, o.primary) for o in result.outputs] == [("reserve", False), ("profit", True), ("tax", False)]
    assert result.result_hash == result_hash(total[1])
    assert result.statistics.mean == float(np.mean(total[1])) and result.statistics.scenario_count == n
    assert [(m.name, m.mean) for m in result.statistics.output_means] == [
        (name, float(np.mean(total[k]))) for k, name in enumerate(outputs.names)
    ]
    for k, output in enumerate(result.outputs):
        assert list(output.values) == total[k].tolist()
        s = output.statistics
        assert s.mean == float(np.mean(total[k])) and s.std == float(np.std(total[k], ddof=1))
        assert s.min == total[k].min() and s.percentiles[5].value == np.percentile(total[k], 50)
        assert not s.output_means
    primary_stats = job_pb2.Statistics()
    primary_stats.CopyFrom(result.statistics)
    del primary_stats.output_means[:]
    assert primary_stats == result.outputs[1].statistics
    # GetJob from the store: every output's values back (the record keeps none), ListJobs none
    await _ended(manager, job_id)
    stored = manager.get(job_id)
    assert stored.result == result
    record = manager.store.get_job(job_id)
    assert record is not None and not any(o.values for o in record.result.outputs)
    (listed,), _ = manager.list(10, "", 0)
    assert [o.name for o in listed.result.outputs] == list(outputs.names)
    assert not any(o.values for o in listed.result.outputs)

    # a preview scales every output by rows / sample size: its 8 groups of ≤ 13 policies folded
    preview = await manager.submit(_spec(n, preview=job_pb2.PreviewSpec(sample_rows=100, seed=1)))
    previewed = [e async for e in manager.follow(preview)][-1].result
    scaled = fold(np.stack([table[g % 3] for g in range(8)])) * (rows / 100)
    assert previewed.preview_uncertainty.sample_groups == 8
    assert previewed.preview and [list(o.values) for o in previewed.outputs] == scaled.tolist()
    assert previewed.result_hash == result_hash(scaled[1])
    assert previewed.preview_relative_difference == pytest.approx(
        (np.mean(scaled[1]) - np.mean(total[1])) / abs(np.mean(total[1])), rel=1e-12
    )
    await manager.close()
    manager.store.close()


async def test_a_large_result_of_three_outputs_comes_in_parts_and_reassembles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import services.gateway.job_runner as job_runner_module
    import services.gateway.results as results_module
    from services.client.aio import ResultAssembler

    monkeypatch.setattr(job_runner_module, "split_result", lambda r: split_result(r, part_values=5))
    monkeypatch.setattr(results_module, "PART_VALUES", 5)
    outputs = Outputs(("a", "b", "c"), 2)
    rows, n = 2 * BLOCK_SIZE, 12
    table = partial_table(2, n, outputs=3)
    manager = await _manager(tmp_path, FakeEngineStub(table, rows, piece=5), rows, declaring(outputs))
    job_id = await manager.submit(_spec(n, chunk_blocks=1))
    events = [e async for e in manager.follow(job_id)]
    parts = [e.result_part for e in events if e.WhichOneof("event") == "result_part"]
    assert [(p.output_index, p.first_scenario, len(p.values)) for p in parts] == [
        (k, s, min(5, n - s)) for k in range(3) for s in (0, 5, 10)
    ]
    assert all(p.scenario_count == n for p in parts)
    assert [e.WhichOneof("event") for e in events][-10:] == ["result_part"] * 9 + ["result"]
    total = fold(table)
    assembler = ResultAssembler()
    whole = next(r for e in events if (r := assembler.add(e)) is not None)
    assert not whole.outputs_in_parts and [list(o.values) for o in whole.outputs] == total.tolist()
    assert whole.result_hash == result_hash(total[2]) and whole == with_parts(events[-1].result, parts)
    # the record is too large to carry the values: GetJob leaves them to the parts
    await _ended(manager, job_id)
    job = manager.get(job_id)
    assert job.result.outputs_in_parts and not any(o.values for o in job.result.outputs)
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
    d, _ = fake_dispatcher([], BLOCK_SIZE, 1, slots=1, window=1, engine_scan_seconds=0.05, engine_wait_seconds=0.2)
    with pytest.raises(JobCannotFinish) as info:
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
