"""A job's append-only event log: sequence numbers from 1, subscribers are cursors.

Appending never waits for a reader: each subscriber keeps its own position and reads the
log at its own pace (docs/architecture.md "7. Streaming events"), so a slow or vanished client cannot slow the job.
Every event is handed to a sink (the job store) as it is appended, so a restarted gateway
serves the same events; appending does not wait for the store either. Subscribers get an
event only once the sink has persisted it (and every one before it): a client never sees an
event that a restarted gateway would not serve again under the same sequence number, so it
can re-attach from the last sequence it saw. An event whose write failed is held back, never
streamed: a subscriber that reaches it ends with UNAVAILABLE (it may watch again from its last
sequence), `on_failure` is told (the job manager fails the job), and `rewrite()` hands the
held-back events to the sink again (with the job's terminal event, once the store writes).
A log read back from the store goes on after the highest sequence persisted, so a number is
never given to two events. The log ends with exactly one of result, error or cancelled.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from typing import Any, Final

from google.protobuf.timestamp_pb2 import Timestamp

from livecalc.gateway.v1 import job_pb2
from services.common.errors import FailedPrecondition, Unavailable

#: Event kinds after which a job's log is closed.
TERMINAL: Final = frozenset({"result", "error", "cancelled"})

log = logging.getLogger(__name__)

#: Persists an event; returns a future that completes once it is persisted, or None when it is
#: already (a list in tests). Futures complete in the order the events were handed over.
Sink = Callable[[job_pb2.JobEvent], "Future[Any] | None"]
#: Told (on the event loop) of an event whose write failed, with the error.
FailureListener = Callable[[job_pb2.JobEvent, BaseException], None]

#: Where each event's write stands.
_PENDING, _WRITTEN, _FAILED = 0, 1, 2


def is_terminal(event: job_pb2.JobEvent) -> bool:
    return event.WhichOneof("event") in TERMINAL


def now_timestamp(clock: Callable[[], float] = time.time) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(clock() * 1e9))
    return ts


class EventLog:
    """The events of one job, in sequence order; `append` wakes every waiting subscriber.

    `events` are those read back from the store (persisted; their sequence numbers may have
    gaps where a write failed before this log kept failed events back)."""

    def __init__(
        self,
        job_id: str,
        *,
        sink: Sink | None = None,
        events: list[job_pb2.JobEvent] | None = None,
        clock: Callable[[], float] = time.time,
        on_failure: FailureListener | None = None,
        last_sequence: int = 0,
    ) -> None:
        self.job_id = job_id
        self._events: list[job_pb2.JobEvent] = list(events or [])
        self._status = [_WRITTEN] * len(self._events)
        #: Events persisted (the first `_durable` ones, all written): what subscribers may read.
        self._durable = len(self._events)
        #: The next event's sequence: after every one persisted (`last_sequence`: one that the
        #: store holds but could not decode counts too).
        self._next = max([last_sequence, *(e.sequence for e in self._events)]) + 1
        self._sink = sink
        self._clock = clock
        self._on_failure = on_failure
        self._changed = asyncio.Event()

    @property
    def closed(self) -> bool:
        return bool(self._events) and is_terminal(self._events[-1])

    @property
    def ended(self) -> bool:
        """Closed, and every event persisted: the end is what a restarted gateway would serve."""
        return self.closed and self._durable == len(self._events)

    @property
    def failed(self) -> bool:
        """Some event's write failed and it was not rewritten yet."""
        return _FAILED in self._status

    def events(self, after: int = 0) -> list[job_pb2.JobEvent]:
        return self._events[self._position(after) :]

    def _position(self, after: int) -> int:
        """Index of the first event with sequence > `after`."""
        return bisect.bisect_right(self._events, max(0, after), key=lambda e: e.sequence)

    def append(self, **body: object) -> job_pb2.JobEvent:
        """Add one event (``accepted=…``, ``progress=…`` …); refused once the log is closed."""
        if self.closed:
            raise FailedPrecondition(f"job {self.job_id} has ended; no more events")
        event = job_pb2.JobEvent(job_id=self.job_id, sequence=self._next, time=now_timestamp(self._clock))
        for name, value in body.items():
            getattr(event, name).CopyFrom(value)
        self._next += 1
        self._events.append(event)
        self._status.append(_PENDING)
        self._write(len(self._events) - 1)
        return event

    def rewrite(self) -> int:
        """Hand every event whose write failed to the sink again (in order; inside the caller's
        store transaction, if any); returns how many."""
        failed = [i for i, status in enumerate(self._status) if status == _FAILED]
        for index in failed:
            self._status[index] = _PENDING
            self._write(index)
        return len(failed)

    def _write(self, index: int) -> None:
        written = self._sink(self._events[index]) if self._sink is not None else None
        if written is None:
            self._settle(index, None)
        else:
            loop = asyncio.get_running_loop()
            written.add_done_callback(functools.partial(self._on_written, loop, index))

    def _on_written(self, loop: asyncio.AbstractEventLoop, index: int, written: Future[Any]) -> None:
        """The sink's future is done (on the store's thread): settle the event on the loop."""
        error: BaseException | None = None
        if written.cancelled():  # withdrawn before it was queued (its transaction raised)
            error = RuntimeError("the write was withdrawn")
        elif written.exception() is not None:
            error = written.exception()
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody reads any more
            loop.call_soon_threadsafe(self._settle, index, error)

    def _settle(self, index: int, error: BaseException | None) -> None:
        if error is None:
            self._status[index] = _WRITTEN
            while self._durable < len(self._status) and self._status[self._durable] == _WRITTEN:
                self._durable += 1
        else:
            self._status[index] = _FAILED
            event = self._events[index]
            log.error(
                "an event was not persisted; held back from subscribers",
                extra={"fields": {"job": self.job_id, "sequence": event.sequence, "error": repr(error)}},
            )
            if self._on_failure is not None:
                self._on_failure(event, error)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def follow(self, after: int = 0) -> AsyncIterator[job_pb2.JobEvent]:
        """Events with sequence > ``after``, then new ones as they are persisted, until the log
        closes; UNAVAILABLE at an event that could not be persisted."""
        position = self._position(after)
        while True:
            waiter = self._changed
            while position < self._durable:
                event = self._events[position]
                position += 1
                if event.sequence > after:  # (`after` may be ahead of the log as it was)
                    yield event
            if position < len(self._status) and self._status[position] == _FAILED:
                last = self._events[position - 1].sequence if position else max(0, after)
                raise Unavailable(
                    f"the job store could not record event {self._events[position].sequence} of job {self.job_id}; "
                    f"watch it again after sequence {last} once the gateway is ready"
                )
            if self.closed and position >= len(self._events):
                return
            await waiter.wait()
