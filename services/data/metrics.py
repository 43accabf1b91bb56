"""Prometheus metrics of the data service: storage reads, uploads and the memory budget.

The seeds' rule is that metadata and samples never read whole datasets; the read counters make
that visible in production (bytes read by backend), not only in tests and the benchmark. The
upload counters say how many UploadDataset calls ended how and how many bytes they brought; the
budget gauges say how much of the memory budget (limits.py) requests in flight hold, next to
the budget itself, so RESOURCE_EXHAUSTED answers can be told from a budget set too small.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge

from services.common.storage.base import CountingStorage, Storage
from services.data.limits import MemoryBudget


@dataclass(frozen=True)
class StorageMetrics:
    """Counters of ranged reads against the dataset backend."""

    read_bytes: Counter
    reads: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> StorageMetrics:
        return cls(
            read_bytes=Counter(
                "livecalc_data_storage_read_bytes",
                "Bytes read from dataset storage by ranged reads.",
                ("source",),
                registry=registry,
            ),
            reads=Counter(
                "livecalc_data_storage_reads",
                "Ranged reads issued against dataset storage.",
                ("source",),
                registry=registry,
            ),
        )


@dataclass(frozen=True)
class DataMetrics:
    """Uploads by outcome, and the memory budget with what is reserved from it now."""

    uploads: Counter
    upload_bytes: Counter
    memory_budget: Gauge
    memory_reserved: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry) -> DataMetrics:
        return cls(
            uploads=Counter(
                "livecalc_data_uploads",
                "UploadDataset calls ended, by outcome: ok, or the gRPC status code in lower case.",
                ("outcome",),
                registry=registry,
            ),
            upload_bytes=Counter(
                "livecalc_data_upload_bytes",
                "Dataset bytes received by UploadDataset calls, by the call's outcome.",
                ("outcome",),
                registry=registry,
            ),
            memory_budget=Gauge(
                "livecalc_data_memory_budget_bytes",
                "Memory all row-reading requests and uploads together may reserve (--memory-budget-mb).",
                registry=registry,
            ),
            memory_reserved=Gauge(
                "livecalc_data_memory_reserved_bytes",
                "Memory reserved from the budget now by requests in flight (their estimated peaks).",
                registry=registry,
            ),
        )

    def track_budget(self, budget: MemoryBudget) -> None:
        """The budget gauges read `budget` at each scrape."""
        self.memory_budget.set_function(lambda: budget.limit)
        self.memory_reserved.set_function(lambda: budget.reserved)

    def upload_ended(self, outcome: str, received_bytes: int) -> None:
        self.uploads.labels(outcome).inc()
        self.upload_bytes.labels(outcome).inc(received_bytes)


class MeteredStorage(CountingStorage):
    """A Storage whose ranged reads are counted in Prometheus by backend."""

    def __init__(self, inner: Storage, metrics: StorageMetrics) -> None:
        super().__init__(inner)
        self._metrics = metrics
        label = inner.kind
        self._read_bytes = metrics.read_bytes.labels(label)
        self._reads = metrics.reads.labels(label)

    async def read_range(self, name: str, offset: int, length: int, *, change_token: str | None = None) -> bytes:
        data = await super().read_range(name, offset, length, change_token=change_token)
        self._read_bytes.inc(len(data))
        self._reads.inc()
        return data

    def scope(self, name: str) -> MeteredStorage:
        return MeteredStorage(self.inner.scope(name), self._metrics)
