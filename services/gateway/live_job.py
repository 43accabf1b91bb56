"""One job as this gateway runs it (`LiveJob`): its phase and the invariants of its state.

A `LiveJob` is the gateway's working state of a job between its submission (or its resumption
after a restart) and the moment its end is committed to the store: the record readers see, the
event log, the plan, the fold and the dispatcher, and what was last reported. Its phase
(job_state.py) changes only through `advance`, which refuses a transition the table does not
allow; the invariants below are checked where they can break, and a broken one raises
`JobStateError` (a bug: the job fails INTERNAL):

- progress never steps back: `reported_blocks` only grows (`note_reported`), so a resumed job
  reports each block once (it stays silent until it passes what it reported before the stop);
- checkpoints only go forward (`note_checkpoint`), and one written with a progress report never
  runs ahead of the progress reported (a restarted gateway resumes where clients last saw it);
- only an active job (RESUMED, RUNNING) takes a write failure (`fail_write`); only an ending
  job has a final record, and it has one until its end is committed (`end`, `ended`).

`JobManager` (jobs.py) owns the live jobs; `JobRunner` (job_runner.py) runs and ends them;
`JobReporter` (reporting.py) reports their progress and checkpoints their fold; recovery.py
rebuilds one from the store.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from livecalc.gateway.v1 import job_pb2
from services.gateway.dispatcher import Dispatcher
from services.gateway.events import EventLog
from services.gateway.fold import JobFold
from services.gateway.job_kind import FULL_RUN, JobKind
from services.gateway.job_state import ACTIVE, TRANSITIONS, JobStateError, Phase, check_transition
from services.gateway.planner import Plan
from services.gateway.store import Checkpoint, ResultKey
from services.gateway.store_writer import Written
from services.gateway.variants import VariantPackage
from services.valuation.interface.declaration import Outputs
from services.valuation.scenarios import ScenarioParams

S = job_pb2.JobState


@dataclass
class LiveJob:
    """A job this gateway is running (or has just ended)."""

    job: job_pb2.Job
    log: EventLog
    plan: Plan
    params: ScenarioParams
    key: ResultKey
    rows: int
    #: A full run or a preview (job_kind.py).
    kind: JobKind = FULL_RUN
    phase: Phase = Phase.SUBMITTED
    #: The tenant that submitted it ('' with auth off), its idempotency key ('' for none) and
    #: the spec as the client sent it (kept with a key, to compare a later submission).
    tenant: str = ""
    idempotency_key: str = ""
    request: job_pb2.JobSpec | None = None
    #: The outputs the package declares (the fold's rows, the result's outputs); a resumed job
    #: reads them from the package when it starts running.
    outputs: Outputs | None = None
    #: Commits with the job's first record and its accepted event (None: a resumed job,
    #: recorded before); nothing else of the job is written before it has.
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
    #: The job's variants (JobSpec.variants, their derived packages), each valued after the
    #: base in a pass of its own over the same plan; a resumed job has none (variant jobs are
    #: not checkpointed). `finished` holds the passes done, the base's first: `fold` and
    #: `dispatcher` are the running pass's.
    variants: tuple[VariantPackage, ...] = ()
    finished: list[tuple[JobFold, Dispatcher]] = field(default_factory=list)

    @property
    def job_id(self) -> str:
        return self.job.job_id

    @property
    def passes(self) -> int:
        """Valuations of the plan the job makes: the base and one per variant."""
        return 1 + len(self.variants)

    @property
    def blocks_done(self) -> int:
        """Blocks folded over every pass so far (progress counts each pass's blocks)."""
        return len(self.finished) * self.plan.blocks_total + (self.fold.folded_blocks if self.fold else 0)

    @property
    def policies_done(self) -> int:
        """Policies valued over every pass so far."""
        return len(self.finished) * self.plan.rows + (self.fold.rows_done if self.fold else 0)

    def advance(self, to: Phase) -> None:
        """Move to phase ``to``; `JobStateError` for a transition job_state.TRANSITIONS lacks."""
        check_transition(self.job_id, self.phase, to)
        self.phase = to

    def stop(self) -> None:
        """The gateway is stopping: STOPPED, unless the job ended or was dropped meanwhile."""
        if TRANSITIONS[self.phase]:
            self.advance(Phase.STOPPED)

    def _broken(self, what: str) -> JobStateError:
        return JobStateError(f"job {self.job_id} ({self.phase.value}): {what}")

    def note_reported(self, blocks_done: int) -> None:
        """A progress event reports ``blocks_done``: never fewer than the last one."""
        if blocks_done < self.reported_blocks:
            raise self._broken(f"progress stepping back from {self.reported_blocks} to {blocks_done} blocks")
        self.reported_blocks = blocks_done

    def note_checkpoint(self, next_block: int, *, with_progress: bool) -> None:
        """A checkpoint at ``next_block`` is written: never behind the last one, and (written with
        a progress report) never ahead of the progress reported."""
        if next_block < self.checkpointed_block:
            raise self._broken(f"checkpoint stepping back from block {self.checkpointed_block} to {next_block}")
        if with_progress and next_block > self.reported_blocks:
            raise self._broken(f"checkpoint at block {next_block} ahead of the {self.reported_blocks} reported")
        self.checkpointed_at = time.monotonic()
        self.checkpointed_block = next_block

    def fail_write(self, error: BaseException) -> bool:
        """A write of the job was not committed: True when that fails the job (an active job's
        first failure); earlier (not recorded yet: the job is dropped) and later (ending: its
        end is written again) it does not."""
        if self.phase not in ACTIVE or self.store_error is not None:
            return False
        self.store_error = error
        return True

    def end(self, final: job_pb2.Job) -> None:
        """The job's end is decided: ENDING, with its final record (shown once committed)."""
        self.advance(Phase.ENDING)
        self.final = final

    def end_committed(self) -> job_pb2.Job:
        """The terminal unit is committed: ENDED; returns the record it ended with."""
        if self.final is None:
            raise self._broken("ended without a final record")
        self.advance(Phase.ENDED)
        final, self.final = self.final, None
        return final
