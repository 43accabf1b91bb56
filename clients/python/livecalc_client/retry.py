"""Retrying with backoff in the light client: the services' rules (services/common/retry.py), here
because this distribution depends on grpcio and protobuf only.

The n-th pause after consecutive failures is ``min(cap, first · 2^(n−1))``, spread by up to
± ``jitter`` of itself so that clients cut off together do not come back together. At most
``attempts`` failures in a row are retried. *Progress* resets the count: a stream that delivered
events since it last broke gets the whole budget again, so a long job's event stream survives
any number of gateway restarts while one that breaks without delivering anything gives up.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

#: Idempotent calls and event streams: 0.2 s doubling, at most 5 s, ± 10 %.
FIRST_PAUSE = 0.2
MAX_PAUSE = 5.0
JITTER = 0.1


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff, capped and jittered, with a budget of failures in a row."""

    attempts: int
    first: float = FIRST_PAUSE
    cap: float = MAX_PAUSE
    jitter: float = JITTER

    def __post_init__(self) -> None:
        if self.attempts < 0 or not 0 <= self.first <= self.cap or not 0 <= self.jitter < 1:
            raise ValueError("backoff needs attempts ≥ 0, 0 ≤ first ≤ cap and 0 ≤ jitter < 1")

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """The pause after failure number `attempt` (1-based) in a row."""
        base = min(self.cap, self.first * 2.0 ** (attempt - 1))
        if self.jitter == 0:
            return base
        return base * (1.0 + self.jitter * (2.0 * (rng or random).random() - 1.0))


class Retry:
    """One call's or stream's retries: `failed()` after each failure, `progressed()` after each delivery."""

    def __init__(self, backoff: Backoff, rng: random.Random | None = None) -> None:
        self.backoff = backoff
        self.rng = rng
        #: Failures since the last progress.
        self.failures = 0

    def failed(self) -> float | None:
        """Count a failure: the pause before the next try, or None once the budget is spent."""
        self.failures += 1
        if self.failures > self.backoff.attempts:
            return None
        return self.backoff.delay(self.failures, self.rng)

    def progressed(self) -> None:
        """Something was delivered: the next failure starts a fresh budget and the shortest pause."""
        self.failures = 0
