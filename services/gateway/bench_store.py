"""How much the job store's writes delay the gateway's event loop: a measurement, not a test.

    livecalc bench store [--jobs 20] [--seconds 10] [--contention disk]
    (or python -m services.gateway.bench_store)

Drives a `JobStore` the way `JobManager` does, at many times its usual rate: per job, a
progress event every `--tick` seconds, a checkpoint (five float64 vectors of `--scenarios`)
with a progress event in one transaction every 5 ticks, running statistics every 10, and at
the end the result and the terminal event; a watcher follows each job's log. With
`--contention disk` a child process writes and fsyncs 8 MiB files in the store's directory
the whole time (another suite beside the gateway on a shared machine).

Prints the event-loop lag as the gateway measures it (how late a 50 ms sleep wakes,
`loop_lag.py`), the same at 5 ms, the time the loop spent inside store calls, and how long
an appended event took to reach its watcher.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from livecalc.gateway.v1 import job_pb2
from services.gateway.events import EventLog, now_timestamp
from services.gateway.store import Checkpoint, JobStore, ResultKey


def _hammer_disk(directory: str, stop: Any) -> None:
    """Write and fsync 8 MiB files until ``stop`` is set."""
    block = os.urandom(8 << 20)
    path = os.path.join(directory, "contention.bin")
    while not stop.is_set():
        with open(path, "wb") as f:
            f.write(block)
            f.flush()
            os.fsync(f.fileno())
    os.unlink(path)


def _timed(on_loop: list[float], fn: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            on_loop.append(time.perf_counter() - started)

    return call


def _statistics(n: int, rng: np.random.Generator) -> job_pb2.RunningStatistics:
    v = rng.normal(1000.0, 100.0, n)
    return job_pb2.RunningStatistics(
        policies_done=1,
        policies_total=2,
        statistics=job_pb2.Statistics(
            scenario_count=n,
            mean=float(v.mean()),
            percentiles=[job_pb2.Percentile(level=p, value=float(np.percentile(v, p))) for p in (1, 5, 50, 95, 99)],
        ),
    )


async def _lag(interval: float, out: list[float], stop: asyncio.Event) -> None:
    while not stop.is_set():
        started = time.monotonic()
        await asyncio.sleep(interval)
        out.append(max(0.0, time.monotonic() - started - interval))


async def run(args: argparse.Namespace, directory: Path) -> dict[str, Any]:
    store = JobStore(directory / "jobs.sqlite3")
    on_loop: list[float] = []
    store.append_event = _timed(on_loop, store.append_event)  # type: ignore[method-assign]
    store.put_checkpoint = _timed(on_loop, store.put_checkpoint)  # type: ignore[method-assign]
    store.put_job = _timed(on_loop, store.put_job)  # type: ignore[method-assign]
    store.put_result = _timed(on_loop, store.put_result)  # type: ignore[method-assign]
    store.drop_checkpoint = _timed(on_loop, store.drop_checkpoint)  # type: ignore[method-assign]
    delivery: list[float] = []
    lag50: list[float] = []
    lag5: list[float] = []
    stop = asyncio.Event()
    n = args.scenarios
    rng = np.random.default_rng(1)
    total = rng.normal(size=(5, n))
    stats = _statistics(n, rng)

    async def watch(log: EventLog) -> None:
        async for event in log.follow(0):
            delivery.append(time.time() - event.time.ToNanoseconds() / 1e9)

    async def job(i: int) -> None:
        job_id = f"job-{i}"
        record = job_pb2.Job(job_id=job_id, state=job_pb2.JobState.JOB_STATE_RUNNING, create_time=now_timestamp())
        store.put_job(record)
        log = EventLog(job_id, sink=store.append_event)
        watcher = asyncio.create_task(watch(log))
        log.append(accepted=job_pb2.JobAccepted(job=record, blocks_total=1000))
        tick = 0
        while not stop.is_set():
            await asyncio.sleep(args.tick)
            tick += 1
            progress = job_pb2.JobProgress(blocks_done=tick, blocks_total=1_000_000)
            if tick % 5 == 0:
                with store.transaction():
                    store.put_checkpoint(Checkpoint(job_id, "v1", 10**6, 4, tick, tick * 10, total))
                    log.append(progress=progress)
            else:
                log.append(progress=progress)
            if tick % 10 == 0:
                log.append(statistics=stats)
        store.put_result(job_id, ResultKey("ab" * 32, "v1", "k"), preview=False, mean=1.0, end_ns=1, values=total)
        with store.transaction():
            store.drop_checkpoint(job_id)
            record.state = job_pb2.JobState.JOB_STATE_SUCCEEDED
            store.put_job(record)
            log.append(result=job_pb2.JobResult(result_hash="h"))
        await watcher

    samplers = [asyncio.create_task(_lag(0.05, lag50, stop)), asyncio.create_task(_lag(0.005, lag5, stop))]
    jobs = [asyncio.create_task(job(i)) for i in range(args.jobs)]
    await asyncio.sleep(args.seconds)
    stop.set()
    await asyncio.gather(*jobs, *samplers)
    closing = time.perf_counter()
    store.close()
    close_s = time.perf_counter() - closing

    def q(values: list[float], p: float) -> float:
        return float(np.percentile(values, p)) * 1000 if values else 0.0

    return {
        "store_calls": len(on_loop),
        "loop_lag_50ms_max_ms": round(max(lag50) * 1000, 1),
        "loop_lag_50ms_p99_ms": round(q(lag50, 99), 1),
        "loop_lag_5ms_max_ms": round(max(lag5) * 1000, 1),
        "loop_lag_5ms_p99_ms": round(q(lag5, 99), 2),
        "store_call_on_loop_mean_us": round(statistics.fmean(on_loop) * 1e6, 1),
        "store_call_on_loop_max_ms": round(max(on_loop) * 1000, 2),
        "store_time_on_loop_s": round(sum(on_loop), 3),
        "event_delivery_p50_ms": round(q(delivery, 50), 2),
        "event_delivery_p99_ms": round(q(delivery, 99), 2),
        "events": len(delivery),
        "close_s": round(close_s, 3),
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--jobs", type=int, default=20, help="jobs written at once (default 20)")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long to measure (default 10)")
    parser.add_argument("--tick", type=float, default=0.01, help="seconds between a job's progress events")
    parser.add_argument("--scenarios", type=int, default=1000, help="scenarios of each checkpoint's vectors")
    parser.add_argument("--contention", choices=("none", "disk"), default="none", help="disk: fsync beside it")
    parser.add_argument("--dir", help="where the store goes (default: a new temporary directory)")


def measure(args: argparse.Namespace) -> int:
    """Run the measurement and print one JSON object."""
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        hammer = None
        stop = multiprocessing.Event()
        if args.contention == "disk":
            hammer = multiprocessing.Process(target=_hammer_disk, args=(tmp, stop), daemon=True)
            hammer.start()
        try:
            report = asyncio.run(run(args, Path(tmp)))
        finally:
            stop.set()
            if hammer is not None:
                hammer.join(timeout=30)
    print(json.dumps({"jobs": args.jobs, "seconds": args.seconds, "contention": args.contention, **report}))
    return 0


def register_bench(bench_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `bench store`."""
    p = bench_sub.add_parser(
        "store", help="the gateway's job store: event-loop lag and event delivery while jobs write (JSON)"
    )
    add_arguments(p)
    p.set_defaults(func=measure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.gateway.bench_store", description=__doc__.split("\n")[0])
    add_arguments(parser)
    return measure(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
