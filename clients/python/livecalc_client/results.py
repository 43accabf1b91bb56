"""Jobs and results as typed Python values: `Job` (its `JobState` a name, not a number),
`JobResult`, `Statistics`, `Output` — frozen dataclasses of plain floats, ints, strings, tuples
and datetimes, made from the protobuf messages by `job_from_proto` / `result_from_proto`.

`Client.job`, `Client.jobs`, `Client.result` and `Client.value` (and `AsyncClient`'s) return
them; the protobuf messages stay available (`proto`, and the message-level methods `get_job`,
`list_jobs`, `wait`, `run`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum

from google.protobuf.timestamp_pb2 import Timestamp

from livecalc.gateway.v1 import job_pb2


class JobState(StrEnum):
    """A job's lifecycle state by name (`str(JobState.SUCCEEDED) == "succeeded"`)."""

    UNSPECIFIED = "unspecified"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @classmethod
    def from_proto(cls, value: int) -> JobState:
        """The state of a `job_pb2.JobState` number (an unknown one: UNSPECIFIED)."""
        try:
            return cls(job_pb2.JobState.Name(value).removeprefix("JOB_STATE_").lower())  # type: ignore[arg-type]
        except ValueError:
            return cls.UNSPECIFIED

    @property
    def ended(self) -> bool:
        """Succeeded, failed or cancelled: the job will not change again."""
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


@dataclass(frozen=True)
class Statistics:
    """The distribution of the portfolio value over the scenarios."""

    scenario_count: int
    mean: float
    std: float
    standard_error: float
    min: float
    max: float
    #: level (e.g. 0.99) → value
    percentiles: dict[float, float]
    #: level (e.g. 0.99) → conditional tail expectation
    ctes: dict[float, float]
    #: every output's mean by name, in declared order (the primary's statistics only)
    output_means: dict[str, float]

    @classmethod
    def from_proto(cls, s: job_pb2.Statistics) -> Statistics:
        return cls(
            scenario_count=int(s.scenario_count),
            mean=s.mean,
            std=s.std,
            standard_error=s.standard_error,
            min=s.min,
            max=s.max,
            percentiles={p.level: p.value for p in s.percentiles},
            ctes={c.level: c.value for c in s.ctes},
            output_means={m.name: m.mean for m in s.output_means},
        )


@dataclass(frozen=True)
class Output:
    """One declared output: its statistics and its value in every scenario."""

    name: str
    primary: bool
    statistics: Statistics
    values: tuple[float, ...]


@dataclass(frozen=True)
class JobResult:
    """A job's result; `result_hash` is the SHA-256 of the primary output's values."""

    result_hash: str
    statistics: Statistics
    outputs: tuple[Output, ...]
    policy_count: int
    steps: int
    elapsed_seconds: float
    package_hash: str
    dataset_version: str
    preview: bool
    #: a preview's relative difference from the full run it was compared with, when there was one
    preview_relative_difference: float | None
    scenario_dataset_id: str
    scenario_dataset_version: str
    proto: job_pb2.JobResult = field(repr=False, compare=False)

    @property
    def primary(self) -> Output | None:
        """The primary output (None in a result listed without its outputs)."""
        return next((o for o in self.outputs if o.primary), None)


@dataclass(frozen=True)
class Job:
    """A job's record: what was asked (`package_hash`, `dataset_id`, `labels`), its state and,
    once it ended, its result or error."""

    job_id: str
    state: JobState
    package_hash: str
    dataset_id: str
    labels: dict[str, str]
    create_time: datetime | None
    start_time: datetime | None
    end_time: datetime | None
    policies_done: int
    policies_total: int
    result: JobResult | None
    #: "CODE: message" of a failed job
    error: str | None
    cancel_reason: str
    proto: job_pb2.Job = field(repr=False, compare=False)


def result_from_proto(r: job_pb2.JobResult) -> JobResult:
    """The typed value of a `JobResult` message."""
    return JobResult(
        result_hash=r.result_hash,
        statistics=Statistics.from_proto(r.statistics),
        outputs=tuple(
            Output(o.name, o.primary, Statistics.from_proto(o.statistics), tuple(o.values)) for o in r.outputs
        ),
        policy_count=int(r.policy_count),
        steps=int(r.steps),
        elapsed_seconds=r.elapsed_seconds,
        package_hash=r.package_hash,
        dataset_version=r.dataset_version,
        preview=r.preview,
        preview_relative_difference=(
            r.preview_relative_difference if r.HasField("preview_relative_difference") else None
        ),
        scenario_dataset_id=r.scenario_dataset_id,
        scenario_dataset_version=r.scenario_dataset_version,
        proto=r,
    )


def _time(t: Timestamp, present: bool) -> datetime | None:
    return t.ToDatetime(tzinfo=UTC) if present else None


def job_from_proto(j: job_pb2.Job) -> Job:
    """The typed value of a `Job` message."""
    return Job(
        job_id=j.job_id,
        state=JobState.from_proto(j.state),
        package_hash=j.spec.package_hash,
        dataset_id=j.spec.dataset_id,
        labels=dict(j.spec.labels),
        create_time=_time(j.create_time, j.HasField("create_time")),
        start_time=_time(j.start_time, j.HasField("start_time")),
        end_time=_time(j.end_time, j.HasField("end_time")),
        policies_done=int(j.progress.policies_done),
        policies_total=int(j.progress.policies_total),
        result=result_from_proto(j.result) if j.HasField("result") else None,
        error=f"{j.error.code}: {j.error.message}" if j.HasField("error") else None,
        cancel_reason=j.cancel_reason,
        proto=j,
    )
