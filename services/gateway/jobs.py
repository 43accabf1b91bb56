"""Jobs: submit, run, watch, cancel.

`JobManager` owns the live jobs of this gateway (`LiveJob`, live_job.py). A job is validated
(admission.py refuses what could never finish), planned on submit, recorded in the job store,
and answered with its `accepted` event; a task then runs it: checks the dataset is still the
version it validated, dispatches the chunks, folds the partials, reports progress, running
statistics and fold checkpoints (reporting.py), and closes the log with exactly one of result,
error or cancelled. Everything is written to the store as it happens, off the event loop
(`JobStore`'s writer thread). Only three steps wait for writes: start-up recovery, SubmitJob
(it answers a job's id once the job's record is committed) and an ended job (it leaves the live
set, so that reads go to the store, once its last writes are). A client is streamed an event
only once it is persisted (`EventLog`); a write the store cannot commit fails the job, whose end
is written again until it is.

A job that was running when the gateway stopped (SIGTERM or SIGKILL) resumes at the next start
from its checkpoint (recovery.py): only the blocks after it are dispatched, its event log goes
on from the last sequence (clients re-attach with WatchJob from theirs) and the result is the
uninterrupted run's: same bits, same steps (`JobFold` counts each block's steps once). The
resumed job reports each block once, and elapsed time runs on from the job's start time. A job
with no checkpoint (queued, a preview) is marked FAILED (ABORTED) with a message saying so;
submitting it again reruns it; a job whose end was written is never run again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Final

from google.protobuf.timestamp_pb2 import Timestamp

from livecalc.engine.v1 import engine_pb2, engine_service_pb2
from livecalc.gateway.v1 import job_pb2
from services.common.auth.interceptor import current_principal
from services.common.auth.service import ServiceCredentials
from services.common.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    LivecalcError,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from services.gateway.admission import DatasetRules, check_capacity
from services.gateway.dispatcher import Dispatcher
from services.gateway.engines import EnginePool
from services.gateway.events import EventLog, is_terminal, now_timestamp
from services.gateway.fold import FoldState, JobFold
from services.gateway.inputs import DataServiceDatasets, Datasets, PackageConfigs, scenario_params, scenario_spec
from services.gateway.live_job import JobConfig, LiveJob, S
from services.gateway.metrics import GatewayMetrics, state_label
from services.gateway.package_store import PackageStore, check_hash
from services.gateway.planner import Chunk, plan, preview_plan
from services.gateway.recovery import abort, record_logged_end, resumed_job
from services.gateway.reporting import JobReporter
from services.gateway.results import attach_values, final_result, split_result
from services.gateway.scenario_sets import (
    DataServiceScenarioSets,
    ScenarioSetSource,
    job_scenario_set,
    mark_result,
    result_scenarios_key,
)
from services.gateway.store import JobStore, ResultKey
from services.gateway.store_writer import StoreClosed, Written
from services.gateway.submission import limit_violations, spec_differences
from services.valuation.blocks import BLOCK_SIZE
from services.valuation.preview_error import preview_uncertainty
from services.valuation.statistics import relative_difference, statistics

log = logging.getLogger(__name__)

#: How long CancelJob waits for the job's task to wind down.
CANCEL_WAIT: Final = 5.0
#: How often an ended job whose end the store could not commit tries again.
RECORD_RETRY_SECONDS: Final = 1.0


def _retrieved(future: asyncio.Future[Any]) -> None:
    """Mark a future's outcome as seen (it is handled where it is awaited)."""
    if not future.cancelled():
        future.exception()


def new_job_id() -> str:
    return f"job-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(4)}"


class JobManager:
    def __init__(
        self,
        store: JobStore,
        pool: EnginePool,
        packages: PackageStore,
        *,
        datasets: Datasets,
        metrics: GatewayMetrics,
        config: JobConfig,
        credentials: ServiceCredentials | None = None,
        scenario_sets: ScenarioSetSource | None = None,
    ) -> None:
        self.store, self.pool, self.packages, self.datasets = store, pool, packages, datasets
        #: Where scenario sets are read at submit (scenario_sets.py): by default the data service of ``datasets``.
        self.scenario_sets = scenario_sets
        if scenario_sets is None and isinstance(datasets, DataServiceDatasets):
            self.scenario_sets = DataServiceScenarioSets(datasets)
        self.metrics, self.config = metrics, config
        #: The service token of RunChunk calls (none when auth is off).
        self.credentials = credentials or ServiceCredentials()
        self.configs = PackageConfigs(packages)
        self.rules = DatasetRules(datasets)
        self.reporter = JobReporter(store, config, self._watch)
        self._live: dict[str, LiveJob] = {}
        metrics.track_fold_lag(lambda: float(sum(j.fold.pending_blocks for j in self._live.values() if j.fold)))

    def recover(self) -> int:
        """Resume the jobs a previous process left running from their checkpoints; mark the others
        FAILED (ABORTED). A job whose log holds its terminal event has ended, whatever its record
        says: never resumed, its record is set from the log. Returns how many were resumed."""
        stale = self.store.jobs_in([S.JOB_STATE_QUEUED, S.JOB_STATE_RUNNING])
        resumed = ended = 0
        for job in stale:
            events = self.store.events(job.job_id)
            logbook = EventLog(
                job.job_id,
                sink=self.store.append_event,
                events=events,
                on_failure=self._event_failed,
                last_sequence=self.store.last_sequence(job.job_id),
            )
            terminal = next((e for e in events if is_terminal(e)), None)
            if terminal is not None:
                record_logged_end(self.store, job, terminal, events)
                ended += 1
                continue
            cp = self.store.checkpoint(job.job_id)
            if cp is None or job.spec.HasField("preview"):
                abort(self.store, job, logbook)
                continue
            live = resumed_job(job, logbook, events, cp, self.store.tenant_of(job.job_id) or "")
            self._live[job.job_id] = live
            self.metrics.transition(0, job.state)
            live.task = asyncio.get_running_loop().create_task(self._run(live), name=f"job {job.job_id}")
            resumed += 1
            log.info(
                "job resumed from its checkpoint",
                extra={"fields": {"job": job.job_id, "next_block": cp.next_block, "blocks": live.plan.blocks_total}},
            )
        # start-up: the counts below read what was just written (a store that cannot write has
        # logged it and reports itself failing; the next start tries again)
        with contextlib.suppress(sqlite3.Error):
            self.store.flush()
        self.metrics.set_job_counts(self.store.count_by_state())
        if len(stale) > resumed + ended:
            log.warning(
                "jobs left running by the previous gateway without a checkpoint marked failed",
                extra={"fields": {"count": len(stale) - resumed - ended}},
            )
        return resumed

    # submit

    async def submit(self, spec: job_pb2.JobSpec, idempotency_key: str = "") -> str:
        """Validate, plan and record a job for the caller's tenant; returns its id (an existing
        one for a key the tenant used before)."""
        tenant = current_principal().tenant
        if over := limit_violations(spec, idempotency_key):
            raise InvalidArgument("the submission is over a size limit", tuple(over))
        if idempotency_key and (existing := self._same_job(tenant, idempotency_key, spec)):
            return existing
        self._admit()
        bad = []
        if spec.chunk_blocks < 0:
            bad.append(FieldViolation("spec.chunk_blocks", "must be ≥ 0"))
        if spec.threads < 0:
            bad.append(FieldViolation("spec.threads", "must be ≥ 0"))
        if not spec.dataset_id:
            bad.append(FieldViolation("spec.dataset_id", "is required"))
        if not spec.package_hash:
            bad.append(FieldViolation("spec.package_hash", "is required"))
        if spec.HasField("scenarios") and spec.scenarios.count == 0 and not spec.scenarios.dataset_id:
            bad.append(
                FieldViolation("spec.scenarios.count", "must be ≥ 1 (leave scenarios out for the package's own)")
            )
        if spec.HasField("preview") and spec.preview.sample_rows < 1:
            bad.append(FieldViolation("spec.preview.sample_rows", "must be ≥ 1"))
        if bad:
            raise InvalidArgument("invalid job spec", tuple(bad))
        check_hash(spec.package_hash)
        await self.packages.get(spec.package_hash, tenant)  # NOT_FOUND when the tenant has not stored it
        dataset = await self.datasets.get(spec.dataset_id, tenant)  # NOT_FOUND from the data service
        configured = await self.configs.scenarios(spec.package_hash, tenant)
        outputs = await self.configs.outputs(spec.package_hash, tenant)
        scenario_set = await job_scenario_set(self.scenario_sets, self.configs, spec, tenant)
        requested = spec.scenarios if spec.HasField("scenarios") else None
        params = scenario_params(scenario_set.requested(spec.scenarios) if scenario_set else requested, configured)
        if dataset.rows < 1:
            raise InvalidArgument(f"dataset {spec.dataset_id} has no rows")
        preview = spec.HasField("preview")
        if preview and spec.preview.sample_rows > dataset.rows:
            raise InvalidArgument(
                "invalid job spec",
                (FieldViolation("spec.preview.sample_rows", f"must be ≤ the dataset's {dataset.rows} rows"),),
            )
        # a job that cannot finish is refused here, not failed later (see admission.py)
        declaration = await self.configs.declaration(spec.package_hash, tenant)
        await self.rules.check(spec.dataset_id, dataset.version, declaration, tenant)
        engines = await self.pool.refresh()
        check_capacity(params.count, engines)
        slots = sum(e.slots for e in engines) or 1
        if preview:
            job_plan = preview_plan(int(spec.preview.sample_rows))
        else:
            job_plan = plan(
                dataset.rows,
                slots=slots,
                scenarios=params.count,
                chunk_blocks=int(spec.chunk_blocks),
                slot_steps_per_second=self.pool.slot_steps_per_second(),
            )

        recorded = job_pb2.JobSpec()
        recorded.CopyFrom(spec)
        recorded.scenarios.CopyFrom(scenario_spec(params))
        if scenario_set is not None:
            scenario_set.record(recorded.scenarios)  # the version and months engines read
        job = job_pb2.Job(
            job_id=new_job_id(),
            spec=recorded,
            state=S.JOB_STATE_QUEUED,
            create_time=now_timestamp(),
            progress=job_pb2.JobProgress(blocks_total=job_plan.blocks_total, policies_total=job_plan.rows),
        )
        if idempotency_key and (existing := self._same_job(tenant, idempotency_key, spec)):
            return existing  # a concurrent submission with the same key got there first
        self._admit()  # again: submissions admitted together may have filled the gateway since
        logbook = EventLog(job.job_id, sink=self.store.append_event, on_failure=self._event_failed)
        live = LiveJob(
            job=job,
            log=logbook,
            plan=job_plan,
            params=params,
            key=ResultKey(spec.package_hash, dataset.version, result_scenarios_key(recorded.scenarios, params)),
            rows=dataset.rows,
            tenant=tenant,
            idempotency_key=idempotency_key,
            request=job_pb2.JobSpec.FromString(spec.SerializeToString()) if idempotency_key else None,
            outputs=outputs,
        )
        self._live[job.job_id] = live
        with self.store.transaction() as record_unit:  # the record and its accepted event: whole or none
            self.store.put_job(job, idempotency_key, tenant, live.request)
            logbook.append(
                accepted=job_pb2.JobAccepted(
                    job=job, blocks_total=job_plan.blocks_total, chunks_total=len(job_plan.chunks)
                )
            )
        live.recorded = asyncio.wrap_future(record_unit)
        live.recorded.add_done_callback(_retrieved)  # _run awaits it too, unless cancelled first
        self.metrics.jobs_submitted.inc()
        self.metrics.transition(0, S.JOB_STATE_QUEUED)
        live.task = asyncio.get_running_loop().create_task(self._run(live), name=f"job {job.job_id}")
        log.info(
            "job accepted",
            extra={
                "fields": {
                    "job": job.job_id,
                    "rows": job_plan.rows,
                    "blocks": job_plan.blocks_total,
                    "chunks": len(job_plan.chunks),
                    "scenarios": params.count,
                    "preview": preview,
                }
            },
        )
        # the job runs (even if this caller goes away now); its id is answered once it is
        # recorded, since GetJob, WatchJob and ListJobs of an ended job read the store
        try:
            await asyncio.shield(live.recorded)
        except sqlite3.Error as exc:
            raise Unavailable(
                f"the job store cannot record the job ({exc}); submit it again once the gateway is ready"
            ) from None
        return job.job_id

    def _same_job(self, tenant: str, idempotency_key: str, spec: job_pb2.JobSpec) -> str | None:
        """The job the tenant submitted with this key (a live one, maybe not recorded yet, or a
        recorded one), None for a new key; ALREADY_EXISTS when that job's spec is not `spec`."""
        for live in self._live.values():
            if live.tenant == tenant and live.idempotency_key == idempotency_key:
                job_id, request = live.job.job_id, live.request
                break
        else:
            found = self.store.request_by_key(idempotency_key, tenant)
            if found is None:
                return None
            job_id, request = found
        asked = spec
        if request is None:  # recorded before requests were kept: its spec as the job ran
            job = self.store.get_job(job_id)
            request = job.spec if job is not None else job_pb2.JobSpec()
            # the record holds the scenarios resolved (the package's own when none were asked for)
            asked = job_pb2.JobSpec()
            asked.CopyFrom(spec)
            resolved = scenario_spec(scenario_params(spec.scenarios, {})) if spec.HasField("scenarios") else None
            asked.scenarios.CopyFrom(resolved or request.scenarios)
        differences = spec_differences(request, asked)
        if differences:
            raise AlreadyExists(
                f"idempotency key {idempotency_key!r} was used for job {job_id} with a different spec: "
                f"{'; '.join(differences)}; the same key answers only the same spec (use a new key for a new job)"
            )
        return job_id

    def _admit(self) -> None:
        """RESOURCE_EXHAUSTED when the gateway already holds its limit of unfinished jobs."""
        limit = self.config.max_pending_jobs
        pending = sum(1 for live in self._live.values() if not live.log.closed)
        if limit and pending >= limit:
            raise ResourceExhausted(
                f"the gateway holds {pending} unfinished jobs, its limit (--max-pending-jobs, "
                f"env LIVECALC_MAX_PENDING_JOBS = {limit}); submit again when one has ended"
            )

    # run

    def _request(self, live: LiveJob) -> engine_service_pb2.RunChunkRequest:
        spec = live.job.spec
        req = engine_service_pb2.RunChunkRequest(
            job_id=live.job.job_id,
            package_hash=spec.package_hash,
            package_address=self.config.package_address,
            dataset_id=spec.dataset_id,
            dataset_version=live.key.dataset_version,
            block_size=BLOCK_SIZE,
            scenarios=spec.scenarios,
            threads=spec.threads,
            time_limit_seconds=self.config.chunk_time_limit_seconds,
        )
        if spec.HasField("preview"):
            req.sample.CopyFrom(
                engine_pb2.SampleSelection(
                    n=spec.preview.sample_rows, seed=spec.preview.seed, group_rows=live.plan.block_rows
                )
            )
        return req

    async def _run(self, live: LiveJob) -> None:
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
                    self._live.pop(job.job_id, None)
                    self.metrics.jobs.labels(state=state_label(job.state)).dec()
                    return
                live.recorded = None  # from here on a write that fails fails the job
            current = await self.datasets.get(job.spec.dataset_id, live.tenant)
            if current.version != live.key.dataset_version:
                raise FailedPrecondition(
                    f"dataset {job.spec.dataset_id} changed after the job was accepted "
                    f"(version {live.key.dataset_version} → {current.version})",
                )
            if live.outputs is None:  # a resumed job: its package says
                live.outputs = await self.configs.outputs(job.spec.package_hash, live.tenant)
            preview = job.spec.HasField("preview")
            live.fold = JobFold(
                live.plan.rows,
                live.plan.blocks_total,
                live.params.count,
                outputs=len(live.outputs.names),
                block_rows=live.plan.block_rows,
                keep_means=preview,
            )
            todo = live.plan
            if live.resume is not None:
                # only the blocks after the checkpoint: chunks before it dropped, one across it trimmed
                start = live.resume.next_block
                live.fold.resume(FoldState(start, live.resume.total, live.resume.steps))
                chunks = tuple(
                    Chunk(c.chunk_id, max(c.first_block, start), c.end_block - max(c.first_block, start))
                    for c in live.plan.chunks
                    if c.end_block > start
                )
                todo = dataclasses.replace(live.plan, chunks=chunks)
            slots = max(1, self.pool.total_slots)
            live.dispatcher = Dispatcher(
                self.pool,
                self._request(live),
                todo,
                live.fold,
                config=self.config.dispatch,
                metrics=self.metrics,
                window_blocks=self.config.window_chunks_per_slot * slots * live.plan.chunk_blocks,
                preview=preview,
                credentials=self.credentials,
                tenant=live.tenant,
            )
            if live.resume is None:
                self._set_state(live, S.JOB_STATE_RUNNING)
                job.start_time.CopyFrom(now_timestamp())
                live.started = time.monotonic()
            else:
                # elapsed time runs on from the job's start (the stop included), never back
                since = job.progress.elapsed_seconds
                if job.HasField("start_time"):
                    since = max(since, time.time() - job.start_time.ToNanoseconds() / 1e9)
                live.started = time.monotonic() - since
            self._watch(job.job_id, self.store.put_job(job))
            if not preview:
                self.reporter.checkpoint(live)  # from here on a restarted gateway resumes the job
            self.reporter.report(live)
            ticker = asyncio.get_running_loop().create_task(self.reporter.tick(live))
            await live.dispatcher.run()
            ticker.cancel()
            self._succeed(live)
        except asyncio.CancelledError:
            if live.store_error is not None:
                self._failed(
                    live,
                    "UNAVAILABLE",
                    f"the job store could not record the job ({live.store_error}); submit it again",
                )
            elif live.cancel_reason is None:
                raise  # the gateway is stopping
            else:
                self._cancelled(live)
        except LivecalcError as exc:
            self._failed(live, exc.code.name, exc.details())
        except Exception as exc:
            log.exception("job failed with a bug", extra={"fields": {"job": job.job_id}})
            self._failed(live, "INTERNAL", f"internal error: {type(exc).__name__}: {exc}")
        finally:
            if ticker is not None:
                ticker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await ticker
            if live.log.closed:
                await asyncio.shield(self._finished(live))  # an ended job is read from the store

    def _event_failed(self, event: job_pb2.JobEvent, error: BaseException) -> None:
        self._write_failed(event.job_id, error)

    def _watch(self, job_id: str, written: Written) -> None:
        """Fail the job if this write of it is not committed."""
        loop = asyncio.get_running_loop()

        def done(future: Written) -> None:
            if not future.cancelled() and (error := future.exception()) is not None:
                with contextlib.suppress(RuntimeError):  # the loop has closed
                    loop.call_soon_threadsafe(self._write_failed, job_id, error)

        written.add_done_callback(done)

    def _write_failed(self, job_id: str, error: BaseException) -> None:
        """A write of a running job was not committed: the job fails (its task is cancelled and
        ends it FAILED, UNAVAILABLE). Before the job is recorded `_run` drops it instead; once
        it has ended, `_finish` writes its end again."""
        live = self._live.get(job_id)
        if live is None or live.recorded is not None or live.log.closed or live.store_error is not None:
            return
        live.store_error = error
        if live.task is not None and not live.task.done():
            live.task.cancel()

    def _finished(self, live: LiveJob) -> asyncio.Task[None]:
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
        assert live.final is not None
        self.metrics.transition(live.job.state, live.final.state)
        live.job.CopyFrom(live.final)
        live.final = None
        self._live.pop(job_id, None)

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

    def _succeed(self, live: LiveJob) -> None:
        job, fold, outputs = live.job, live.fold, live.outputs
        assert fold is not None and outputs is not None
        self.reporter.report(live)  # the last progress (100 %) always precedes the result
        values = fold.total()  # f64 [K][N], the declared outputs' order
        preview = job.spec.HasField("preview")
        if preview:
            values = values * (live.rows / live.plan.rows)  # every output scaled
        difference = uncertainty = None
        if preview:
            full = self.store.latest_full_mean(live.key)
            if full is not None:
                difference = relative_difference(float(values[outputs.primary].mean()), full[1])
            group_rows, group_means = fold.block_means()
            uncertainty = preview_uncertainty(
                group_means[:, outputs.primary],
                group_rows,
                population=live.rows,
                scenario_standard_error=statistics(values[outputs.primary]).stderr,
                scenarios=values.shape[1],
            )
        result = final_result(
            values,
            outputs,
            policy_count=live.plan.rows,
            dataset_version=live.key.dataset_version,
            package_hash=job.spec.package_hash,
            steps=fold.steps,
            elapsed_seconds=time.monotonic() - live.started,
            preview=preview,
            preview_relative_difference=difference,
            preview_uncertainty=uncertainty,
        )
        mark_result(result, job.spec.scenarios)
        end = now_timestamp()
        live.result_row = {
            "key": live.key,
            "preview": preview,
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

    def _failed(self, live: LiveJob, code: str, message: str) -> None:
        if live.log.closed:
            return
        log.info("job failed", extra={"fields": {"job": live.job.job_id, "code": code, "message": message}})
        self._end(live, S.JOB_STATE_FAILED, error=job_pb2.JobError(code=code, message=message))

    def _cancelled(self, live: LiveJob) -> None:
        if live.log.closed:
            return
        self._end(live, S.JOB_STATE_CANCELLED, cancelled=job_pb2.JobCancelled(reason=live.cancel_reason or ""))

    def _set_state(self, live: LiveJob, state: int) -> None:
        self.metrics.transition(live.job.state, state)
        live.job.state = state  # type: ignore[assignment]

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
        live.final = final

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

    # read side

    @staticmethod
    def _shown(live: LiveJob) -> job_pb2.Job:
        """A live job as readers see it: ended once its terminal event is persisted."""
        return live.final if live.final is not None and live.log.ended else live.job

    def _visible(self, job_id: str) -> None:
        """NOT_FOUND unless the job exists and is the caller's tenant's (the same answer either way)."""
        live = self._live.get(job_id)
        tenant = live.tenant if live is not None else self.store.tenant_of(job_id)
        if tenant != current_principal().tenant:
            raise NotFound(f"job {job_id} does not exist")

    def get(self, job_id: str, *, with_vector: bool = True) -> job_pb2.Job:
        self._visible(job_id)
        live = self._live.get(job_id)
        if live is not None:
            out = job_pb2.Job()
            out.CopyFrom(self._shown(live))
            return out
        job = self.store.get_job(job_id)
        if job is None:
            raise NotFound(f"job {job_id} does not exist")
        if with_vector and job.state == S.JOB_STATE_SUCCEEDED and not job.result.outputs_in_parts:
            attach_values(job.result, self.store.result_values(job_id))
        return job

    def list(self, page_size: int, page_token: str, state: int) -> tuple[list[job_pb2.Job], str]:
        jobs, token = self.store.list_jobs(page_size, page_token, state, current_principal().tenant)
        for job in jobs:
            live = self._live.get(job.job_id)
            if live is not None:
                job.CopyFrom(self._shown(live))
            if job.HasField("result"):  # touching `result` of a job without one would create it
                for output in job.result.outputs:
                    del output.values[:]
        return jobs, token

    async def follow(self, job_id: str, after: int = 0) -> AsyncIterator[job_pb2.JobEvent]:
        """The job's events after ``after``: replayed, then live until the job ends."""
        if after < 0:
            raise InvalidArgument("after_sequence must be ≥ 0")
        self._visible(job_id)
        live = self._live.get(job_id)
        if live is not None:
            async for event in live.log.follow(after):
                yield event
            return
        if self.store.get_job(job_id) is None:
            raise NotFound(f"job {job_id} does not exist")
        for event in self.store.events(job_id, after):
            yield event

    async def cancel(self, job_id: str, reason: str) -> job_pb2.Job:
        self._visible(job_id)
        live = self._live.get(job_id)
        if live is None or live.log.closed:
            return self.get(job_id)
        live.cancel_reason = reason
        task = live.task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), CANCEL_WAIT)
        self._cancelled(live)
        with contextlib.suppress(asyncio.TimeoutError):  # the store cannot write: the end comes later
            await asyncio.wait_for(asyncio.shield(self._finished(live)), CANCEL_WAIT)
        return self.get(job_id)

    async def close(self) -> None:
        """Stop every running job (the gateway is stopping): checkpointed ones resume at the next start."""
        for live in list(self._live.values()):
            for task in (live.task, live.finishing):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
            if not live.log.closed:
                self.reporter.checkpoint(live)  # the latest fold, so the next start redoes as little as it can
        self._live.clear()
        await self.pool.close()
