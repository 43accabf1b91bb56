"""JobService over the `JobManager`: the gRPC boundary of jobs.

Streams are cursors on the job's event log; a client that goes away only ends its own
cursor (the job runs on; CancelJob stops it). GetJobDetail and GetJobCashFlows recompute a
finished job's detail on the engines (detail.py). Errors are raised as LivecalcErrors and
mapped to statuses by the server interceptor.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from grpc import aio

from livecalc.gateway.v1 import job_service_pb2, job_service_pb2_grpc
from services.gateway.detail import DetailService
from services.gateway.jobs import JobManager
from services.gateway.metrics import GatewayMetrics


class JobServicer(job_service_pb2_grpc.JobServiceServicer):
    def __init__(self, manager: JobManager, metrics: GatewayMetrics) -> None:
        self.manager = manager
        self.metrics = metrics
        #: Per-policy values and cash flows of finished jobs, recomputed on demand (detail.py).
        self.details = DetailService(manager, metrics)

    async def SubmitJob(
        self, request: job_service_pb2.SubmitJobRequest, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[job_service_pb2.SubmitJobResponse]:
        job_id = await self.manager.submit(request.spec, request.idempotency_key)
        async for event in self.manager.follow(job_id, 0):
            self.metrics.events_sent.inc()
            yield job_service_pb2.SubmitJobResponse(event=event)

    async def WatchJob(
        self, request: job_service_pb2.WatchJobRequest, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[job_service_pb2.WatchJobResponse]:
        async for event in self.manager.follow(request.job_id, int(request.after_sequence)):
            self.metrics.events_sent.inc()
            yield job_service_pb2.WatchJobResponse(event=event)

    async def GetJob(
        self, request: job_service_pb2.GetJobRequest, context: aio.ServicerContext[Any, Any]
    ) -> job_service_pb2.GetJobResponse:
        return job_service_pb2.GetJobResponse(job=self.manager.get(request.job_id))

    async def ListJobs(
        self, request: job_service_pb2.ListJobsRequest, context: aio.ServicerContext[Any, Any]
    ) -> job_service_pb2.ListJobsResponse:
        jobs, token = self.manager.list(request.page_size, request.page_token, int(request.state))
        return job_service_pb2.ListJobsResponse(jobs=jobs, next_page_token=token)

    async def CancelJob(
        self, request: job_service_pb2.CancelJobRequest, context: aio.ServicerContext[Any, Any]
    ) -> job_service_pb2.CancelJobResponse:
        return job_service_pb2.CancelJobResponse(job=await self.manager.cancel(request.job_id, request.reason))

    async def GetJobDetail(
        self, request: job_service_pb2.GetJobDetailRequest, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[job_service_pb2.GetJobDetailResponse]:
        async for message in self.details.detail(request):
            yield message

    async def GetJobCashFlows(
        self, request: job_service_pb2.GetJobCashFlowsRequest, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[job_service_pb2.GetJobCashFlowsResponse]:
        async for message in self.details.cash_flows(request):
            yield message
