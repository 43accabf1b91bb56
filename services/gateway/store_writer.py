"""The job store's writer: one thread owns the write connection and commits queued writes in order.

Writes never run on the event loop. Each write is queued as a statement with its parameters
already serialized (a snapshot: the caller may change its message afterwards) and returns a
`Written` future that completes once the write is committed (await it with
`asyncio.wrap_future` where a later step depends on it, or ignore it). Writes are committed in
the order they were issued; the writer commits whatever is queued together in one transaction
(a commit, and now and then a WAL checkpoint with its fsync, is what stalled the loop when they
ran on it: up to 290 ms beside another suite on a shared machine). `transaction()` groups the
writes issued inside it into one unit that commits whole or not at all.

A batch that cannot be committed (a full disk, an I/O error) fails the futures of all its
writes, none of its units is visible, and the writer reports itself failing (`failure`,
``on_health``) until a later commit succeeds; while it fails, it tries a small probe write now
and then so that it notices when the disk has room again.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from time import time_ns
from typing import Any, Final, NamedTuple, TypeAlias

#: The job store's logger: the writer's lines are the store's, as they were before it had a module.
log = logging.getLogger("services.gateway.store")

#: Units of writes the writer commits together at most.
MAX_BATCH: Final = 512
#: How often a failing store tries a probe write while nothing else is queued.
PROBE_SECONDS: Final = 1.0

#: Completes (with the write's result) once the write is committed; see the module docstring.
Written: TypeAlias = "Future[Any]"
#: One write: runs on the writer's connection inside the batch's transaction.
_Op: TypeAlias = Callable[[sqlite3.Connection], Any]


class _Write(NamedTuple):
    op: _Op
    future: Future[Any]
    #: Writes with the same key replace one another (a job's checkpoint): of those in one
    #: batch only the last one runs.
    supersedes: str | None = None


#: Writes committed whole or not at all.
_Unit: TypeAlias = list[_Write]
#: Called by the writer thread when the store starts failing (with the error) and when it
#: writes again (None).
HealthListener: TypeAlias = Callable[[BaseException | None], None]


class StoreClosed(RuntimeError):
    """A write after `JobStore.close()`."""


class StoreWriter:
    """The thread named ``job store writer`` and its queue: it opens its own connection with
    ``connect`` (on that thread) and is the only one to write through it.

    Queue writes (`execute`, `submit`, `transaction`, `written`) from one thread (the event
    loop's). `close()` commits every queued write first, then stops the thread. ``on_health``
    is called on the writer thread when commits start failing (with the error) and when they
    succeed again (None); ``target`` names the store in logs.
    """

    def __init__(
        self, connect: Callable[[], sqlite3.Connection], target: str, on_health: HealthListener | None = None
    ) -> None:
        self._connect = connect
        self._target = target
        self._on_health = on_health
        self._failure: BaseException | None = None
        self._queue: queue.SimpleQueue[_Unit | None] = queue.SimpleQueue()
        self._collecting: _Unit | None = None
        self._collecting_done: Future[Any] | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._write_loop, name="job store writer", daemon=True)
        self._thread.start()

    @property
    def failure(self) -> BaseException | None:
        """The error of the last batch that could not be committed, None while writes succeed."""
        return self._failure

    def close(self) -> None:
        """Commit every queued write and stop the thread (it closes its connection)."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Written]:
        """The writes issued inside are committed together (or not at all: none is when the body
        raises). The body must not await: it collects this thread's writes until it ends.

        Yields a future of the whole unit: it completes after every write of the unit (their
        futures' callbacks have run first) or fails with the unit's error."""
        if self._collecting is not None:
            assert self._collecting_done is not None
            yield self._collecting_done  # inside another one: its writes join the outer unit
            return
        unit: _Unit = []
        done: Future[Any] = Future()
        self._collecting, self._collecting_done = unit, done
        try:
            yield done
        except BaseException:
            for write in unit:
                write.future.cancel()
            done.cancel()
            raise
        finally:
            self._collecting = self._collecting_done = None
        unit.append(_Write(lambda db: None, done))
        self.submit(unit)

    def written(self) -> Written:
        """Completes once every write issued before it is committed."""
        future: Future[Any] = Future()
        self.submit([_Write(lambda db: None, future)])
        return future

    def flush(self) -> None:
        """Block until every write issued so far is committed (start-up and tests; not on a busy loop)."""
        self.written().result()

    def execute(self, sql: str, row: tuple[Any, ...], supersedes: str | None = None) -> Written:
        """Queue one statement (its parameters already serialized)."""

        def op(db: sqlite3.Connection) -> None:
            db.execute(sql, row)

        future: Future[Any] = Future()
        write = _Write(op, future, supersedes)
        if self._collecting is not None:
            self._collecting.append(write)
        else:
            self.submit([write])
        return future

    def submit(self, unit: _Unit) -> None:
        """Queue a unit of writes (committed whole or not at all); StoreClosed after `close()`."""
        if self._closed:
            raise StoreClosed("the job store is closed")
        self._queue.put(unit)

    def _write_loop(self) -> None:
        db = self._connect()
        try:
            while True:
                try:
                    unit = self._queue.get(timeout=PROBE_SECONDS if self._failure is not None else None)
                except queue.Empty:
                    self._health(self._probe(db))
                    continue
                if unit is None:
                    return
                batch = [unit]
                stop = False
                while len(batch) < MAX_BATCH:
                    try:
                        more = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        stop = True
                        break
                    batch.append(more)
                self._health(self._commit(db, batch))
                if stop:
                    return
        finally:
            db.close()

    def _health(self, error: BaseException | None) -> None:
        """Note the outcome of a commit: a change between failing and writing is logged and told."""
        if (error is None) == (self._failure is None):
            if error is not None:
                self._failure = error
            return
        self._failure = error
        if error is not None:
            log.error(
                "the job store cannot write: %s; the gateway is not ready until writes succeed again",
                error,
                extra={"fields": {"store": self._target, "error": str(error)}},
            )
        else:
            log.warning("the job store writes again", extra={"fields": {"store": self._target}})
        if self._on_health is not None:
            try:
                self._on_health(error)
            except Exception:
                log.exception("job store: a health listener failed")

    @staticmethod
    def _probe(db: sqlite3.Connection) -> BaseException | None:
        """A small write, to learn whether the store can commit again."""
        try:
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT OR REPLACE INTO probe VALUES (1, ?)", (time_ns(),))
            db.execute("COMMIT")
            return None
        except sqlite3.Error as exc:
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            return exc

    @staticmethod
    def _commit(db: sqlite3.Connection, batch: list[_Unit]) -> BaseException | None:
        """One transaction for the batch; a unit that fails on its own (a constraint) is rolled
        back alone (its futures get the error), the others are committed. A failure of the
        store itself (full disk, I/O, the transaction gone) fails the whole batch: every future
        gets the error, and it is returned. A write superseded later in the batch is skipped: a
        backlog (a slow disk) writes each job's checkpoint once, not once a second."""
        last = {w.supersedes: w for unit in batch for w in unit if w.supersedes is not None}

        def run(w: _Write) -> Any:
            return None if w.supersedes is not None and last[w.supersedes] is not w else w.op(db)

        outcomes: list[tuple[_Unit, list[Any] | BaseException]] = []
        try:
            db.execute("BEGIN IMMEDIATE")
            for unit in batch:
                whole = len(unit) > 1
                if whole:
                    db.execute("SAVEPOINT unit")
                try:
                    outcomes.append((unit, [run(w) for w in unit]))
                except Exception as exc:  # the unit's futures get it (or, below, the batch's)
                    # SQLite may have rolled the whole transaction back (a full disk does):
                    # what follows would then commit on its own, outside the batch
                    if isinstance(exc, sqlite3.OperationalError) or not db.in_transaction:
                        raise
                    if whole:
                        db.execute("ROLLBACK TO unit")
                    outcomes.append((unit, exc))
                if whole:
                    db.execute("RELEASE unit")
            db.execute("COMMIT")
        except Exception as exc:  # the batch is not written: every write of it fails
            if not isinstance(exc, sqlite3.Error):
                log.exception("job store: a batch of writes failed", extra={"fields": {"units": len(batch)}})
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            outcomes = [(unit, exc) for unit in batch]
            failure: BaseException | None = exc
        else:
            failure = None
        for unit, outcome in outcomes:
            for i, (_, future, _) in enumerate(unit):
                if future.done():  # cancelled: its caller stopped waiting (the write stands)
                    continue
                if isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome[i])
        return failure
