"""The gateway's own Prometheus metrics, on the registry the server injects.

Jobs are counted as they move between states (`livecalc_gateway_jobs{state}`), and once more
when their end is committed (`job_ended`): how long they took from submission to end, by end
state (`livecalc_gateway_job_duration_seconds{state}`), how many ended by state and reason
(`livecalc_gateway_jobs_ended_total{state,reason}`: the status code in the `grpc_code` spelling
of services.common.metrics.code_label — "OK" for a result, "Canceled" for a cancelled job, the
error's code for a failed one — so its values are bounded), and the policies their results
valued, the base's and each variant's (`livecalc_gateway_policies_valued_total`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from livecalc.gateway.v1 import job_pb2
from services.common.metrics import code_label

#: Job durations run from a second (a small preview) to hours (millions of policies × thousands
#: of scenarios on few engines).
DURATION_BUCKETS: Final = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0)


@dataclass(frozen=True)
class GatewayMetrics:
    jobs: Gauge
    jobs_submitted: Counter
    chunks_dispatched: Counter
    chunks_retried: Counter
    fold_lag: Gauge
    events_sent: Counter
    job_duration: Histogram
    jobs_ended: Counter
    policies_valued: Counter

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
            job_duration=Histogram(
                "livecalc_gateway_job_duration_seconds",
                "Seconds from a job's submission to its end, by end state.",
                ["state"],
                buckets=DURATION_BUCKETS,
                registry=registry,
            ),
            jobs_ended=Counter(
                "livecalc_gateway_jobs_ended_total",
                "Jobs ended, by end state and reason (OK, Canceled, or the failure's status code).",
                ["state", "reason"],
                registry=registry,
            ),
            policies_valued=Counter(
                "livecalc_gateway_policies_valued_total",
                "Policies valued by succeeded jobs (a preview's sample; once more for each variant).",
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

    def job_ended(self, job: job_pb2.Job) -> None:
        """The end of ``job`` (its final record, end_time set) is committed."""
        state = state_label(job.state)
        reason = end_reason(job)
        self.jobs_ended.labels(state=state, reason=reason).inc()
        seconds = (job.end_time.ToNanoseconds() - job.create_time.ToNanoseconds()) / 1e9
        self.job_duration.labels(state=state).observe(max(0.0, seconds))
        if job.state == job_pb2.JOB_STATE_SUCCEEDED:  # the base and each variant valued every policy
            self.policies_valued.inc(job.result.policy_count * (1 + len(job.result.variants)))

    def track_fold_lag(self, lag: Callable[[], float]) -> None:
        self.fold_lag.set_function(lag)


def state_label(state: int) -> str:
    return job_pb2.JobState.Name(state).removeprefix("JOB_STATE_").lower()  # type: ignore[arg-type]


def end_reason(job: job_pb2.Job) -> str:
    """Why a job ended, as a `grpc_code` label value: OK (a result), Canceled, or its error's code
    (an unknown code name counts as Unknown, so the label's values stay bounded)."""
    if job.state == job_pb2.JOB_STATE_SUCCEEDED:
        return code_label(grpc.StatusCode.OK)
    if job.state == job_pb2.JOB_STATE_CANCELLED:
        return code_label(grpc.StatusCode.CANCELLED)
    return code_label(grpc.StatusCode.__members__.get(job.error.code, grpc.StatusCode.UNKNOWN))
