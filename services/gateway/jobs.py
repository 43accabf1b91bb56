"""Jobs: submit, watch, read, cancel — the live jobs of one gateway (`JobManager`).

A job is validated (submission.py: the spec's own rules and sizes; admission.py refuses what
could never finish; variants.py derives and stores its variants' packages), planned on submit,
recorded in the job store, and answered with its `accepted` event; its task then runs it
(job_runner.py) through the phases job_state.py names.
Everything is written to the store as it happens, off the event loop (`JobStore`'s writer
thread). Only three steps wait for writes: start-up recovery, SubmitJob (it answers a job's id
once the job's record is committed) and an ended job (it leaves the live set, so that reads go
to the store, once its last writes are). A client is streamed an event only once it is
persisted (`EventLog`); a write the store cannot commit fails the job, whose end is written
again until it is.

A job that was running when the gateway stopped (SIGTERM or SIGKILL) resumes at the next start
from its checkpoint (recovery.py; the planner trims its plan to the blocks after it): its event
log goes on from the last sequence (clients re-attach with WatchJob from theirs) and the result
is the uninterrupted run's: same bits, same steps (`JobFold` counts each block's steps once).
The resumed job reports each block once, and elapsed time runs on from the job's start time. A
job with no checkpoint (queued, a preview) is marked FAILED (ABORTED) with a message saying so;
submitting it again reruns it; a job whose end was written is never run again.

The manager borrows its store, engine pool, packages and datasets: whoever made them (the
gateway's server wiring, server.py) closes them; `close()` stops the jobs only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator
from typing import Any, Final

from livecalc.gateway.v1 import job_pb2
from services.common.auth.interceptor import current_principal
from services.common.auth.service import ServiceCredentials
from services.common.errors import AlreadyExists, InvalidArgument, NotFound, ResourceExhausted, Unavailable
from services.gateway.admission import DatasetRules, check_capacity
from services.gateway.config import JobConfig
from services.gateway.engines import EnginePool
from services.gateway.events import EventLog, is_terminal, now_timestamp
from services.gateway.inputs import DataServiceDatasets, Datasets, PackageConfigs, scenario_params, scenario_spec
from services.gateway.job_kind import kind_of
from services.gateway.job_runner import JobRunner
from services.gateway.live_job import LiveJob, S
from services.gateway.metrics import GatewayMetrics
from services.gateway.package_store import PackageStore, check_hash
from services.gateway.planner import Sizing
from services.gateway.recovery import abort, record_logged_end, resumable, resumed_job
from services.gateway.results import attach_values
from services.gateway.scenario_sets import (
    DataServiceScenarioSets,
    ScenarioSetSource,
    job_scenario_set,
    result_scenarios_key,
)
from services.gateway.speeds import speed_shape
from services.gateway.store import JobStore, ResultKey
from services.gateway.submission import check_spec, limit_violations, spec_differences
from services.gateway.variants import check_variants, derive_variants

log = logging.getLogger(__name__)

#: How long CancelJob waits for the job's task to wind down.
CANCEL_WAIT: Final = 5.0


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
        #: The live jobs, by id: submitted or resumed, until their end is committed.
        self._live: dict[str, LiveJob] = {}
        self.runner = JobRunner(
            self._live,
            store,
            pool,
            datasets,
            self.configs,
            metrics=metrics,
            config=config,
            credentials=self.credentials,
        )
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
                on_failure=self.runner.event_failed,
                last_sequence=self.store.last_sequence(job.job_id),
            )
            terminal = next((e for e in events if is_terminal(e)), None)
            if terminal is not None:
                record_logged_end(self.store, job, terminal, events)
                ended += 1
                continue
            cp = self.store.checkpoint(job.job_id)
            if cp is None or not resumable(job, cp):
                abort(self.store, job, logbook)
                continue
            live = resumed_job(job, logbook, events, cp, self.store.tenant_of(job.job_id) or "")
            self._live[job.job_id] = live
            self.metrics.transition(0, job.state)
            live.task = asyncio.get_running_loop().create_task(self.runner.run(live), name=f"job {job.job_id}")
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
        check_spec(spec)
        check_variants(spec)
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
        check_spec(spec, dataset_rows=dataset.rows)
        kind = kind_of(spec)
        # a job that cannot finish is refused here, not failed later (see admission.py)
        declaration = await self.configs.declaration(spec.package_hash, tenant)
        await self.rules.check(spec.dataset_id, dataset.version, declaration, tenant)
        # derived and stored only for a job the other checks let through
        variants = await derive_variants(self.packages, spec, tenant)
        for variant in variants:  # a changed table may move the bounds the rules read
            variant_rules = await self.configs.declaration(variant.package_hash, tenant)
            await self.rules.check(spec.dataset_id, dataset.version, variant_rules, tenant)
        engines = await self.pool.refresh()
        check_capacity(params.count, engines)
        sizing = Sizing(
            slots=sum(e.slots for e in engines) or 1,
            scenarios=params.count,
            chunk_blocks=int(spec.chunk_blocks),
            slot_steps_per_second=self.pool.slot_steps_per_second(speed_shape(spec.package_hash, params.count)),
            granule=self.pool.block_granule(),
        )
        job_plan = kind.plan(dataset.rows, sizing)

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
            progress=job_pb2.JobProgress(
                blocks_total=job_plan.blocks_total * (1 + len(variants)),
                policies_total=job_plan.rows * (1 + len(variants)),
            ),
        )
        if idempotency_key and (existing := self._same_job(tenant, idempotency_key, spec)):
            return existing  # a concurrent submission with the same key got there first
        self._admit()  # again: submissions admitted together may have filled the gateway since
        logbook = EventLog(job.job_id, sink=self.store.append_event, on_failure=self.runner.event_failed)
        live = LiveJob(
            job=job,
            log=logbook,
            plan=job_plan,
            params=params,
            key=ResultKey(spec.package_hash, dataset.version, result_scenarios_key(recorded.scenarios, params)),
            rows=dataset.rows,
            kind=kind,
            tenant=tenant,
            idempotency_key=idempotency_key,
            request=job_pb2.JobSpec.FromString(spec.SerializeToString()) if idempotency_key else None,
            outputs=outputs,
            variants=tuple(variants),
        )
        self._live[job.job_id] = live
        with self.store.transaction() as record_unit:  # the record and its accepted event: whole or none
            self.store.put_job(job, idempotency_key, tenant, live.request)
            logbook.append(
                accepted=job_pb2.JobAccepted(
                    job=job,
                    blocks_total=job.progress.blocks_total,
                    chunks_total=len(job_plan.chunks) * (1 + len(variants)),
                )
            )
        live.recorded = asyncio.wrap_future(record_unit)
        live.recorded.add_done_callback(_retrieved)  # the runner awaits it too, unless cancelled first
        self.metrics.jobs_submitted.inc()
        self.metrics.transition(0, S.JOB_STATE_QUEUED)
        live.task = asyncio.get_running_loop().create_task(self.runner.run(live), name=f"job {job.job_id}")
        log.info(
            "job accepted",
            extra={
                "fields": {
                    "job": job.job_id,
                    "rows": job_plan.rows,
                    "blocks": job_plan.blocks_total,
                    "chunks": len(job_plan.chunks),
                    "scenarios": params.count,
                    "preview": kind.preview,
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
        self.runner.cancelled(live)
        with contextlib.suppress(asyncio.TimeoutError):  # the store cannot write: the end comes later
            await asyncio.wait_for(asyncio.shield(self.runner.finished(live)), CANCEL_WAIT)
        return self.get(job_id)

    async def close(self) -> None:
        """Stop every running job (the gateway is stopping): checkpointed ones resume at the next
        start. The store, pool and other parts it was given stay open: their maker closes them.
        Closing again does nothing."""
        for live in list(self._live.values()):
            for task in (live.task, live.finishing):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
            if not live.log.closed:
                self.runner.reporter.checkpoint(live)  # the latest fold, so the next start redoes as little as it can
            live.stop()
        self._live.clear()
