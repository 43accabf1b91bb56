"""`AsyncClient`: the asynchronous Python client of LiveCalc Mesh (grpc.aio, on asyncio).

One client talks to one address, the gateway's: it serves jobs and packages, and datasets by
forwarding them to its data service (``data=`` names a data service to use directly instead).
Channels are opened lazily inside the running event loop. Every unary call has a deadline
(`timeout`, per call overridable); idempotent calls (get, list, show, sample, cancel) are
retried on UNAVAILABLE with exponential backoff, never submissions or uploads (a submission
carries an idempotency key, so a stream that breaks after acceptance is resumed with
WatchJob instead). Failures raise the project's error types (`livecalc_client.errors`).

A finished job's per-policy detail and cash flows by month are recomputed on demand
(`job_detail`, `job_detail_batches`, `job_cash_flows`: livecalc_client.detail).

Streams (`submit`, `watch`) are async iterators of `JobEvent`s; leaving the loop early
cancels the underlying call (a stream not cancelled keeps the server streaming: grpc/grpc#43462).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import importlib.metadata
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar

import grpc
from grpc import aio

from livecalc.data.v1 import data_pb2, data_service_pb2, data_service_pb2_grpc
from livecalc.engine.v1 import engine_pb2
from livecalc.gateway.v1 import (
    job_pb2,
    job_service_pb2,
    job_service_pb2_grpc,
    package_pb2,
    package_service_pb2,
    package_service_pb2_grpc,
)
from livecalc_client.channels import ChannelSecurity, channel_security, open_aio_channel
from livecalc_client.detail import (
    BATCH_ROWS,
    DataFrame,
    RecordBatch,
    blocks_span,
    cash_flow_frame,
    detail_batches,
    need,
)
from livecalc_client.errors import (
    RETRYABLE,
    InvalidArgument,
    JobCancelled,
    JobFailed,
    LivecalcError,
    Unavailable,
    from_rpc_error,
)
from livecalc_client.results import Job, JobResult, JobState, job_from_proto, result_from_proto
from livecalc_client.retry import Backoff, Retry

T = TypeVar("T")

DEFAULT_GATEWAY: Final = "localhost:50051"
DEFAULT_DATA: Final = "localhost:50053"
#: Upload chunk payload: below the 4 MiB message limit with room for the framing.
UPLOAD_CHUNK: Final = 1 << 20
MAX_RECEIVE_BYTES: Final = 16 << 20
#: Events that end a job's stream.
FINAL_EVENTS: Final = frozenset({"result", "error", "cancelled"})


def job_spec(
    package_hash: str,
    dataset_id: str,
    *,
    scenarios: int | None = None,
    seed: int | None = None,
    mean_reversion: float | None = None,
    volatility: float | None = None,
    preview_rows: int | None = None,
    preview_seed: int = 0,
    chunk_blocks: int = 0,
    threads: int = 0,
    labels: Mapping[str, str] | None = None,
    scenario_dataset: str | None = None,
) -> job_pb2.JobSpec:
    """A `JobSpec`. Without ``scenarios`` the package's configured scenario set is used; with it,
    the package's configured seed, mean reversion and volatility unless given here.
    ``preview_rows`` makes it a preview on a seeded sample of that many policies.

    ``scenario_dataset`` ("ID" or "ID@VERSION"): the scenarios are read from that dataset, a
    scenario set (docs/model-interface.md "Scenario inputs"), instead of the package's generator:
    its first ``scenarios`` (all of them without a count); no seed or generator parameter then."""
    spec = job_pb2.JobSpec(
        package_hash=package_hash,
        dataset_id=dataset_id,
        chunk_blocks=chunk_blocks,
        threads=threads,
        labels=dict(labels or {}),
    )
    if scenario_dataset is not None:
        if seed is not None or mean_reversion is not None or volatility is not None:
            raise InvalidArgument("a scenario set's scenarios take no seed, mean reversion or volatility")
        dataset_id, _, version = scenario_dataset.partition("@")
        if not dataset_id:
            raise InvalidArgument(f"a scenario dataset is ID or ID@VERSION, got {scenario_dataset!r}")
        spec.scenarios.CopyFrom(
            engine_pb2.ScenarioSpec(count=scenarios or 0, dataset_id=dataset_id, dataset_version=version)
        )
    elif scenarios is not None:
        spec.scenarios.CopyFrom(engine_pb2.ScenarioSpec(count=scenarios))
        if seed is not None:  # unset: the package's configured seed
            spec.scenarios.seed = seed
        if mean_reversion is not None:
            spec.scenarios.mean_reversion = mean_reversion
        if volatility is not None:
            spec.scenarios.volatility = volatility
    elif seed is not None or mean_reversion is not None or volatility is not None:
        raise InvalidArgument("a scenario seed, mean reversion or volatility needs a scenario count")
    if preview_rows is not None:
        spec.preview.CopyFrom(job_pb2.PreviewSpec(sample_rows=preview_rows, seed=preview_seed))
    return spec


#: Builds a package directory into archive bytes: the full distribution (livecalc-mesh) offers its
#: builder as an entry point of this group (or `use_package_builder`); the light client alone
#: uploads package files only.
PACKAGE_BUILDERS: Final = "livecalc_client.package_builders"
_package_builder: Callable[[Path], bytes] | None = None


def use_package_builder(builder: Callable[[Path], bytes]) -> None:
    """Make `package_archive` (and `upload_package`) build package directories with ``builder``."""
    global _package_builder  # noqa: PLW0603
    _package_builder = builder


def package_archive(path: Path) -> bytes:
    """The archive bytes of a package file, or of a package directory built on the fly (with
    livecalc-mesh installed: `livecalc package build DIR` makes the file the light client uploads)."""
    if path.is_dir():
        if _package_builder is None:
            # every distribution's, not entry_points(): that keeps one metadata per name, and a
            # stale livecalc_mesh.egg-info in the working directory would hide the installed one
            entries = (e for d in importlib.metadata.distributions() for e in d.entry_points)
            entry = next((e for e in entries if e.group == PACKAGE_BUILDERS), None)
            if entry is not None:
                use_package_builder(entry.load())
        if _package_builder is None:
            raise InvalidArgument(
                f"{path} is a package directory: building one needs livecalc-mesh "
                "(`livecalc package build DIR`); upload the package file it makes"
            )
        return _package_builder(path)
    if not path.is_file():
        raise InvalidArgument(f"{path}: no such package file or directory")
    return path.read_bytes()


def _package_requests(archive: bytes) -> Iterator[package_service_pb2.UploadPackageRequest]:
    header = package_service_pb2.PackageUploadHeader(
        size_bytes=len(archive), sha256=hashlib.sha256(archive).hexdigest()
    )
    yield package_service_pb2.UploadPackageRequest(header=header)
    for start in range(0, len(archive), UPLOAD_CHUNK):
        yield package_service_pb2.UploadPackageRequest(chunk=archive[start : start + UPLOAD_CHUNK])


def _dataset_requests(
    path: Path, header: data_service_pb2.UploadHeader
) -> Iterator[data_service_pb2.UploadDatasetRequest]:
    yield data_service_pb2.UploadDatasetRequest(header=header)
    with path.open("rb") as f:
        while chunk := f.read(UPLOAD_CHUNK):
            yield data_service_pb2.UploadDatasetRequest(chunk=chunk)


class ResultAssembler:
    """Collects a job's events into its final `JobResult`, joining `JobResultPart`s.

    Feed every event to `add`; it returns the complete result at the result event (every
    output's ``values`` filled in, also when they came in parts) and raises `JobFailed` /
    `JobCancelled` at an error or cancelled event.
    """

    def __init__(self) -> None:
        #: Values received in parts, by output index.
        self.parts: dict[int, list[float]] = {}

    def add(self, event: job_pb2.JobEvent) -> job_pb2.JobResult | None:
        kind = event.WhichOneof("event")
        if kind == "result_part":
            part = event.result_part
            values = self.parts.setdefault(int(part.output_index), [])
            if part.first_scenario != len(values):
                raise LivecalcError(
                    f"job {event.job_id}: result part of output {part.output_index} starts at scenario "
                    f"{part.first_scenario}, expected {len(values)}"
                )
            values.extend(part.values)
        elif kind == "result":
            result = job_pb2.JobResult()
            result.CopyFrom(event.result)
            if result.outputs_in_parts:
                self._fill(event.job_id, result)
            return result
        elif kind == "error":
            raise JobFailed(event.job_id, event.error.code, event.error.message)
        elif kind == "cancelled":
            raise JobCancelled(event.job_id, event.cancelled.reason)
        return None

    def _fill(self, job_id: str, result: job_pb2.JobResult) -> None:
        """Put the parts' values into the result's outputs; every output must be whole, except
        in a result recorded before outputs, whose parts carried the primary's values alone."""
        n = result.statistics.scenario_count
        unknown = sorted(k for k in self.parts if not 0 <= k < len(result.outputs))
        if unknown:
            raise LivecalcError(
                f"job {job_id}: result parts of output {unknown[0]}; the result has {len(result.outputs)}"
            )
        for k, output in enumerate(result.outputs):
            values = self.parts.get(k, [])
            if len(values) != n and (values or output.primary):
                raise LivecalcError(f"job {job_id}: got {len(values)} of {n} values of output {output.name!r}")
            del output.values[:]
            output.values.extend(values)
        result.outputs_in_parts = False


class AsyncClient:
    """Asynchronous client of a LiveCalc Mesh: jobs, packages and datasets, all through the gateway.

    >>> async with AsyncClient("localhost:50051") as lc:
    ...     result = await lc.run(job_spec(package_hash, "policies"))

    ``data`` (default: the gateway's address) sends the dataset calls to a data service directly.

    ``timeout`` is the deadline of each unary call in seconds (streams have none unless
    ``stream_timeout`` is set: a valuation may run for hours); ``retries`` is how often an
    idempotent call is retried on UNAVAILABLE, and how often a broken event stream is resumed
    without an event in between (backoff 0.2 s doubling, at most 5 s, ± 10 %: `livecalc_client.retry`).
    ``token`` is sent as ``authorization: Bearer <token>`` on every call; ``tls_ca`` (PEM
    roots, a path) or ``tls=True`` (system roots) connects with TLS. Without them the
    client uses the `livecalc` command's settings (plaintext, no token, by default).
    """

    def __init__(
        self,
        gateway: str = DEFAULT_GATEWAY,
        *,
        data: str | None = None,
        timeout: float = 30.0,
        upload_timeout: float = 600.0,
        stream_timeout: float | None = None,
        retries: int = 3,
        token: str | None = None,
        tls: bool = False,
        tls_ca: str | Path | None = None,
    ) -> None:
        default = channel_security()
        self._security = (
            ChannelSecurity(token=token, tls=tls or tls_ca is not None, tls_ca=Path(tls_ca) if tls_ca else None)
            if token is not None or tls or tls_ca is not None
            else default
        )
        self.gateway = gateway
        #: Where the dataset calls go: the gateway (which forwards them) unless a data service is named.
        self.data = data or gateway
        self.timeout = timeout
        self.upload_timeout = upload_timeout
        self.stream_timeout = stream_timeout
        self.retries = retries
        self._channels: dict[str, aio.Channel] = {}

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channels (in-flight calls are cancelled)."""
        channels, self._channels = self._channels, {}
        for channel in channels.values():
            await channel.close()

    def _channel(self, address: str) -> aio.Channel:
        channel = self._channels.get(address)
        if channel is None:
            channel = open_aio_channel(address, self._security)
            self._channels[address] = channel
        return channel

    def _jobs(self) -> job_service_pb2_grpc.JobServiceAsyncStub:
        return job_service_pb2_grpc.JobServiceStub(self._channel(self.gateway))

    def _packages(self) -> package_service_pb2_grpc.PackageServiceAsyncStub:
        return package_service_pb2_grpc.PackageServiceStub(self._channel(self.gateway))

    def _datasets(self) -> data_service_pb2_grpc.DataServiceAsyncStub:
        return data_service_pb2_grpc.DataServiceStub(self._channel(self.data))

    async def _call(self, service: str, fn: Callable[[], Awaitable[T]], *, idempotent: bool) -> T:
        address = self.data if service == "data" else self.gateway
        if address == self.gateway:
            service = "gateway"  # the dataset calls go through it
        retry = Retry(Backoff(self.retries))
        while True:
            try:
                return await fn()
            except grpc.aio.AioRpcError as exc:
                pause = retry.failed() if idempotent and exc.code() in RETRYABLE else None
                if pause is None:
                    raise from_rpc_error(exc, service, address) from None
                await asyncio.sleep(pause)

    # ---- jobs -------------------------------------------------------------------------

    async def submit(
        self, spec: job_pb2.JobSpec, *, idempotency_key: str | None = None
    ) -> AsyncGenerator[job_pb2.JobEvent, None]:
        """Submit a job and yield its events (accepted, progress, statistics, result parts,
        then one of result / error / cancelled). Leaving the loop does not cancel the job.

        The submission carries an idempotency key (a fresh UUID unless given): when the
        stream breaks (UNAVAILABLE) before acceptance it is resubmitted with the same key,
        after acceptance the events are resumed with WatchJob from the last one seen. Each event
        renews the retry budget: only `retries` breaks in a row without an event give up.
        """
        key = idempotency_key or uuid.uuid4().hex
        request = job_service_pb2.SubmitJobRequest(spec=spec, idempotency_key=key)
        async for event in self._events(lambda: self._jobs().SubmitJob(request, timeout=self.stream_timeout)):
            yield event

    async def _events(self, first: Callable[[], Any]) -> AsyncGenerator[job_pb2.JobEvent, None]:
        """The events of the stream ``first()`` opens until the job ends; a broken stream
        (UNAVAILABLE) is opened again — ``first()`` while no event has named the job, else
        WatchJob from the last event seen — up to `retries` times in a row without an event."""
        job_id, last = "", 0
        retry = Retry(Backoff(self.retries))
        while True:
            call = (
                first()
                if not job_id
                else self._jobs().WatchJob(
                    job_service_pb2.WatchJobRequest(job_id=job_id, after_sequence=last), timeout=self.stream_timeout
                )
            )
            try:
                async for response in call:
                    event = response.event
                    job_id, last = event.job_id, event.sequence
                    retry.progressed()
                    yield event
                    if event.WhichOneof("event") in FINAL_EVENTS:
                        return
                return
            except grpc.aio.AioRpcError as exc:
                pause = retry.failed() if exc.code() in RETRYABLE else None
                if pause is None:
                    raise from_rpc_error(exc, "gateway", self.gateway) from None
                await asyncio.sleep(pause)
            finally:
                call.cancel()

    async def watch(self, job_id: str, *, after_sequence: int = 0) -> AsyncGenerator[job_pb2.JobEvent, None]:
        """Yield a job's events after ``after_sequence`` (0: all kept events) until it ends;
        a broken stream (UNAVAILABLE) is resumed from the last event seen, up to `retries` times
        in a row without an event in between."""
        request = job_service_pb2.WatchJobRequest(job_id=job_id, after_sequence=after_sequence)
        async for event in self._events(lambda: self._jobs().WatchJob(request, timeout=self.stream_timeout)):
            yield event

    async def get_job(self, job_id: str) -> job_pb2.Job:
        """The current record of a job (its result, when it has one, includes every output's values
        unless they were sent in parts: `outputs_in_parts`)."""
        request = job_service_pb2.GetJobRequest(job_id=job_id)
        reply = await self._call("gateway", lambda: self._jobs().GetJob(request, timeout=self.timeout), idempotent=True)
        return reply.job

    async def list_jobs(
        self,
        *,
        state: job_pb2.JobState.ValueType = job_pb2.JOB_STATE_UNSPECIFIED,
        limit: int | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> list[job_pb2.Job]:
        """Jobs, newest first (every page, or the first ``limit``), optionally of one state and
        only those carrying every one of ``labels`` (key → value; matched here, page by page).
        Results' per-scenario vectors are omitted; `get_job` has them."""
        wanted = dict(labels or {})
        jobs: list[job_pb2.Job] = []
        token = ""
        while True:
            size = 100 if limit is None or wanted else max(1, min(100, limit - len(jobs)))
            request = job_service_pb2.ListJobsRequest(page_size=size, page_token=token, state=state)
            reply = await self._call(
                "gateway", functools.partial(self._jobs().ListJobs, request, timeout=self.timeout), idempotent=True
            )
            jobs.extend(j for j in reply.jobs if all(j.spec.labels.get(k) == v for k, v in wanted.items()))
            token = reply.next_page_token
            if not token or (limit is not None and len(jobs) >= limit):
                return jobs if limit is None else jobs[:limit]

    async def cancel_job(self, job_id: str, reason: str = "") -> job_pb2.Job:
        """Cancel a job (engines stop within a second); returns the job after cancellation.
        Cancelling an ended job changes nothing, so the call is retried like a read."""
        request = job_service_pb2.CancelJobRequest(job_id=job_id, reason=reason)
        reply = await self._call(
            "gateway", lambda: self._jobs().CancelJob(request, timeout=self.timeout), idempotent=True
        )
        return reply.job

    async def wait(self, job_id: str) -> job_pb2.JobResult:
        """Wait for a job's result (re-attaching with WatchJob from its first event).

        Raises `JobFailed` or `JobCancelled` when the job ends without a result."""
        return await collect_result(self.watch(job_id))

    async def run(self, spec: job_pb2.JobSpec) -> job_pb2.JobResult:
        """Submit a job and wait for its result (see `wait`)."""
        return await collect_result(self.submit(spec))

    # ---- jobs as typed values (livecalc_client.results) --------------------------------

    async def job(self, job_id: str) -> Job:
        """A job's record as a typed `Job` (its `state` a `JobState` name)."""
        return job_from_proto(await self.get_job(job_id))

    async def jobs(
        self, *, state: JobState | None = None, limit: int | None = None, labels: Mapping[str, str] | None = None
    ) -> list[Job]:
        """`list_jobs` as typed `Job`s (their results without per-scenario values)."""
        number = job_pb2.JobState.Value(f"JOB_STATE_{state.upper()}") if state else job_pb2.JOB_STATE_UNSPECIFIED
        return [job_from_proto(j) for j in await self.list_jobs(state=number, limit=limit, labels=labels)]

    async def result(self, job_id: str) -> JobResult:
        """Wait for a job's result, as a typed `JobResult` (see `wait`)."""
        return result_from_proto(await self.wait(job_id))

    async def value(self, spec: job_pb2.JobSpec) -> JobResult:
        """Submit a job and wait for its result, as a typed `JobResult` (see `run`)."""
        return result_from_proto(await self.run(spec))

    # ---- detail on demand (livecalc_client.detail) ----------------------------------------

    async def detail_stream(
        self, job_id: str, *, scenarios: Sequence[int] = (), blocks: range | slice | None = None
    ) -> AsyncGenerator[job_service_pb2.GetJobDetailResponse, None]:
        """GetJobDetail's messages: a header, then rows in row order and progress now and then.
        The gateway recomputes the blocks on the engines (nothing per policy is stored); a broken
        stream is not resumed (ask again)."""
        first, count = blocks_span(blocks)
        request = job_service_pb2.GetJobDetailRequest(
            job_id=job_id, scenarios=list(scenarios), first_block=first, block_count=count
        )
        call = self._jobs().GetJobDetail(request, timeout=self.stream_timeout)
        try:
            async for message in call:
                yield message
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc, "gateway", self.gateway) from None
        finally:
            call.cancel()

    async def job_detail_batches(
        self,
        job_id: str,
        *,
        scenarios: Sequence[int] = (),
        blocks: range | slice | None = None,
        batch_rows: int = BATCH_ROWS,
        on_progress: Callable[[job_pb2.JobProgress], None] | None = None,
    ) -> AsyncGenerator[tuple[job_service_pb2.DetailHeader, RecordBatch], None]:
        """Per-policy detail as (header, pyarrow RecordBatch) pairs of ``batch_rows`` rows, in row
        order, for bounded memory (columns: livecalc_client.detail). ``scenarios``: default the
        base scenario 0; ``blocks``: blocks of 1024 rows, ``range(a, b)`` or ``slice(a, None)``
        (default every block); ``on_progress`` gets the stream's progress messages."""
        messages = self.detail_stream(job_id, scenarios=scenarios, blocks=blocks)
        async for pair in detail_batches(messages, batch_rows=batch_rows, on_progress=on_progress):
            yield pair

    async def job_detail(
        self, job_id: str, *, scenarios: Sequence[int] = (), blocks: range | slice | None = None
    ) -> DataFrame:
        """Per-policy detail as one pandas DataFrame (all rows in memory: for millions of policies
        use `job_detail_batches`)."""
        pa = need("pyarrow")
        need("pandas")
        batches = [batch async for _, batch in self.job_detail_batches(job_id, scenarios=scenarios, blocks=blocks)]
        return pa.Table.from_batches(batches).to_pandas()

    async def cash_flows(
        self,
        job_id: str,
        *,
        scenarios: Sequence[int] = (),
        mean: bool = False,
        on_progress: Callable[[job_pb2.JobProgress], None] | None = None,
    ) -> job_service_pb2.CashFlows:
        """GetJobCashFlows: the portfolio's cash flows by month of each monthly output, under
        ``scenarios`` and, with ``mean``, averaged over every scenario of the job."""
        request = job_service_pb2.GetJobCashFlowsRequest(job_id=job_id, scenarios=list(scenarios), mean=mean)
        call = self._jobs().GetJobCashFlows(request, timeout=self.stream_timeout)
        try:
            async for message in call:
                if message.WhichOneof("event") == "cash_flows":
                    return message.cash_flows
                if on_progress is not None:
                    on_progress(message.progress)
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc, "gateway", self.gateway) from None
        finally:
            call.cancel()
        raise Unavailable(f"job {job_id}: the cash-flow stream ended without the cash flows")

    async def job_cash_flows(self, job_id: str, *, scenarios: Sequence[int] = (), mean: bool = False) -> DataFrame:
        """`cash_flows` as a pandas DataFrame: a row per month, a column per output and scenario
        (``net_cf_s3``; ``net_cf_mean`` for the mean)."""
        return cash_flow_frame(await self.cash_flows(job_id, scenarios=scenarios, mean=mean))

    # ---- packages ---------------------------------------------------------------------

    async def upload_package(self, path: str | Path) -> package_service_pb2.UploadPackageResponse:
        """Upload a package archive, or build a package directory and upload the archive.

        Uploading a package that is already stored is not an error (`already_existed`)."""
        archive = package_archive(Path(path))
        return await self.upload_package_bytes(archive)

    async def upload_package_bytes(self, archive: bytes) -> package_service_pb2.UploadPackageResponse:
        """Upload package archive bytes (streamed in 1 MiB chunks, SHA-256 checked by the gateway)."""
        return await self._call(
            "gateway",
            lambda: self._packages().UploadPackage(_package_requests(archive), timeout=self.upload_timeout),
            idempotent=False,
        )

    async def get_package(self, package_hash: str) -> package_pb2.Package:
        """A stored package's record."""
        request = package_service_pb2.GetPackageRequest(package_hash=package_hash)
        reply = await self._call(
            "gateway", lambda: self._packages().GetPackage(request, timeout=self.timeout), idempotent=True
        )
        return reply.package

    async def list_packages(self) -> list[package_pb2.Package]:
        """Every stored package, newest first."""
        out: list[package_pb2.Package] = []
        token = ""
        while True:
            request = package_service_pb2.ListPackagesRequest(page_size=100, page_token=token)
            reply = await self._call(
                "gateway",
                functools.partial(self._packages().ListPackages, request, timeout=self.timeout),
                idempotent=True,
            )
            out.extend(reply.packages)
            token = reply.next_page_token
            if not token:
                return out

    # ---- datasets ---------------------------------------------------------------------

    async def list_datasets(self) -> list[data_pb2.Dataset]:
        """Every dataset the data service holds (one it cannot serve carries its `error`)."""
        out: list[data_pb2.Dataset] = []
        token = ""
        while True:
            request = data_service_pb2.ListDatasetsRequest(page_token=token)
            reply = await self._call(
                "data", functools.partial(self._datasets().ListDatasets, request, timeout=self.timeout), idempotent=True
            )
            out.extend(reply.datasets)
            token = reply.next_page_token
            if not token:
                return out

    async def get_dataset(self, dataset_id: str) -> data_pb2.Dataset:
        """A dataset's metadata: rows, bytes, columns, version, source."""
        request = data_service_pb2.GetDatasetRequest(dataset_id=dataset_id)
        reply = await self._call(
            "data", lambda: self._datasets().GetDataset(request, timeout=self.timeout), idempotent=True
        )
        return reply.dataset

    async def sample(
        self, dataset_id: str, n: int, *, seed: int = 0, columns: list[str] | None = None
    ) -> data_service_pb2.SampleRowsResponse:
        """A seeded sample of ``n`` rows (readable cells; the same seed gives the same rows)."""
        request = data_service_pb2.SampleRowsRequest(dataset_id=dataset_id, n=n, seed=seed, columns=columns or [])
        return await self._call(
            "data", lambda: self._datasets().SampleRows(request, timeout=self.timeout), idempotent=True
        )

    async def upload_dataset(
        self, path: str | Path, *, dataset_id: str | None = None, overwrite: bool = False
    ) -> data_pb2.Dataset:
        """Upload a .csv or .parquet file as a dataset (id: the file name without its suffix)."""
        file = Path(path)
        formats = {".csv": data_pb2.DATASET_FORMAT_CSV, ".parquet": data_pb2.DATASET_FORMAT_PARQUET}
        suffix = file.suffix.lower()
        if suffix not in formats:
            raise InvalidArgument(f"{file.name}: the file name must end in .csv or .parquet")
        if not file.is_file():
            raise InvalidArgument(f"{file}: no such file")
        sha, size = hashlib.sha256(), 0
        with file.open("rb") as f:
            while chunk := f.read(UPLOAD_CHUNK):
                sha.update(chunk)
                size += len(chunk)
        header = data_service_pb2.UploadHeader(
            dataset_id=dataset_id or file.name[: -len(suffix)],
            format=formats[suffix],
            size_bytes=size,
            sha256=sha.hexdigest(),
            overwrite=overwrite,
        )
        reply = await self._call(
            "data",
            lambda: self._datasets().UploadDataset(_dataset_requests(file, header), timeout=self.upload_timeout),
            idempotent=False,
        )
        return reply.dataset


async def collect_result(events: AsyncIterator[job_pb2.JobEvent]) -> job_pb2.JobResult:
    """Drain a job's event stream into its complete result (parts joined)."""
    assembler = ResultAssembler()
    async for event in events:
        result = assembler.add(event)
        if result is not None:
            return result
    raise Unavailable("the job's event stream ended before the job did")
