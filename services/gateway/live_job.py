"""One job as this gateway runs it (`LiveJob`): its phase and the invariants of its state.

A `LiveJob` is the gateway's working state of a job between its submission (or its resumption
after a restart) and the moment its end is committed to the store: the record readers see, the
event log, the plan, the fold and the dispatcher, and what was last reported. Its phase
(job_state.py) changes only through `advance`, which refuses a transition the table does not
allow; the invariants below are checked where they can break, and a broken one raises
`JobStateError` (a bug: the job fails INTERNAL):

- progress never steps back: `reported_blocks` only grows (`note_reported`), so a resumed job
  reports each block once (it stays silent until it passes what it reported before the stop);
- checkpoints only go forward (`note_checkpoint`; a job with variants counts its position over
  every pass, as its progress does), and one written with a progress report never runs ahead
  of the progress reported (a restarted gateway resumes where clients last saw it);
- a job's passes run in order, each to its end: a pass joins `finished` only with its fold
  complete, and only while a variant's pass follows it (`finish_pass`);
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
from services.gateway.provenance import EngineBuild
from services.gateway.store import Checkpoint, ResultKey
from services.gateway.store_writer import Written
from services.gateway.variants import VariantPackage
from services.valuation.interface.declaration import Outputs
from services.valuation.scenarios import ScenarioParams

S = job_pb2.JobState


@dataclass(frozen=True)
class FinishedPass:
    """A pass of the job's plan that has ended: its complete fold and the builds of the engines
    whose partials it folded (none for a pass that ended before a restart: the store keeps its
    total and steps, not its engines)."""

    fold: JobFold
    builds: frozenset[EngineBuild] = frozenset()


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
    #: The job's variants (JobSpec.variants, their derived packages; a resumed job's from its
    #: checkpoint), each valued after the base in a pass of its own over the same plan.
    #: `finished` holds the passes done, the base's first (a resumed job's include those done
    #: before the stop): `fold` and `dispatcher` are the running pass's.
    variants: tuple[VariantPackage, ...] = ()
    finished: list[FinishedPass] = field(default_factory=list)

    @property
    def job_id(self) -> str:
        return self.job.job_id

    @property
    def passes(self) -> int:
        """Valuations of the plan the job makes: the base and one per variant."""
        return 1 + len(self.variants)

    @property
    def package_hash(self) -> str:
        """The package the running pass values: the base's, then each variant's."""
        return self.variants[len(self.finished) - 1].package_hash if self.finished else self.job.spec.package_hash

    @property
    def packages(self) -> tuple[str, ...]:
        """Every pass's package hash, the base's first."""
        return (self.job.spec.package_hash, *(v.package_hash for v in self.variants))

    @property
    def pass_blocks(self) -> int:
        """Blocks of the passes before the running one (where its block 0 stands in the job's progress)."""
        return len(self.finished) * self.plan.blocks_total

    @property
    def blocks_done(self) -> int:
        """Blocks folded over every pass so far (progress counts each pass's blocks)."""
        return self.pass_blocks + (self.fold.folded_blocks if self.fold else 0)

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

    def note_checkpoint(self, position: int, *, with_progress: bool) -> None:
        """A checkpoint at ``position`` (its next block, counted over every pass as progress
        counts blocks) is written: never behind the last one, and (written with a progress
        report) never ahead of the progress reported."""
        if position < self.checkpointed_block:
            raise self._broken(f"checkpoint stepping back from block {self.checkpointed_block} to {position}")
        if with_progress and position > self.reported_blocks:
            raise self._broken(f"checkpoint at block {position} ahead of the {self.reported_blocks} reported")
        self.checkpointed_at = time.monotonic()
        self.checkpointed_block = position

    def finish_pass(self, builds: frozenset[EngineBuild] = frozenset()) -> FinishedPass:
        """The running pass has ended with its fold complete: it joins `finished`, and the next
        variant's pass is to run (the last pass ends the job instead). `fold` and `dispatcher`
        are left for the caller to set to the next pass's."""
        if self.fold is None or not self.fold.complete:
            raise self._broken(f"pass {len(self.finished)} finished with its fold incomplete")
        if len(self.finished) >= len(self.variants):
            raise self._broken(f"a pass after the last of {self.passes}")
        done = FinishedPass(self.fold, builds)
        self.finished.append(done)
        return done

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
