"""RunningServer.stop: stop hooks run once however often stop is called (issue 8 item 9)."""

from __future__ import annotations

import anyio
import pytest

from services.common.config import ServerConfig
from services.common.server import start_server

pytestmark = pytest.mark.anyio


async def test_stop_runs_hooks_once_even_when_called_twice_at_once() -> None:
    calls: list[str] = []

    async def hook() -> None:
        await anyio.sleep(0.05)
        calls.append("hook")

    config = ServerConfig(service="data", port=0, grace_seconds=0.2, drain_seconds=0.0)
    running = await start_server(config, [], on_stop=[hook])
    async with anyio.create_task_group() as tg:
        tg.start_soon(running.stop)
        tg.start_soon(running.stop)
    await running.stop()
    assert calls == ["hook"]
