"""Memory limits of the data service: per-row, per-sample and per-message caps, and a budget.

Every request that reads rows (SampleRows, ReadRows, ValidateDataset) or stages an upload
first estimates the memory it will hold at its peak and reserves that much from one
`MemoryBudget`; requests that do not fit wait up to `admission_wait_seconds` for others to
finish, then get RESOURCE_EXHAUSTED naming the budget. The caps bound each estimate, so no
single request, however it is asked, can hold more than its cap: a CSV line over
`max_row_bytes` is refused when the file is indexed (uploads: INVALID_ARGUMENT), a sample
whose rows would exceed `max_sample_bytes` is refused before anything is read, and ReadRows
sends at most `max_message_rows` rows per message.

The defaults keep the process well under the 2 GiB limit of k8s/base/data.yaml.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Final

import anyio
import pyarrow as pa

from services.common.errors import InvalidArgument, ResourceExhausted

log = logging.getLogger(__name__)

MIB: Final = 1 << 20


@dataclass(frozen=True)
class DataLimits:
    """The memory caps of one data service process (see the module docstring)."""

    #: Memory all row-reading requests together may reserve.
    memory_budget_bytes: int = 768 * MIB
    #: Longest CSV line (header included) a dataset may have.
    max_row_bytes: int = 64 << 10
    #: Raw row bytes one SampleRows may gather (n × bytes per row).
    max_sample_bytes: int = 16 * MIB
    #: Most rows one ReadRows message carries.
    max_message_rows: int = 65536
    #: How long a request waits for budget before RESOURCE_EXHAUSTED.
    admission_wait_seconds: float = 10.0

    def __post_init__(self) -> None:
        for name in ("memory_budget_bytes", "max_row_bytes", "max_sample_bytes", "max_message_rows"):
            if getattr(self, name) < 1:
                raise InvalidArgument(f"{name} must be ≥ 1, got {getattr(self, name)}")
        if self.admission_wait_seconds < 0:
            raise InvalidArgument("admission_wait_seconds must be ≥ 0")


def mib(nbytes: float) -> str:
    return f"{nbytes / MIB:,.1f} MiB"


class MemoryBudget:
    """Reservations of estimated peak memory against one limit; safe across tasks of a loop."""

    def __init__(self, limit_bytes: int, *, wait_seconds: float = 2.0) -> None:
        self.limit = limit_bytes
        self.wait_seconds = wait_seconds
        self.reserved = 0
        self.peak_reserved = 0
        self._released = anyio.Event()

    @asynccontextmanager
    async def reserve(self, nbytes: int, what: str) -> AsyncIterator[None]:
        """Hold `nbytes` of the budget for the body; RESOURCE_EXHAUSTED if it cannot be had."""
        nbytes = max(int(nbytes), 1)
        if nbytes > self.limit:
            raise ResourceExhausted(
                f"{what} needs about {mib(nbytes)}, more than the data service's whole memory budget of"
                f" {mib(self.limit)} (--memory-budget-mb); ask for fewer rows or columns"
            )
        with anyio.move_on_after(self.wait_seconds):
            while self.reserved + nbytes > self.limit:
                released = self._released
                await released.wait()
        if self.reserved + nbytes > self.limit:
            raise ResourceExhausted(
                f"{what} needs about {mib(nbytes)} but the data service's memory budget of {mib(self.limit)}"
                f" is in use ({mib(self.reserved)} reserved by other requests); retry shortly"
            )
        self.reserved += nbytes
        self.peak_reserved = max(self.peak_reserved, self.reserved)
        try:
            yield
        finally:
            self.reserved -= nbytes
            self._released.set()
            self._released = anyio.Event()
            if self.reserved == 0:
                # Arrow's allocator keeps freed pages for reuse; once idle, hand them back.
                pa.default_memory_pool().release_unused()
