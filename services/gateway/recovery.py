"""What a starting gateway does with the jobs a previous process left queued or running.

Each such job ends up in exactly one of three ways (`JobManager.recover` sorts them):

- its event log holds its terminal event: it has ended, whatever its record says (a store
  written before a job's end was one unit): the record is set from the log
  (`record_logged_end`), never resumed, never recomputed;
- it has a checkpoint of its fold and is not a preview (`resumable`): it resumes from the
  checkpoint (`resumed_job` rebuilds its live state: only forward progress, statistics after the
  last reported, its event log going on from the highest persisted sequence; a job with
  variants goes on in the pass it was in, with the passes it had finished);
- otherwise it cannot resume: FAILED (ABORTED), in one unit with its error event (`abort`).
"""

from __future__ import annotations

import logging
from typing import Final

import numpy as np

from livecalc.gateway.v1 import job_pb2
from services.gateway.events import EventLog, now_timestamp
from services.gateway.inputs import scenario_params
from services.gateway.job_kind import kind_of
from services.gateway.job_state import Phase
from services.gateway.live_job import LiveJob, S
from services.gateway.planner import plan
from services.gateway.results import with_parts
from services.gateway.scenario_sets import result_scenarios_key
from services.gateway.store import Checkpoint, JobStore, ResultKey
from services.gateway.variants import VariantPackage
from services.valuation.arrays import F64

log = logging.getLogger(__name__)

RESTART_MESSAGE: Final = "the gateway stopped while this job was running; it was not resumed: submit it again"
#: The terminal state each kind of terminal event records.
TERMINAL_STATES: Final = {
    "result": S.JOB_STATE_SUCCEEDED,
    "error": S.JOB_STATE_FAILED,
    "cancelled": S.JOB_STATE_CANCELLED,
}


def abort(store: JobStore, job: job_pb2.Job, logbook: EventLog) -> None:
    """End a job left running that cannot resume: FAILED (ABORTED), in one unit."""
    job.state = S.JOB_STATE_FAILED
    job.end_time.CopyFrom(now_timestamp())
    job.error.CopyFrom(job_pb2.JobError(code="ABORTED", message=RESTART_MESSAGE))
    with store.transaction():
        store.drop_checkpoint(job.job_id)
        store.put_job(job)
        logbook.append(error=job.error)


def record_logged_end(
    store: JobStore, job: job_pb2.Job, terminal: job_pb2.JobEvent, events: list[job_pb2.JobEvent]
) -> None:
    """The record of a job whose log ended while its record did not: state, end and result from
    the terminal event, and its result row when it is missing."""
    kind = str(terminal.WhichOneof("event"))
    job.state = TERMINAL_STATES[kind]
    job.end_time.CopyFrom(terminal.time)
    if kind == "result":
        job.result.CopyFrom(terminal.result)
    elif kind == "error":
        job.error.CopyFrom(terminal.error)
    with store.transaction():
        store.drop_checkpoint(job.job_id)
        values = _logged_values(terminal, events) if kind == "result" else None
        if values is not None and store.result_values(job.job_id) is None:
            result = terminal.result
            store.put_result(
                job.job_id,
                ResultKey(
                    job.spec.package_hash,
                    result.dataset_version,
                    result_scenarios_key(job.spec.scenarios, scenario_params(job.spec.scenarios, {})),
                ),
                preview=result.preview,
                mean=result.statistics.mean,
                end_ns=terminal.time.ToNanoseconds(),
                values=values,
            )
        store.put_job(job)
    log.warning(
        "a job's log had ended but not its record: recorded as its log says, not resumed",
        extra={"fields": {"job": job.job_id, "state": kind}},
    )


def _logged_values(terminal: job_pb2.JobEvent, events: list[job_pb2.JobEvent]) -> F64 | None:
    """The result's values as its log holds them (in the result event or its parts): f64 [K][N]
    for every output, [1][N] where only the primary's are (a log from before outputs), None
    when the log lacks them."""
    parts = [e.result_part for e in events if e.WhichOneof("event") == "result_part"]
    try:
        result = with_parts(terminal.result, parts)
    except ValueError:
        return None
    n = result.statistics.scenario_count
    rows = [list(o.values) for o in result.outputs]
    if rows and all(len(r) == n for r in rows):
        return np.asarray(rows, dtype=np.float64)
    primary = next((list(o.values) for o in result.outputs if o.primary), [])
    return np.asarray([primary], dtype=np.float64) if primary and len(primary) == n else None


def resumable(job: job_pb2.Job, cp: Checkpoint) -> bool:
    """Whether ``job`` can resume from ``cp``: a kind that is checkpointed, and for a job with
    variants a checkpoint that records every pass's package, with a pass still to run."""
    if not kind_of(job.spec).checkpointed:
        return False
    if not job.spec.variants:
        return not cp.packages
    passes = 1 + len(job.spec.variants)
    return len(cp.packages) == passes and cp.packages[0] == job.spec.package_hash and len(cp.finished) < passes


def resumed_job(
    job: job_pb2.Job, logbook: EventLog, events: list[job_pb2.JobEvent], cp: Checkpoint, tenant: str
) -> LiveJob:
    """The live state of a job resuming from checkpoint ``cp``: its plan as it was made (the
    recorded chunk size), its variants' packages as the checkpoint recorded them (`resumable`
    has checked them), and what it reported before the stop, so it reports each block once."""
    params = scenario_params(job.spec.scenarios, {})  # the record holds every parameter
    live = LiveJob(
        job=job,
        log=logbook,
        plan=plan(cp.dataset_rows, slots=1, scenarios=params.count, chunk_blocks=cp.chunk_blocks),
        params=params,
        key=ResultKey(job.spec.package_hash, cp.dataset_version, result_scenarios_key(job.spec.scenarios, params)),
        rows=cp.dataset_rows,
        tenant=tenant,
        kind=kind_of(job.spec),
        phase=Phase.RESUMED,
        resume=cp,
        variants=tuple(
            VariantPackage(v.name, package_hash)
            for v, package_hash in zip(job.spec.variants, cp.packages[1:], strict=True)
        ),
    )
    progress = [e.progress for e in events if e.WhichOneof("event") == "progress"]
    if progress:
        last = max(progress, key=lambda p: p.blocks_done)
        live.job.progress.CopyFrom(last)
        live.reported_blocks = last.blocks_done
    live.reported_statistics_rows = max(
        (e.statistics.policies_done for e in events if e.WhichOneof("event") == "statistics"), default=0
    )
    return live
