"""Running one live job to its end, and writing that end until the store has it.

`JobRunner.run` is the task of a job (submitted, or resumed by a starting gateway): it waits for
the job's first record to commit (a job never recorded is dropped: no reader and no restarted
gateway knows it), checks the dataset is still the version it validated, dispatches the chunks
(only those after the checkpoint for a resumed job), folds the partials, reports progress,
running statistics and checkpoints (reporting.py), values each of the job's variants in a pass
of its own after the base (`_passes`: same plan, dataset version and scenarios, the variant's
package; a resumed job goes on in the pass it was in, the passes it had finished restored from
the store), and ends the job with exactly one of result, error or cancelled. The end
is one unit in the store (`_write_end`: checkpoint dropped, result row, final record, terminal
event); readers see it once it is committed (`finish`), and while
the store cannot commit it, it is written again every `RECORD_RETRY_SECONDS`.

Phases and their transitions are job_state.py's; each step below moves the job through them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

from google.protobuf.timestamp_pb2 import Timestamp

from livecalc.gateway.v1 import job_pb2
from services.common.auth.service import ServiceCredentials
from services.common.errors import FailedPrecondition, LivecalcError
from services.common.tasks import cancel_and_wait
from services.gateway.chunk_requests import ChunkRequests, job_part
from services.gateway.config import JobConfig
from services.gateway.dispatcher import Dispatcher
from services.gateway.engines import EnginePool
from services.gateway.events import now_timestamp
from services.gateway.fold import FoldState, JobFold
from services.gateway.inputs import Datasets, PackageConfigs
from services.gateway.job_state import Phase
from services.gateway.live_job import FinishedPass, LiveJob, S
from services.gateway.metrics import GatewayMetrics, state_label
from services.gateway.planner import Plan, resumed_plan
from services.gateway.provenance import provenance
from services.gateway.reporting import JobReporter
from services.gateway.results import final_result, split_result
from services.gateway.scenario_sets import mark_result
from services.gateway.store import JobStore
from services.gateway.store_writer import StoreClosed, Written
from services.gateway.variants import variant_results

log = logging.getLogger(__name__)

#: How often an ended job whose end the store could not commit tries again.
RECORD_RETRY_SECONDS: Final = 1.0


class JobRunner:
    """Runs and ends the jobs in ``live`` (the live set `JobManager` owns: an ended job leaves it)."""

    def __init__(
        self,
        live: dict[str, LiveJob],
        store: JobStore,
        pool: EnginePool,
        datasets: Datasets,
        configs: PackageConfigs,
        *,
        metrics: GatewayMetrics,
        config: JobConfig,
        credentials: ServiceCredentials,
    ) -> None:
        self.live, self.store, self.pool, self.datasets, self.configs = live, store, pool, datasets, configs
        self.metrics, self.config, self.credentials = metrics, config, credentials
        self.reporter = JobReporter(store, config, self.watch)

    async def run(self, live: LiveJob) -> None:
        job = live.job
        ticker: asyncio.Task[None] | None = None
        try:
            if live.recorded is not None:
                try:
                    await asyncio.shield(live.recorded)
                except sqlite3.Error as exc:
                    # never recorded: no reader and no restarted gateway knows the job
                    log.warning(
                        "job dropped: the store could not record it",
                        extra={"fields": {"job": job.job_id, "error": str(exc)}},
                    )
                    live.advance(Phase.DROPPED)
                    self.live.pop(job.job_id, None)
                    self.metrics.jobs.labels(state=state_label(job.state)).dec()
                    return
                live.recorded = None
            live.advance(Phase.RUNNING)  # from here on a write that fails fails the job
            await self._start(live)
            assert live.dispatcher is not None
            ticker = asyncio.get_running_loop().create_task(self.reporter.tick(live))
            await self._passes(live)
            ticker.cancel()
            # cached since submit (or since _start, for a resumed job): its name and version
            self._succeed(live, await self.configs.get(job.spec.package_hash, live.tenant))
        except asyncio.CancelledError:
            if live.store_error is not None:
                self.failed(
                    live,
                    "UNAVAILABLE",
                    f"the job store could not record the job ({live.store_error}); submit it again",
                )
            elif live.cancel_reason is None:
                raise  # the gateway is stopping
            else:
                self.cancelled(live)
        except LivecalcError as exc:
            self.failed(live, exc.code.name, exc.details())
        except Exception as exc:
            log.exception("job failed with a bug", extra={"fields": {"job": job.job_id}})
            self.failed(live, "INTERNAL", f"internal error: {type(exc).__name__}: {exc}")
        finally:
            if ticker is not None:
                await cancel_and_wait(ticker)
            if live.log.closed:
                await asyncio.shield(self.finished(live))  # an ended job is read from the store

    async def _start(self, live: LiveJob) -> None:
        """Check the dataset, build the fold and the dispatcher, and record the job running."""
        job = live.job
        current = await self.datasets.get(job.spec.dataset_id, live.tenant)
        if current.version != live.key.dataset_version:
            raise FailedPrecondition(
                f"dataset {job.spec.dataset_id} changed after the job was accepted "
                f"(version {live.key.dataset_version} → {current.version})",
            )
        if live.outputs is None:  # a resumed job: its package says
            live.outputs = await self.configs.outputs(job.spec.package_hash, live.tenant)
        todo = live.plan
        if live.resume is not None:
            for done in live.resume.finished:  # the passes it had finished before the stop
                fold = self._fold(live)
                fold.resume(FoldState(live.plan.blocks_total, done.total, done.steps))
                live.finished.append(FinishedPass(fold))
            todo = resumed_plan(live.plan, live.resume.next_block)
        live.fold = self._fold(live)
        if live.resume is not None:
            live.fold.resume(FoldState(live.resume.next_block, live.resume.total, live.resume.steps))
        live.dispatcher = self._dispatcher(live, live.package_hash, todo)
        if live.resume is None:
            self.metrics.transition(job.state, S.JOB_STATE_RUNNING)
            job.state = S.JOB_STATE_RUNNING
            job.start_time.CopyFrom(now_timestamp())
            live.started = time.monotonic()
        else:
            # elapsed time runs on from the job's start (the stop included), never back
            since = job.progress.elapsed_seconds
            if job.HasField("start_time"):
                since = max(since, time.time() - job.start_time.ToNanoseconds() / 1e9)
            live.started = time.monotonic() - since
        self.watch(job.job_id, self.store.put_job(job))
        self.reporter.first_checkpoint(live)  # from here on a restarted gateway resumes the job (not a preview)
        self.reporter.report(live)

    def _fold(self, live: LiveJob) -> JobFold:
        assert live.outputs is not None
        return JobFold(
            live.plan.rows,
            live.plan.blocks_total,
            live.params.count,
            outputs=len(live.outputs.names),
            block_rows=live.plan.block_rows,
            keep_means=live.kind.keeps_block_means,
        )

    def _dispatcher(self, live: LiveJob, package_hash: str, todo: Plan) -> Dispatcher:
        """The dispatcher of one pass: ``todo`` of the job's plan with ``package_hash`` (the
        base's, or a variant's), into the job's running fold."""
        assert live.fold is not None
        part = job_part(
            live.job,
            dataset_version=live.key.dataset_version,
            package_address=self.config.package_address,
            time_limit_seconds=self.config.chunk_time_limit_seconds,
        )
        part.package_hash = package_hash
        slots = max(1, self.pool.total_slots)
        return Dispatcher(
            self.pool,
            ChunkRequests(part, live.kind, live.plan),
            todo,
            live.fold,
            config=self.config.dispatch,
            metrics=self.metrics,
            window_blocks=self.config.window_chunks_per_slot * slots * live.plan.chunk_blocks,
            credentials=self.credentials,
            tenant=live.tenant,
        )

    async def _passes(self, live: LiveJob) -> None:
        """Run the pass `_start` set up (the base's, or the one a resumed job was in), then each
        remaining variant's package over the whole plan, one pass after the other, with the
        job's dataset version and scenarios; progress runs on over the passes (cancelling the
        job's task cancels the running one)."""
        assert live.dispatcher is not None
        await live.dispatcher.run()
        for variant in live.variants[len(live.finished) :]:
            assert live.dispatcher is not None
            # no await from here to the next pass's run: a stopping gateway checkpoints one pass or the other
            with self.store.transaction():
                self.reporter.report(live)  # the pass's last progress (and the base's exact statistics)
                live.finish_pass(frozenset(live.dispatcher.builds))
                live.fold = self._fold(live)
                live.dispatcher = self._dispatcher(live, variant.package_hash, live.plan)
                self.reporter.pass_finished(live)
            log.info("variant pass started", extra={"fields": {"job": live.job_id, "variant": variant.name}})
            await live.dispatcher.run()

    # writes that fail

    def event_failed(self, event: job_pb2.JobEvent, error: BaseException) -> None:
        self._write_failed(event.job_id, error)

    def watch(self, job_id: str, written: Written) -> None:
        """Fail the job if this write of it is not committed."""
        loop = asyncio.get_running_loop()

        def done(future: Written) -> None:
            if not future.cancelled() and (error := future.exception()) is not None:
                with contextlib.suppress(RuntimeError):  # the loop has closed
                    loop.call_soon_threadsafe(self._write_failed, job_id, error)

        written.add_done_callback(done)

    def _write_failed(self, job_id: str, error: BaseException) -> None:
        """A write of a running job was not committed: the job fails (its task is cancelled and
        ends it FAILED, UNAVAILABLE). Before the job is recorded `run` drops it instead; once
        it has ended, `finish` writes its end again."""
        live = self.live.get(job_id)
        if live is None or not live.fail_write(error):
            return
        if live.task is not None and not live.task.done():
            live.task.cancel()

    # the end

    def finished(self, live: LiveJob) -> asyncio.Task[None]:
        """The task that sees the ended job's terminal unit committed (started once)."""
        if live.finishing is None:
            live.finishing = asyncio.get_running_loop().create_task(
                self._finish(live), name=f"job {live.job.job_id} end"
            )
        return live.finishing

    async def _finish(self, live: LiveJob) -> None:
        """Wait for the terminal unit; while the store cannot commit it, write it again every
        `RECORD_RETRY_SECONDS` (with every event held back by a failed write). Once committed,
        readers see the end, and the job leaves the live set (its reads go to the store)."""
        job_id = live.job.job_id
        while True:
            try:
                if live.ended is None:
                    return
                await asyncio.wrap_future(live.ended)
                if not live.log.failed:
                    break  # an earlier event's batch may have failed after all: write it again
            except StoreClosed:
                return  # the gateway is stopping
            except sqlite3.Error as exc:
                log.warning(
                    "a job's end is not recorded yet; writing it again",
                    extra={"fields": {"job": job_id, "error": str(exc), "retry_s": RECORD_RETRY_SECONDS}},
                )
                await asyncio.sleep(RECORD_RETRY_SECONDS)
            try:
                live.ended = self._write_end(live)
            except StoreClosed:
                return
        final = live.end_committed()
        self.metrics.transition(live.job.state, final.state)
        self.metrics.job_ended(final)
        live.job.CopyFrom(final)
        self.live.pop(job_id, None)

    def _write_end(self, live: LiveJob, events: Callable[[], None] | None = None) -> Written:
        """The terminal unit: checkpoint dropped, result row, final record, the events held back
        by failed writes, then `events` (the terminal one last)."""
        assert live.final is not None
        job_id = live.job.job_id
        with self.store.transaction() as unit:
            self.store.drop_checkpoint(job_id)
            if live.result_row is not None:
                self.store.put_result(job_id, **live.result_row)
            self.store.put_job(live.final, live.idempotency_key, live.tenant, live.request)
            live.log.rewrite()
            if events is not None:
                events()
        return unit

    def _succeed(self, live: LiveJob, package_config: Mapping[str, Any]) -> None:
        assert live.fold is not None and live.outputs is not None and live.dispatcher is not None
        self.reporter.report(live)  # the last progress (100 %) always precedes the result
        passes = [*live.finished, FinishedPass(live.fold, frozenset(live.dispatcher.builds))]
        fold, variants = passes[0].fold, [p.fold for p in passes[1:]]
        job, outputs, kind = live.job, live.outputs, live.kind
        builds = set().union(*(p.builds for p in passes))
        values = kind.values(fold.total(), live.rows, live.plan)  # f64 [K][N], the declared outputs' order
        full = self.store.latest_full_mean(live.key) if kind.preview else None
        difference, uncertainty = kind.figures(
            values, fold, outputs.primary, live.rows, full[1] if full is not None else None
        )
        result = final_result(
            values,
            outputs,
            policy_count=live.plan.rows,
            dataset_version=live.key.dataset_version,
            package_hash=job.spec.package_hash,
            steps=sum(p.fold.steps for p in passes),
            elapsed_seconds=time.monotonic() - live.started,
            preview=kind.preview,
            preview_relative_difference=difference,
            preview_uncertainty=uncertainty,
        )
        mark_result(result, job.spec.scenarios)
        end = now_timestamp()
        result.provenance.CopyFrom(
            provenance(
                job,
                package_config,
                dataset_version=live.key.dataset_version,
                engines=builds,
                finish_time=end,
            )
        )
        result.variants.extend(
            variant_results(
                live.variants, [kind.values(f.total(), live.rows, live.plan) for f in variants], result, outputs
            )
        )
        live.result_row = {
            "key": live.key,
            "preview": kind.preview,
            "mean": result.statistics.mean,
            "end_ns": end.ToNanoseconds(),
            "values": values,
        }
        parts, slim = split_result(result)
        self._end(live, S.JOB_STATE_SUCCEEDED, result=slim, end=end, parts=parts)
        log.info(
            "job succeeded",
            extra={
                "fields": {"job": job.job_id, "hash": result.result_hash, "elapsed_s": round(result.elapsed_seconds, 3)}
            },
        )

    def failed(self, live: LiveJob, code: str, message: str) -> None:
        if live.log.closed:
            return
        log.info("job failed", extra={"fields": {"job": live.job.job_id, "code": code, "message": message}})
        self._end(live, S.JOB_STATE_FAILED, error=job_pb2.JobError(code=code, message=message))

    def cancelled(self, live: LiveJob) -> None:
        if live.log.closed:
            return
        self._end(live, S.JOB_STATE_CANCELLED, cancelled=job_pb2.JobCancelled(reason=live.cancel_reason or ""))

    def _end(
        self,
        live: LiveJob,
        state: int,
        *,
        result: job_pb2.JobResult | None = None,
        error: job_pb2.JobError | None = None,
        cancelled: job_pb2.JobCancelled | None = None,
        end: Timestamp | None = None,
        parts: Sequence[job_pb2.JobResultPart] = (),
    ) -> None:
        """Close the log with its one terminal event (after the result's parts) and record the
        final state, in one unit with the result row (`_write_end`); `live.job` shows the end
        once that unit is committed (`_finish`)."""
        final = job_pb2.Job()
        final.CopyFrom(live.job)
        final.state = state  # type: ignore[assignment]
        final.end_time.CopyFrom(end if end is not None else now_timestamp())
        if result is not None:
            final.result.CopyFrom(result)
        elif error is not None:
            final.error.CopyFrom(error)
        elif cancelled is not None:
            final.cancel_reason = cancelled.reason
        live.end(final)

        def events() -> None:
            for part in parts:
                live.log.append(result_part=part)
            if result is not None:
                live.log.append(result=result)
            elif error is not None:
                live.log.append(error=error)
            else:
                live.log.append(cancelled=cancelled or job_pb2.JobCancelled())

        live.ended = self._write_end(live, events)
