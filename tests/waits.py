"""Waiting on the event a test is about, not on a guess of how long it takes.

`wait_for` polls a condition until it holds or a deadline passes (then fails naming what it
waited for); a sleep that only hopes the event happened by then is flaky on a loaded machine
and slow on an idle one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(check: Callable[[], T], what: str, *, seconds: float = 10.0, interval: float = 0.02) -> T:
    """`check()`'s first truthy value, polled every `interval` seconds; AssertionError after `seconds`."""
    deadline = time.monotonic() + seconds
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out after {seconds:g} s waiting for {what}"
        time.sleep(interval)
    return value


async def async_wait_for(check: Callable[[], T], what: str, *, seconds: float = 10.0, interval: float = 0.01) -> T:
    """`wait_for` on an event loop: the loop runs (and what the test waits for with it) between polls."""
    deadline = time.monotonic() + seconds
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out after {seconds:g} s waiting for {what}"
        await asyncio.sleep(interval)
    return value
