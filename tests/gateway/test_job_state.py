"""The live job's state machine: only the transitions job_state.TRANSITIONS lists, and the
invariants of its reports and checkpoints raise where they would break."""

from __future__ import annotations

import pytest

from livecalc.gateway.v1 import job_pb2
from services.gateway.events import EventLog
from services.gateway.job_state import TRANSITIONS, JobStateError, Phase
from services.gateway.live_job import LiveJob
from services.gateway.planner import plan
from services.gateway.store import ResultKey
from services.valuation.blocks import BLOCK_SIZE
from services.valuation.scenarios import ScenarioParams


def live(phase: Phase = Phase.SUBMITTED) -> LiveJob:
    job = job_pb2.Job(job_id="j")
    return LiveJob(
        job=job,
        log=EventLog("j"),
        plan=plan(4 * BLOCK_SIZE, slots=1, scenarios=1, chunk_blocks=1),
        params=ScenarioParams(count=1, seed=1),
        key=ResultKey("p", "v", "s"),
        rows=4 * BLOCK_SIZE,
        phase=phase,
    )


@pytest.mark.parametrize("start", list(Phase))
@pytest.mark.parametrize("to", list(Phase))
def test_only_listed_transitions_are_allowed(start: Phase, to: Phase) -> None:
    job = live(start)
    if to in TRANSITIONS[start]:
        job.advance(to)
        assert job.phase is to
    else:
        with pytest.raises(JobStateError, match=f"from {start.value} to {to.value}"):
            job.advance(to)
        assert job.phase is start


def test_the_ends_are_final_and_every_phase_can_reach_one() -> None:
    for end in (Phase.ENDED, Phase.DROPPED, Phase.STOPPED):
        assert not TRANSITIONS[end]
    for phase in Phase:
        seen, todo = {phase}, [phase]
        while todo:
            for nxt in TRANSITIONS[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        assert seen & {Phase.ENDED, Phase.DROPPED, Phase.STOPPED}, phase


def test_an_end_is_shown_only_once_committed_and_a_job_ends_once() -> None:
    job = live(Phase.RUNNING)
    final = job_pb2.Job(job_id="j", state=job_pb2.JobState.JOB_STATE_SUCCEEDED)
    job.end(final)
    assert job.phase is Phase.ENDING and job.final is final
    with pytest.raises(JobStateError):
        job.end(final)  # a second end
    assert job.end_committed() is final and job.final is None and job.phase is Phase.ENDED
    with pytest.raises(JobStateError):
        job.end_committed()
    job.stop()  # the gateway stopping after the job ended leaves it ended
    assert job.phase is Phase.ENDED


def test_progress_never_steps_back() -> None:
    job = live(Phase.RUNNING)
    job.note_reported(2)
    job.note_reported(2)  # a wait's news at the same block
    with pytest.raises(JobStateError, match="stepping back"):
        job.note_reported(1)
    assert job.reported_blocks == 2


def test_a_checkpoint_never_steps_back_nor_runs_ahead_of_the_progress_it_is_written_with() -> None:
    job = live(Phase.RUNNING)
    job.note_checkpoint(0, with_progress=False)  # the job's first, before any progress
    job.note_reported(3)
    job.note_checkpoint(3, with_progress=True)
    with pytest.raises(JobStateError, match="ahead of the 3 reported"):
        job.note_checkpoint(4, with_progress=True)
    with pytest.raises(JobStateError, match="stepping back"):
        job.note_checkpoint(2, with_progress=False)
    job.note_checkpoint(4, with_progress=False)  # the latest fold when the gateway stops
    assert job.checkpointed_block == 4


def test_only_an_active_job_is_failed_by_a_write_that_did_not_commit() -> None:
    error = OSError("disk full")
    assert not live(Phase.SUBMITTED).fail_write(error)  # not recorded yet: it is dropped instead
    running = live(Phase.RUNNING)
    assert running.fail_write(error) and running.store_error is error
    assert not running.fail_write(OSError("again"))  # the first failure is the one reported
    assert live(Phase.RESUMED).fail_write(error)
    ending = live(Phase.RUNNING)
    ending.end(job_pb2.Job(job_id="j"))
    assert not ending.fail_write(error)  # its end is written again until it commits
