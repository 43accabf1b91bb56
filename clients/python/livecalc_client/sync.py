"""`Client`: the blocking Python client, a thin wrapper over `AsyncClient`.

Each call runs the asynchronous method on the client's own event loop (an `asyncio.Runner`),
so a script, a notebook cell or a CLI command can use the mesh without writing async code.
Ctrl-C during a call cancels that call (a stream's underlying RPC included) and raises
KeyboardInterrupt; the job itself keeps running on the mesh.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable, Coroutine, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from livecalc.data.v1 import data_pb2, data_service_pb2
from livecalc.gateway.v1 import job_pb2, job_service_pb2, package_pb2, package_service_pb2
from livecalc_client.aio import DEFAULT_GATEWAY, AsyncClient, ResultAssembler
from livecalc_client.detail import BATCH_ROWS, DataFrame, RecordBatch
from livecalc_client.errors import Unavailable
from livecalc_client.results import Job, JobResult, JobState, result_from_proto

T = TypeVar("T")


class Client:
    """Blocking client of a LiveCalc Mesh; the same methods as `AsyncClient`, without ``await``.

    >>> with Client("localhost:50051") as lc:
    ...     for event in lc.submit(job_spec(package_hash, "policies")):
    ...         print(event.WhichOneof("event"))
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
        self._runner = asyncio.Runner()
        self.aio = AsyncClient(
            gateway,
            data=data,
            timeout=timeout,
            upload_timeout=upload_timeout,
            stream_timeout=stream_timeout,
            retries=retries,
            token=token,
            tls=tls,
            tls_ca=tls_ca,
        )

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the channels and the client's event loop."""
        try:
            self._runner.run(self.aio.close())
        finally:
            self._runner.close()

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self._runner.run(coro)

    def _iterate(self, events: AsyncGenerator[T, None]) -> Iterator[T]:
        async def step() -> tuple[bool, T | None]:
            try:
                return True, await anext(events)
            except StopAsyncIteration:
                return False, None

        try:
            while True:
                more, item = self._run(step())
                if not more:
                    return
                yield item  # type: ignore[misc]  # item is a T whenever more is True
        finally:
            # closing the async generator cancels its RPC (a KeyboardInterrupt already did)
            with contextlib.suppress(RuntimeError):
                self._run(events.aclose())

    # jobs
    def submit(self, spec: job_pb2.JobSpec, *, idempotency_key: str | None = None) -> Iterator[job_pb2.JobEvent]:
        """Submit a job and iterate over its events until it ends (see `AsyncClient.submit`)."""
        return self._iterate(self.aio.submit(spec, idempotency_key=idempotency_key))

    def watch(self, job_id: str, *, after_sequence: int = 0) -> Iterator[job_pb2.JobEvent]:
        """Iterate over a job's events after ``after_sequence`` until it ends."""
        return self._iterate(self.aio.watch(job_id, after_sequence=after_sequence))

    def get_job(self, job_id: str) -> job_pb2.Job:
        """The current record of a job."""
        return self._run(self.aio.get_job(job_id))

    def list_jobs(
        self,
        *,
        state: job_pb2.JobState.ValueType = job_pb2.JOB_STATE_UNSPECIFIED,
        limit: int | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> list[job_pb2.Job]:
        """Jobs, newest first (optionally of one state, carrying every one of ``labels``)."""
        return self._run(self.aio.list_jobs(state=state, limit=limit, labels=labels))

    def cancel_job(self, job_id: str, reason: str = "") -> job_pb2.Job:
        """Cancel a job; returns the job after cancellation."""
        return self._run(self.aio.cancel_job(job_id, reason))

    def wait(self, job_id: str) -> job_pb2.JobResult:
        """Wait for a job's result; raises `JobFailed` / `JobCancelled` when it has none."""
        return collect(self.watch(job_id))

    def run(self, spec: job_pb2.JobSpec) -> job_pb2.JobResult:
        """Submit a job and wait for its result."""
        return collect(self.submit(spec))

    # jobs as typed values (livecalc_client.results)
    def job(self, job_id: str) -> Job:
        """A job's record as a typed `Job` (its `state` a `JobState` name)."""
        return self._run(self.aio.job(job_id))

    def jobs(
        self, *, state: JobState | None = None, limit: int | None = None, labels: Mapping[str, str] | None = None
    ) -> list[Job]:
        """`list_jobs` as typed `Job`s (their results without per-scenario values)."""
        return self._run(self.aio.jobs(state=state, limit=limit, labels=labels))

    def result(self, job_id: str) -> JobResult:
        """Wait for a job's result, as a typed `JobResult` (see `wait`)."""
        return result_from_proto(self.wait(job_id))

    def value(self, spec: job_pb2.JobSpec) -> JobResult:
        """Submit a job and wait for its result, as a typed `JobResult` (see `run`)."""
        return result_from_proto(self.run(spec))

    # detail on demand (livecalc_client.detail)
    def detail_stream(
        self, job_id: str, *, scenarios: Sequence[int] = (), blocks: range | slice | None = None
    ) -> Iterator[job_service_pb2.GetJobDetailResponse]:
        """GetJobDetail's messages (see `AsyncClient.detail_stream`)."""
        return self._iterate(self.aio.detail_stream(job_id, scenarios=scenarios, blocks=blocks))

    def job_detail_batches(
        self,
        job_id: str,
        *,
        scenarios: Sequence[int] = (),
        blocks: range | slice | None = None,
        batch_rows: int = BATCH_ROWS,
        on_progress: Callable[[job_pb2.JobProgress], None] | None = None,
    ) -> Iterator[tuple[job_service_pb2.DetailHeader, RecordBatch]]:
        """Per-policy detail as (header, RecordBatch) pairs in row order, for bounded memory."""
        return self._iterate(
            self.aio.job_detail_batches(
                job_id, scenarios=scenarios, blocks=blocks, batch_rows=batch_rows, on_progress=on_progress
            )
        )

    def job_detail(
        self, job_id: str, *, scenarios: Sequence[int] = (), blocks: range | slice | None = None
    ) -> DataFrame:
        """Per-policy detail as a pandas DataFrame (see `AsyncClient.job_detail`)."""
        return self._run(self.aio.job_detail(job_id, scenarios=scenarios, blocks=blocks))

    def cash_flows(
        self,
        job_id: str,
        *,
        scenarios: Sequence[int] = (),
        mean: bool = False,
        on_progress: Callable[[job_pb2.JobProgress], None] | None = None,
    ) -> job_service_pb2.CashFlows:
        """The job's cash flows by month (see `AsyncClient.cash_flows`)."""
        return self._run(self.aio.cash_flows(job_id, scenarios=scenarios, mean=mean, on_progress=on_progress))

    def job_cash_flows(self, job_id: str, *, scenarios: Sequence[int] = (), mean: bool = False) -> DataFrame:
        """The job's cash flows by month as a pandas DataFrame."""
        return self._run(self.aio.job_cash_flows(job_id, scenarios=scenarios, mean=mean))

    # packages
    def upload_package(self, path: str | Path) -> package_service_pb2.UploadPackageResponse:
        """Upload a package file, or build a package directory and upload it."""
        return self._run(self.aio.upload_package(path))

    def upload_package_bytes(self, archive: bytes) -> package_service_pb2.UploadPackageResponse:
        """Upload package archive bytes."""
        return self._run(self.aio.upload_package_bytes(archive))

    def get_package(self, package_hash: str) -> package_pb2.Package:
        """A stored package's record."""
        return self._run(self.aio.get_package(package_hash))

    def list_packages(self) -> list[package_pb2.Package]:
        """Every stored package, newest first."""
        return self._run(self.aio.list_packages())

    # datasets
    def list_datasets(self) -> list[data_pb2.Dataset]:
        """Every dataset of the data service."""
        return self._run(self.aio.list_datasets())

    def get_dataset(self, dataset_id: str) -> data_pb2.Dataset:
        """A dataset's metadata."""
        return self._run(self.aio.get_dataset(dataset_id))

    def sample(
        self, dataset_id: str, n: int, *, seed: int = 0, columns: list[str] | None = None
    ) -> data_service_pb2.SampleRowsResponse:
        """A seeded sample of ``n`` rows."""
        return self._run(self.aio.sample(dataset_id, n, seed=seed, columns=columns))

    def upload_dataset(
        self, path: str | Path, *, dataset_id: str | None = None, overwrite: bool = False
    ) -> data_pb2.Dataset:
        """Upload a .csv or .parquet file as a dataset."""
        return self._run(self.aio.upload_dataset(path, dataset_id=dataset_id, overwrite=overwrite))


def collect(events: Iterator[job_pb2.JobEvent]) -> job_pb2.JobResult:
    """Drain a job's events into its complete result (parts joined)."""
    assembler = ResultAssembler()
    for event in events:
        result = assembler.add(event)
        if result is not None:
            return result
    raise Unavailable("the job's event stream ended before the job did")
