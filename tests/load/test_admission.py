"""Admission control and the event-loop lag monitor, with fakes injected (fast)."""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from livecalc.engine.v1 import engine_pb2
from livecalc.gateway.v1 import job_pb2
from services.common.errors import InvalidArgument, ResourceExhausted
from services.gateway.config import DEFAULT_MAX_PENDING_JOBS
from services.gateway.jobs import JobManager
from services.gateway.loop_lag import LoopLagMonitor
from services.gateway.server import resolve_jobs_config
from services.valuation.blocks import BLOCK_SIZE
from tests.gateway.fakes import HASH, FakeEngineStub, fake_engine, fake_manager, partial_table
from tests.waits import async_wait_for

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]
S = job_pb2.JobState


def _manager(tmp_path: Path, limit: int, delay: float) -> JobManager:
    rows, n = 3 * BLOCK_SIZE, 2
    engines = [fake_engine("a", FakeEngineStub(partial_table(3, n), rows, delay=delay))]
    return fake_manager(tmp_path, engines, rows, max_pending_jobs=limit)


def _spec() -> job_pb2.JobSpec:
    return job_pb2.JobSpec(package_hash=HASH, dataset_id="pol", scenarios=engine_pb2.ScenarioSpec(count=2, seed=1))


async def test_beyond_the_limit_submit_is_resource_exhausted_naming_the_limit(tmp_path: Path) -> None:
    manager = _manager(tmp_path, limit=3, delay=5)
    jobs = [await manager.submit(_spec(), idempotency_key=f"k{i}") for i in range(3)]
    with pytest.raises(ResourceExhausted) as info:
        await manager.submit(_spec())
    message = info.value.details()
    assert "--max-pending-jobs" in message and "LIVECALC_MAX_PENDING_JOBS = 3" in message, message
    # A known idempotency key answers its job even when the gateway is full.
    assert await manager.submit(_spec(), idempotency_key="k1") == jobs[1]
    # Concurrent submissions beyond it are refused too.
    results = await asyncio.gather(*(manager.submit(_spec()) for _ in range(5)), return_exceptions=True)
    assert all(isinstance(r, ResourceExhausted) for r in results)
    # When one ends, there is room again.
    await asyncio.wait_for(manager.cancel(jobs[0], "make room"), 5)
    admitted = await manager.submit(_spec())
    assert manager.get(admitted).state in (S.JOB_STATE_QUEUED, S.JOB_STATE_RUNNING)
    with pytest.raises(ResourceExhausted):
        await manager.submit(_spec())
    await manager.close()
    manager.store.close()


async def test_concurrent_submissions_are_admitted_up_to_the_limit_exactly(tmp_path: Path) -> None:
    manager = _manager(tmp_path, limit=4, delay=5)
    results = await asyncio.gather(*(manager.submit(_spec()) for _ in range(10)), return_exceptions=True)
    assert sum(isinstance(r, str) for r in results) == 4
    assert sum(isinstance(r, ResourceExhausted) for r in results) == 6
    await manager.close()
    manager.store.close()


async def test_no_limit_admits_everything(tmp_path: Path) -> None:
    """0 is no limit, not the default: more unfinished jobs than the default limit are all held."""
    manager = _manager(tmp_path, limit=0, delay=5)
    jobs = [await manager.submit(_spec()) for _ in range(DEFAULT_MAX_PENDING_JOBS + 2)]
    assert len(set(jobs)) == len(jobs)
    assert all(manager.get(j).state in (S.JOB_STATE_QUEUED, S.JOB_STATE_RUNNING) for j in jobs)
    await manager.close()
    manager.store.close()


def test_limit_from_flag_then_environment_then_default() -> None:
    def resolve(flag: int | None, env: dict[str, str]) -> int:
        return resolve_jobs_config(argparse.Namespace(max_pending_jobs=flag), env).jobs.max_pending_jobs

    assert resolve(None, {}) == DEFAULT_MAX_PENDING_JOBS
    assert resolve(None, {"LIVECALC_MAX_PENDING_JOBS": "7"}) == 7
    assert resolve(3, {"LIVECALC_MAX_PENDING_JOBS": "7"}) == 3
    assert resolve(0, {"LIVECALC_MAX_PENDING_JOBS": "7"}) == 0
    for bad in ("x", "-1"):
        with pytest.raises(InvalidArgument, match="max pending jobs"):
            resolve(None, {"LIVECALC_MAX_PENDING_JOBS": bad})


async def test_loop_lag_monitor_sees_a_blocked_loop() -> None:
    registry = CollectorRegistry()
    monitor = LoopLagMonitor(registry, interval=0.01)
    monitor.start()

    def ticks() -> float:
        return registry.get_sample_value("livecalc_gateway_event_loop_lag_seconds_count") or 0.0

    await async_wait_for(ticks, "the monitor's first tick")
    before = ticks()
    time.sleep(0.2)  # blocks the loop on purpose
    await async_wait_for(lambda: ticks() > before, "the monitor's tick across the block")
    await monitor.close()
    assert 0.15 < monitor.max_lag < 5
    assert registry.get_sample_value("livecalc_gateway_event_loop_lag_max_seconds") == monitor.max_lag
    over = registry.get_sample_value("livecalc_gateway_event_loop_lag_seconds_bucket", {"le": "0.1"})
    count = registry.get_sample_value("livecalc_gateway_event_loop_lag_seconds_count")
    assert count is not None and over is not None and count - over >= 1
