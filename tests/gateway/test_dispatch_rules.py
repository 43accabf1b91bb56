"""Fast tests of two dispatcher rules that a run which still finishes would not show: the window
(workers take no chunk that starts `window_blocks` or more past the fold) and the engine a chunk
failed on (it goes to another engine while one that has not failed it is there)."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from services.gateway.dispatcher import Dispatcher
from services.gateway.engines import Engine
from services.gateway.fold import JobFold
from services.valuation.blocks import BLOCK_SIZE, fold
from tests.gateway.fakes import FakeEngineStub, FakeError, fake_dispatcher, fake_engine, partial_table

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]
SCENARIOS = 3


def dispatcher(engines: list[Engine], blocks: int, *, window: int) -> tuple[Dispatcher, JobFold]:
    """One-block chunks of a ``blocks``-block job over ``engines``, at most 3 attempts a chunk."""
    return fake_dispatcher(
        engines,
        blocks * BLOCK_SIZE,
        SCENARIOS,
        slots=4,
        chunk_blocks=1,
        window=window,
        max_attempts=3,
        backoff_seconds=0.01,
    )


async def test_workers_take_no_chunk_past_the_window_even_with_slots_free() -> None:
    blocks = 8
    table = partial_table(blocks, SCENARIOS)
    stub = FakeEngineStub(table, blocks * BLOCK_SIZE, delay=0.01)
    d, f = dispatcher([fake_engine("a", stub, slots=4)], blocks, window=2)
    await asyncio.wait_for(d.run(), 10)
    assert f.total().tobytes() == fold(table).tobytes()
    # four slots, but only the two blocks from the fold's next one may be out at a time
    assert stub.max_in_flight == 2


async def test_a_chunk_that_failed_on_an_engine_goes_to_another_one() -> None:
    blocks = 4
    table = partial_table(blocks, SCENARIOS)

    def block_0_fails(request: object, block: int) -> FakeError | None:
        return FakeError(grpc.StatusCode.UNAVAILABLE, "stream reset") if block == 0 else None

    # `a` takes block 0 first (its worker starts first) and fails it every time; `b` is slow,
    # so were `a` to take block 0 again it would spend the three attempts before `b` is free
    failing = FakeEngineStub(table, blocks * BLOCK_SIZE, fail=block_0_fails)
    slow = FakeEngineStub(table, blocks * BLOCK_SIZE, delay=0.3)
    d, f = dispatcher([fake_engine("a", failing), fake_engine("b", slow)], blocks, window=4)
    await asyncio.wait_for(d.run(), 10)
    assert f.total().tobytes() == fold(table).tobytes()
    assert [r.blocks.first_block for r in failing.requests].count(0) == 1
    assert 0 in [r.blocks.first_block for r in slow.requests]
