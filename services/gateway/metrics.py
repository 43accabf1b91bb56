"""The gateway's own Prometheus metrics, on the registry the server injects."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge

from livecalc.gateway.v1 import job_pb2


@dataclass(frozen=True)
class GatewayMetrics:
    jobs: Gauge
    jobs_submitted: Counter
    chunks_dispatched: Counter
    chunks_retried: Counter
    fold_lag: Gauge
    events_sent: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry | None = None) -> GatewayMetrics:
        registry = registry if registry is not None else CollectorRegistry()
        return cls(
            jobs=Gauge("livecalc_gateway_jobs", "Jobs by state.", ["state"], registry=registry),
            jobs_submitted=Counter("livecalc_gateway_jobs_submitted_total", "Jobs accepted.", registry=registry),
            chunks_dispatched=Counter(
                "livecalc_gateway_chunks_dispatched_total", "RunChunk calls sent to engines.", registry=registry
            ),
            chunks_retried=Counter(
                "livecalc_gateway_chunks_retried_total",
                "Chunks (their missing blocks) sent back to the queue after an engine failed.",
                registry=registry,
            ),
            fold_lag=Gauge(
                "livecalc_gateway_fold_lag_blocks",
                "Block partials received ahead of the fold and waiting in memory, all jobs.",
                registry=registry,
            ),
            events_sent=Counter(
                "livecalc_gateway_events_sent_total",
                "Job events sent to clients (SubmitJob, WatchJob).",
                registry=registry,
            ),
        )

    def set_job_counts(self, counts: dict[int, int]) -> None:
        for _, value in job_pb2.JobState.items():
            if value:
                self.jobs.labels(state=state_label(value)).set(counts.get(value, 0))

    def transition(self, old: int, new: int) -> None:
        """A job moved from state ``old`` (0 for a new job) to ``new``."""
        if old:
            self.jobs.labels(state=state_label(old)).dec()
        self.jobs.labels(state=state_label(new)).inc()

    def track_fold_lag(self, lag: Callable[[], float]) -> None:
        self.fold_lag.set_function(lag)


def state_label(state: int) -> str:
    return job_pb2.JobState.Name(state).removeprefix("JOB_STATE_").lower()  # type: ignore[arg-type]
