"""Event-loop lag of the gateway: how late a 50 ms sleep wakes up.

Everything the gateway does (folding partials, fanning events out to watchers, answering
RPCs) runs on one asyncio loop, so a callback that blocks it delays all of them. A task
sleeps `interval` seconds at a time and records the overshoot in
``livecalc_gateway_event_loop_lag_seconds`` (a histogram) and the largest one seen in
``livecalc_gateway_event_loop_lag_max_seconds``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Final

from prometheus_client import CollectorRegistry, Gauge, Histogram

from services.common.tasks import cancel_and_wait

INTERVAL_SECONDS: Final = 0.05
BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class LoopLagMonitor:
    """Samples the running loop's lag until `close()`."""

    def __init__(self, registry: CollectorRegistry, *, interval: float = INTERVAL_SECONDS) -> None:
        self.interval = interval
        self.max_lag = 0.0
        self.histogram = Histogram(
            "livecalc_gateway_event_loop_lag_seconds",
            f"How late a {interval * 1000:g} ms sleep on the gateway's event loop woke up.",
            buckets=BUCKETS,
            registry=registry,
        )
        self.max_gauge = Gauge(
            "livecalc_gateway_event_loop_lag_max_seconds",
            "The largest event-loop lag since the gateway started.",
            registry=registry,
        )
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="event loop lag")

    async def _run(self) -> None:
        while True:
            started = time.monotonic()
            await asyncio.sleep(self.interval)
            lag = max(0.0, time.monotonic() - started - self.interval)
            self.histogram.observe(lag)
            if lag > self.max_lag:
                self.max_lag = lag
                self.max_gauge.set(lag)

    async def close(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
