"""Prometheus metrics of the data service's storage reads.

The seeds' rule is that metadata and samples never read whole datasets; these counters make
that visible in production (bytes read by backend), not only in tests and the benchmark.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter

from services.common.storage.base import CountingStorage, Storage


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
