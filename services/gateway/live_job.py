"""One job as this gateway runs it (`LiveJob`), and how jobs run (`JobConfig`).

A `LiveJob` is the gateway's working state of a job between its submission (or its resumption
after a restart) and the moment its end is committed to the store: the record readers see, the
event log, the plan, the fold and the dispatcher, and what was last reported (progress never
steps back). `JobManager` (jobs.py) owns the live jobs; `JobReporter` (reporting.py) reports
their progress and checkpoints their fold; recovery.py rebuilds one from the store.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from livecalc.gateway.v1 import job_pb2
from services.gateway.dispatcher import DispatchConfig, Dispatcher
from services.gateway.events import EventLog
from services.gateway.fold import JobFold
from services.gateway.planner import Plan
from services.gateway.store import Checkpoint, ResultKey
from services.gateway.store_writer import Written
from services.valuation.interface.declaration import Outputs
from services.valuation.scenarios import ScenarioParams

S = job_pb2.JobState


@dataclass(frozen=True)
class JobConfig:
    """How jobs run; `package_address` is where engines download packages (this gateway)."""

    package_address: str
    dispatch: DispatchConfig = field(default_factory=DispatchConfig)
    progress_seconds: float = 0.25
    statistics_seconds: float = 1.0
    #: Blocks a job may have in flight ahead of its fold, per engine slot, in chunks.
    window_chunks_per_slot: int = 2
    chunk_time_limit_seconds: float = 0.0
    #: Longest time between two checkpoints of a running job's fold.
    checkpoint_seconds: float = 1.0
    #: Admission control: jobs this gateway holds unfinished (queued or running) before
    #: SubmitJob answers RESOURCE_EXHAUSTED; 0 admits every job.
    max_pending_jobs: int = 0


@dataclass
class LiveJob:
    """A job this gateway is running (or has just ended)."""

    job: job_pb2.Job
    log: EventLog
    plan: Plan
    params: ScenarioParams
    key: ResultKey
    rows: int
    #: The tenant that submitted it ('' with auth off), its idempotency key ('' for none) and
    #: the spec as the client sent it (kept with a key, to compare a later submission).
    tenant: str = ""
    idempotency_key: str = ""
    request: job_pb2.JobSpec | None = None
    #: The outputs the package declares (the fold's rows, the result's outputs); a resumed job
    #: reads them from the package when it starts running.
    outputs: Outputs | None = None
    #: Commits with the job's first record and its accepted event (None: recorded before,
    #: a resumed job); nothing else of the job is written before it has.
    recorded: asyncio.Future[Any] | None = None
    #: A write of the job that the store could not commit: the job fails.
    store_error: BaseException | None = None
    #: The job's final record while its terminal unit is not committed (then it becomes `job`:
    #: readers never see an end a restarted gateway would not), the result row written with
    #: it, the unit, and the task that sees it committed.
    final: job_pb2.Job | None = None
    result_row: dict[str, Any] | None = None
    ended: Written | None = None
    finishing: asyncio.Task[None] | None = None
    task: asyncio.Task[None] | None = None
    fold: JobFold | None = None
    dispatcher: Dispatcher | None = None
    cancel_reason: str | None = None
    #: blocks_done of the last progress event, and policies_done of the last running statistics
    #: (a resumed job's from before the stop: it reports nothing again).
    reported_blocks: int = -1
    reported_statistics_rows: int = 0
    #: waiting_seconds of the last progress event (a waiting job reports its wait about once a second).
    reported_waiting: float = 0.0
    #: The checkpoint this run resumes from (a restarted gateway), and when and where the last one was written.
    resume: Checkpoint | None = None
    checkpointed_at: float = 0.0
    checkpointed_block: int = -1
    started: float = field(default_factory=time.monotonic)
