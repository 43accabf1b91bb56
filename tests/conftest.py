"""Fixtures shared by all test tiers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import ServiceProcess, start_service


@pytest.fixture
def anyio_backend() -> str:
    # grpc.aio runs on asyncio only (trio fails).
    return "asyncio"


@pytest.fixture
def service_factory(tmp_path: Path) -> Iterator[Callable[..., ServiceProcess]]:
    """Start services as real processes; all are stopped at the end of the test."""
    started: list[ServiceProcess] = []

    def factory(name: str, **kwargs: Any) -> ServiceProcess:
        service = start_service(name, tmp_path, **kwargs)
        started.append(service)
        return service

    yield factory
    for service in started:
        if service.proc.poll() is None:
            service.proc.kill()
            service.proc.wait(timeout=10)
