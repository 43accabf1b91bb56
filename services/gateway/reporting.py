"""A running job's reports: coalesced progress, running statistics and fold checkpoints.

Progress goes out when the fold passes the last block reported (and when a wait for an engine
starts, ends, and about every second it lasts), at most every `progress_seconds` once the first
blocks are reported, which go out within `FIRST_PROGRESS_POLL_SECONDS` of their fold, running statistics about every
`statistics_seconds` and once more, exact, just before the progress event that reports the fold
complete (so the last running mean a client shows is the result's mean), and the fold is
checkpointed at most every `checkpoint_seconds`, in one transaction with the progress event
that reports it (or alone when the fold has not moved since), so a checkpoint never runs ahead
of the reported progress and a restarted gateway resumes the job where its clients last saw it.
A job with variants checkpoints the running pass's fold; when a pass ends (`pass_finished`) its
total is recorded in one transaction with the progress that reports it and the next pass's
first checkpoint, so a restarted gateway resumes the pass it was in with the others' totals.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Final

from livecalc.gateway.v1 import job_pb2
from services.gateway.config import JobConfig
from services.gateway.live_job import LiveJob
from services.gateway.results import running_statistics
from services.gateway.store import Checkpoint, JobStore, PassTotal
from services.gateway.store_writer import Written

#: How often a running job is looked at until its first blocks are reported.
FIRST_PROGRESS_POLL_SECONDS: Final = 0.02


class JobReporter:
    """Reports of the live jobs of one gateway, written to ``store``; ``watch(job_id, written)``
    is told of every checkpoint write (a write that fails fails the job)."""

    def __init__(self, store: JobStore, config: JobConfig, watch: Callable[[str, Written], None]) -> None:
        self.store, self.config, self.watch = store, config, watch

    def progress(self, live: LiveJob) -> job_pb2.JobProgress:
        """The job's progress now (the fold, the engines on it, its wait for one)."""
        disp = live.dispatcher
        return job_pb2.JobProgress(  # a job with variants counts every pass's blocks and policies
            blocks_done=live.blocks_done,
            blocks_total=live.plan.blocks_total * live.passes,
            policies_done=live.policies_done,
            policies_total=live.plan.rows * live.passes,
            engines_active=len(disp.engines_active) if disp else 0,
            elapsed_seconds=time.monotonic() - live.started,
            waiting_seconds=disp.waiting_seconds if disp else 0.0,
            waiting_reason=disp.waiting_reason if disp and disp.waiting_seconds else "",
        )

    def report(self, live: LiveJob) -> None:
        """A progress event when the fold passed the last one reported (and the first one); a
        checkpoint of the fold when one is due, in the same transaction.

        Only forward: a resumed job redoing blocks it reported before the stop stays silent
        until it passes them (its checkpoints go on meanwhile)."""
        fold = live.fold
        done = live.blocks_done
        waiting = live.dispatcher.waiting_seconds if live.dispatcher else 0.0
        # a wait is news when it starts, ends and about every second it lasts (but progress
        # never steps back: a resumed job behind what it reported before the stop stays silent)
        news = (waiting > 0) != (live.reported_waiting > 0) or waiting >= live.reported_waiting + 1.0
        report = done > live.reported_blocks or (news and done >= live.reported_blocks)
        due = (
            fold is not None
            and not fold.complete
            and live.pass_blocks + fold.folded_blocks > live.checkpointed_block
            and live.kind.checkpointed
            and time.monotonic() - live.checkpointed_at >= self.config.checkpoint_seconds
        )
        if not (report or due):
            return
        # the fold is complete: its statistics are the result's, and they go out before the
        # progress event that says so (a preview's ± is its result's, not the scenarios' alone)
        final = (
            report
            and fold is not None
            and fold.complete
            and live.outputs is not None
            and live.kind.running_statistics
            and not live.finished  # a variant's pass: statistics describe the base
            and live.reported_statistics_rows < fold.rows
        )
        if report:
            live.note_reported(max(live.reported_blocks, done))
            live.reported_waiting = waiting
            live.job.progress.CopyFrom(self.progress(live))
        with self.store.transaction():
            if due:
                self.checkpoint(live, with_progress=True)
            if final:
                assert fold is not None and live.outputs is not None
                live.reported_statistics_rows = fold.rows
                live.log.append(statistics=running_statistics(fold.total(), fold.rows, fold.rows, live.outputs))
            if report:
                live.log.append(progress=live.job.progress)

    def first_checkpoint(self, live: LiveJob) -> None:
        """The job's first checkpoint as it starts running (or resumes); a new job with variants
        records its passes with it (their package hashes: a restarted gateway resumes them)."""
        with self.store.transaction():
            if live.resume is None and live.variants and live.kind.checkpointed:
                for index, package_hash in enumerate(live.packages):
                    self.watch(live.job_id, self.store.put_pass(live.job_id, index, package_hash))
            self.checkpoint(live)

    def pass_finished(self, live: LiveJob) -> None:
        """The pass before the running one has ended (`LiveJob.finish_pass`; the running pass's
        fold is new): its total and steps, and the new pass's first checkpoint, in one
        transaction (the caller's, with the progress that reports the pass done)."""
        done = live.finished[-1]
        index = len(live.finished) - 1
        with self.store.transaction():
            if live.kind.checkpointed:
                total = PassTotal(done.fold.steps, done.fold.total())
                self.watch(live.job_id, self.store.put_pass(live.job_id, index, live.packages[index], total))
                self.checkpoint(live)

    def checkpoint(self, live: LiveJob, *, with_progress: bool = False) -> None:
        """Write the running pass's fold checkpoint (a preview has none), when the fold has one
        to give; ``with_progress``: in the transaction of a progress report, which it never runs
        ahead of (the others: the job's first, at its start, a pass's first, and its latest fold
        when the gateway stops)."""
        fold = live.fold
        if fold is None or not live.kind.checkpointed:
            return
        state = fold.checkpoint()
        if state is None:
            return  # a folded piece's steps are on their way: the next tick checkpoints
        written = self.store.put_checkpoint(
            Checkpoint(
                live.job.job_id,
                live.key.dataset_version,
                live.rows,
                live.plan.chunk_blocks,
                state.next_block,
                state.steps,
                state.total,
            )
        )
        self.watch(live.job.job_id, written)
        live.note_checkpoint(live.pass_blocks + state.next_block, with_progress=with_progress)

    async def tick(self, live: LiveJob) -> None:
        """Coalesced progress and about-once-a-second running statistics."""
        cfg = self.config
        next_stats = time.monotonic() + cfg.statistics_seconds
        while True:
            # until blocks are first reported, look often: the first work done is news at once
            # (a client sees the job move after a block's time, not a tick later); then coalesced
            first = live.reported_blocks <= 0
            pause = cfg.progress_seconds
            await asyncio.sleep(min(FIRST_PROGRESS_POLL_SECONDS, pause) if first else pause)
            fold = live.fold
            if fold is None or live.outputs is None:
                continue
            self.report(live)
            if not live.kind.running_statistics or live.finished:
                continue  # a preview's only ± is its result's (its groups are not the dataset's blocks)
            if time.monotonic() >= next_stats and fold.rows_done > live.reported_statistics_rows and not fold.complete:
                estimate = fold.estimate()
                if estimate is not None:
                    live.reported_statistics_rows = fold.rows_done
                    next_stats = time.monotonic() + cfg.statistics_seconds
                    live.log.append(statistics=running_statistics(estimate, fold.rows_done, fold.rows, live.outputs))
