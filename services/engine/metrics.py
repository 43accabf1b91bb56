"""Prometheus metrics of the engine: projection steps, chunk time, busy slots, package and module caches.

Created on the registry the server injects (never the global one), so tests and several
engines in one process keep their figures apart.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

CHUNK_SECONDS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


@dataclass(frozen=True)
class EngineMetrics:
    """The engine's own series (the gRPC ones come from services.common.metrics)."""

    steps: Counter
    chunks: Counter
    chunk_seconds: Histogram
    busy_slots: Gauge
    slots: Gauge
    wasm_calls_in_flight: Gauge
    last_wasm_end: Gauge
    package_cache_hits: Counter
    package_cache_misses: Counter
    package_cache_bytes: Gauge
    module_cache_rejected: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> EngineMetrics:
        return cls(
            steps=Counter(
                "livecalc_engine_steps", "Policy·scenario·month projection steps computed.", registry=registry
            ),
            chunks=Counter(
                "livecalc_engine_chunks",
                "RunChunk calls ended, by outcome (gRPC code name).",
                ("code",),
                registry=registry,
            ),
            chunk_seconds=Histogram(
                "livecalc_engine_chunk_seconds",
                "Wall time of RunChunk calls, from accepted to their end.",
                buckets=CHUNK_SECONDS_BUCKETS,
                registry=registry,
            ),
            busy_slots=Gauge("livecalc_engine_busy_slots", "Chunks running now.", registry=registry),
            slots=Gauge("livecalc_engine_slots", "Chunks the engine takes at once.", registry=registry),
            wasm_calls_in_flight=Gauge(
                "livecalc_engine_compute_in_flight", "Pipeline runs (WASM work) executing now.", registry=registry
            ),
            last_wasm_end=Gauge(
                "livecalc_engine_last_compute_end_timestamp_seconds",
                "Unix time at which the last pipeline run (WASM work) ended, however it ended.",
                registry=registry,
            ),
            package_cache_hits=Counter(
                "livecalc_engine_package_cache_hits",
                "Package requests served from the engine's memory or disk cache.",
                registry=registry,
            ),
            package_cache_misses=Counter(
                "livecalc_engine_package_cache_misses",
                "Package requests that downloaded the package from a PackageService.",
                registry=registry,
            ),
            package_cache_bytes=Gauge(
                "livecalc_engine_package_cache_bytes",
                "Bytes of archives in the on-disk package cache.",
                registry=registry,
            ),
            module_cache_rejected=Counter(
                "livecalc_engine_module_cache_rejected",
                "Compiled modules in the on-disk cache that failed verification and were recompiled, by reason "
                "(missing-digest, bad-digest, undeserialisable).",
                ("reason",),
                registry=registry,
            ),
        )
