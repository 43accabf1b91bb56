"""Stopping a child task from a task that may itself be cancelled meanwhile.

``task.cancel(); with suppress(CancelledError): await task`` swallows more than the child's
cancellation: if the caller is cancelled while it waits, `Task.cancel` hands the cancellation to
the child it is waiting on, and the CancelledError that comes back out of ``await task`` (the
child's, and so the caller's) is suppressed: the caller goes on as if never cancelled. A job
task waiting for its progress ticker that way swallowed the gateway's stop and then waited for
ever to record an end that a full disk would not take (tests/foundation/test_tasks.py,
tests/adversarial/test_store_disk_full.py).
"""

from __future__ import annotations

import asyncio
from typing import Any


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait until it has ended. A cancellation of the caller during the wait
    propagates; the task's own failure (other than its cancellation) is raised, as awaiting it
    would."""
    task.cancel()
    await asyncio.wait([task])
    if not task.cancelled():
        task.result()
