"""Retrying with backoff: one policy (`Backoff`) and one per-operation state (`Retry`).

Every loop in the services that waits before trying again uses these: a data read in the
engine (engine/row_reader.py), an engine the gateway rests after a failure (gateway/engines.py),
a crashed child of `livecalc up` (common/supervisor.py). The light client cannot import
services and carries the same semantics in `livecalc_client.retry`.

The n-th pause after consecutive failures is ``min(cap, first · 2^(n−1))``, spread by up to
± ``jitter`` of itself so that many callers that failed together do not retry together. A budget
ends the retries: at most ``attempts`` failures in a row, and/or no pause that would end more
than ``seconds`` after the first of them. *Progress* (a stream that delivered something, a call
that answered) resets the budget: what is bounded is how long an operation goes without getting
anywhere, not how long it lives.

    retry = Retry(Backoff(first=0.1, cap=1.0, seconds=30.0))
    while True:
        try:
            return await call()
        except Transient:
            pause = retry.failed()
            if pause is None:
                raise
            await asyncio.sleep(pause)
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from services.common.errors import InvalidArgument


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff, capped and jittered, with a budget of failures in a row."""

    #: The first pause, seconds; each further failure doubles it up to `cap`.
    first: float
    cap: float
    #: Each pause is spread uniformly over ± this fraction of itself (0: exact pauses).
    jitter: float = 0.0
    #: Failures in a row allowed (each followed by a pause); None: no count limit.
    attempts: int | None = None
    #: No pause may end later than this many seconds after the first failure in a row; None: no limit.
    seconds: float | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.first <= self.cap or not 0 <= self.jitter < 1:
            raise InvalidArgument("backoff needs 0 ≤ first ≤ cap and 0 ≤ jitter < 1")
        if (self.attempts is not None and self.attempts < 0) or (self.seconds is not None and self.seconds < 0):
            raise InvalidArgument("a backoff budget must be ≥ 0")

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """The pause after failure number `attempt` (1-based) in a row."""
        base = min(self.cap, self.first * 2.0 ** (attempt - 1))
        if self.jitter == 0:
            return base
        return base * (1.0 + self.jitter * (2.0 * (rng or random).random() - 1.0))


class Retry:
    """One operation's retries under a `Backoff`: `failed()` after each failure, `progressed()`
    after each success or delivery. Not thread-safe; one per operation (a read, a stream, an engine)."""

    def __init__(
        self,
        backoff: Backoff,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.backoff = backoff
        self.clock = clock
        self.rng = rng
        #: Failures since the last progress.
        self.failures = 0
        self._first_failure = 0.0

    def failed(self) -> float | None:
        """Count a failure: the pause before the next try, or None once the budget is spent."""
        now = self.clock()
        if self.failures == 0:
            self._first_failure = now
        self.failures += 1
        limit = self.backoff.attempts
        if limit is not None and self.failures > limit:
            return None
        pause = self.backoff.delay(self.failures, self.rng)
        seconds = self.backoff.seconds
        if seconds is not None and now + pause - self._first_failure > seconds:
            return None
        return pause

    def progressed(self) -> None:
        """The operation got somewhere: the next failure starts a fresh budget and the shortest pause."""
        self.failures = 0
