"""The life of a job in this gateway: its phases and the transitions between them, in one place.

A job's record carries its `JobState` (QUEUED, RUNNING, SUCCEEDED …: what clients see, and what a
restarted gateway reads); the gateway's own working state of a job (`LiveJob`, live_job.py) goes
through these phases, which also say what may still be written for it:

    SUBMITTED ─┬─> RUNNING ──> ENDING ──> ENDED
    RESUMED ───┘      │          ▲
    SUBMITTED ────────┼──────────┤   (cancelled before it ran; a resumed job that cannot go on)
    SUBMITTED ──> DROPPED        │   (its first record was never committed: no one knows it)
    any but ENDED/DROPPED ──> STOPPED (the gateway is stopping: a checkpointed job resumes next start)

- SUBMITTED: accepted by SubmitJob; its first record and accepted event are being committed.
- RESUMED: rebuilt from its checkpoint by a starting gateway (recovery.py).
- RUNNING: its task checks the dataset, dispatches the chunks, folds and reports; a write of it
  that the store cannot commit fails it (only in RESUMED and RUNNING).
- ENDING: its terminal unit (final record, result row, terminal event) is written, not yet
  committed; readers still see the job running (a restarted gateway would).
- ENDED: the terminal unit is committed; the job has left the live set (reads go to the store).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Final


class Phase(enum.Enum):
    SUBMITTED = "submitted"
    RESUMED = "resumed"
    RUNNING = "running"
    ENDING = "ending"
    ENDED = "ended"
    DROPPED = "dropped"
    STOPPED = "stopped"


#: Every transition a live job may make; anything else is a bug (`JobStateError`).
TRANSITIONS: Final[Mapping[Phase, frozenset[Phase]]] = {
    Phase.SUBMITTED: frozenset({Phase.RUNNING, Phase.ENDING, Phase.DROPPED, Phase.STOPPED}),
    Phase.RESUMED: frozenset({Phase.RUNNING, Phase.ENDING, Phase.STOPPED}),
    Phase.RUNNING: frozenset({Phase.ENDING, Phase.STOPPED}),
    Phase.ENDING: frozenset({Phase.ENDED, Phase.STOPPED}),
    Phase.ENDED: frozenset(),
    Phase.DROPPED: frozenset(),
    Phase.STOPPED: frozenset(),
}
#: Phases in which the job's task is (or is about to be) running it: a failed write fails it.
ACTIVE: Final = frozenset({Phase.RESUMED, Phase.RUNNING})


class JobStateError(RuntimeError):
    """A live job was asked to do what its phase does not allow: a bug in the gateway (the job's
    task fails it INTERNAL, with the traceback logged)."""


def check_transition(job_id: str, current: Phase, to: Phase) -> None:
    """`JobStateError` unless ``current`` → ``to`` is one of `TRANSITIONS`."""
    if to not in TRANSITIONS[current]:
        raise JobStateError(f"job {job_id}: no transition from {current.value} to {to.value}")
