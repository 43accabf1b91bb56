"""A job's append-only event log: sequence numbers from 1, subscribers are cursors.

Appending never waits for a reader: each subscriber keeps its own position and reads the
log at its own pace (DESIGN.md step 5), so a slow or vanished client cannot slow the job.
Every event is handed to a sink (the job store) as it is appended, so a restarted gateway
serves the same events; appending does not wait for the store either. Subscribers get an
event only once the sink has persisted it (and every one before it): a client never sees an
event that a restarted gateway would not serve again under the same sequence number, so it
can re-attach from the last sequence it saw. (A write that fails is logged and its event
released all the same: a stream must not hang on a broken disk.) The log ends with exactly
one of result, error or cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from typing import Any, Final

from google.protobuf.timestamp_pb2 import Timestamp

from livecalc.gateway.v1 import job_pb2
from services.common.errors import FailedPrecondition

#: Event kinds after which a job's log is closed.
TERMINAL: Final = frozenset({"result", "error", "cancelled"})

log = logging.getLogger(__name__)

#: Persists an event; returns a future that completes once it is persisted, or None when it is
#: already (a list in tests). Futures complete in the order the events were handed over.
Sink = Callable[[job_pb2.JobEvent], "Future[Any] | None"]


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
        #: Events persisted (the first `_durable` ones): what subscribers may read.
        self._durable = len(self._events)
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
        written = self._sink(event) if self._sink is not None else None
        self._events.append(event)
        if written is None:
            self._persisted(event.sequence)
        else:
            loop = asyncio.get_running_loop()
            written.add_done_callback(functools.partial(self._on_written, loop, event.sequence))
        return event

    def _on_written(self, loop: asyncio.AbstractEventLoop, sequence: int, written: Future[Any]) -> None:
        """The sink's future is done (on the store's thread): release the event on the loop."""
        if not written.cancelled() and (error := written.exception()) is not None:
            log.error(
                "an event was not persisted; streamed all the same",
                extra={"fields": {"job": self.job_id, "sequence": sequence, "error": repr(error)}},
            )
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody reads any more
            loop.call_soon_threadsafe(self._persisted, sequence)

    def _persisted(self, sequence: int) -> None:
        if sequence > self._durable:
            self._durable = sequence
            changed, self._changed = self._changed, asyncio.Event()
            changed.set()

    async def follow(self, after: int = 0) -> AsyncIterator[job_pb2.JobEvent]:
        """Events with sequence > ``after``, then new ones as they are persisted, until the log closes."""
        position = max(0, after)
        while True:
            waiter = self._changed
            while position < self._durable:
                event = self._events[position]
                position += 1
                yield event
            if self.closed and position >= len(self._events):
                return
            await waiter.wait()
