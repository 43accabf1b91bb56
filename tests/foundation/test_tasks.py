"""`cancel_and_wait`: a task that stops a child is still cancellable while it waits for it."""

from __future__ import annotations

import asyncio

import pytest

from services.common.tasks import cancel_and_wait

pytestmark = pytest.mark.anyio


async def slow_to_stop(stopping: asyncio.Event) -> None:
    """A child that takes a while to end once cancelled (as a ticker writing its last report)."""
    try:
        await asyncio.sleep(60)
    finally:
        stopping.set()
        await asyncio.sleep(0.05)


async def test_a_cancellation_of_the_caller_while_it_waits_is_not_swallowed() -> None:
    went_on = False
    stopping = asyncio.Event()

    async def parent() -> None:
        nonlocal went_on
        child = asyncio.create_task(slow_to_stop(stopping))
        await asyncio.sleep(0)
        await cancel_and_wait(child)
        went_on = True  # the old `with suppress(CancelledError): await child` got here when cancelled

    task = asyncio.create_task(parent())
    await stopping.wait()  # the parent now waits for its child to end
    task.cancel()
    await asyncio.wait([task])
    assert task.cancelled() and not went_on


async def test_the_childs_own_failure_is_raised_and_a_finished_child_is_fine() -> None:
    async def fails() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            raise RuntimeError("writing the last report failed")

    child = asyncio.create_task(fails())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="last report"):
        await cancel_and_wait(child)
    done = asyncio.create_task(asyncio.sleep(0))
    await done
    await cancel_and_wait(done)  # already ended: nothing to do
    cancelled = asyncio.create_task(asyncio.sleep(60))
    await asyncio.sleep(0)
    await cancel_and_wait(cancelled)
    assert cancelled.cancelled()
