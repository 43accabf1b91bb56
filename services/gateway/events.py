"""A job's append-only event log: sequence numbers from 1, subscribers are cursors.

Appending never waits for a reader: each subscriber keeps its own position and reads the
log at its own pace (DESIGN.md step 5), so a slow or vanished client cannot slow the job.
Every event is handed to a sink (the job store) as it is appended, so a restarted gateway
serves the same events. The log ends with exactly one of result, error or cancelled.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Final

from google.protobuf.timestamp_pb2 import Timestamp

from livecalc.gateway.v1 import job_pb2
from services.common.errors import FailedPrecondition

#: Event kinds after which a job's log is closed.
TERMINAL: Final = frozenset({"result", "error", "cancelled"})

Sink = Callable[[job_pb2.JobEvent], None]


def is_terminal(event: job_pb2.JobEvent) -> bool:
    return event.WhichOneof("event") in TERMINAL


def now_timestamp(clock: Callable[[], float] = time.time) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(clock() * 1e9))
    return ts


class EventLog:
    """The events of one job, in sequence order; `append` wakes every waiting subscriber."""

    def __init__(
        self,
        job_id: str,
        *,
        sink: Sink | None = None,
        events: list[job_pb2.JobEvent] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.job_id = job_id
        self._events: list[job_pb2.JobEvent] = list(events or [])
        self._sink = sink
        self._clock = clock
        self._changed = asyncio.Event()

    @property
    def last_sequence(self) -> int:
        return len(self._events)

    @property
    def closed(self) -> bool:
        return bool(self._events) and is_terminal(self._events[-1])

    def events(self, after: int = 0) -> list[job_pb2.JobEvent]:
        return self._events[max(0, after) :]

    def append(self, **body: object) -> job_pb2.JobEvent:
        """Add one event (``accepted=…``, ``progress=…`` …); refused once the log is closed."""
        if self.closed:
            raise FailedPrecondition(f"job {self.job_id} has ended; no more events")
        event = job_pb2.JobEvent(job_id=self.job_id, sequence=len(self._events) + 1, time=now_timestamp(self._clock))
        for name, value in body.items():
            getattr(event, name).CopyFrom(value)
        if self._sink is not None:
            self._sink(event)
        self._events.append(event)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
        return event

    async def follow(self, after: int = 0) -> AsyncIterator[job_pb2.JobEvent]:
        """Events with sequence > ``after``, then new ones as they come, until the log closes."""
        position = max(0, after)
        while True:
            waiter = self._changed
            while position < len(self._events):
                event = self._events[position]
                position += 1
                yield event
            if self.closed:
                return
            await waiter.wait()
