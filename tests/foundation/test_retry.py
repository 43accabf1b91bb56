"""services.common.retry: capped exponential backoff with jitter, and a budget that progress renews."""

from __future__ import annotations

import random

import pytest

from services.common.errors import InvalidArgument
from services.common.retry import Backoff, Retry


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_pauses_double_up_to_the_cap() -> None:
    backoff = Backoff(first=0.1, cap=1.0)
    assert [backoff.delay(n) for n in range(1, 7)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]


def test_jitter_stays_within_its_fraction() -> None:
    exact, jittered, rng = Backoff(first=0.5, cap=10.0), Backoff(first=0.5, cap=10.0, jitter=0.1), random.Random(3)
    pauses = [jittered.delay(n, rng) for n in range(1, 8)]
    assert all(abs(p - exact.delay(n)) <= 0.1 * exact.delay(n) + 1e-12 for n, p in enumerate(pauses, 1))
    assert pauses != [exact.delay(n) for n in range(1, 8)]


def test_attempt_budget_resets_after_progress() -> None:
    retry = Retry(Backoff(first=0.2, cap=5.0, attempts=2))
    assert (retry.failed(), retry.failed(), retry.failed()) == (0.2, 0.4, None)
    retry.progressed()
    assert retry.failed() == 0.2


def test_seconds_budget_counts_from_the_first_failure_in_a_row() -> None:
    clock = Clock()
    retry = Retry(Backoff(first=0.1, cap=1.0, seconds=2.0), clock=clock)
    pauses = []
    while (pause := retry.failed()) is not None:
        pauses.append(pause)
        clock.now += pause
    assert pauses == [0.1, 0.2, 0.4, 0.8]  # 1.5 s; the next pause would end at 2.5 s
    retry.progressed()
    assert retry.failed() == 0.1


@pytest.mark.parametrize(
    "kwargs",
    [{"first": 2.0, "cap": 1.0}, {"first": 0.1, "cap": 1.0, "jitter": 1.0}, {"first": 0, "cap": 1, "attempts": -1}],
)
def test_nonsense_is_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(InvalidArgument):
        Backoff(**kwargs)  # type: ignore[arg-type]
