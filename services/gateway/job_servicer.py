"""JobService over the `JobManager`: the gRPC boundary of jobs.

Streams are cursors on the job's event log; a client that goes away only ends its own
cursor (the job runs on; CancelJob stops it). Errors are raised as LivecalcErrors and
mapped to statuses by the server interceptor.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
from grpc import aio

from livecalc.gateway.v1 import job_service_pb2, job_service_pb2_grpc
from services.gateway.jobs import JobManager
from services.gateway.metrics import GatewayMetrics


class JobServicer(job_service_pb2_grpc.JobServiceServicer):
    def __init__(self, manager: JobManager, metrics: GatewayMetrics) -> None:
        self.manager = manager
        self.metrics = metrics

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

    # The detail RPCs are being built (results detail); until then they answer UNIMPLEMENTED
    # rather than the generated base's unnamed error.
    async def GetJobDetail(
        self, request: job_service_pb2.GetJobDetailRequest, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[job_service_pb2.GetJobDetailResponse]:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "GetJobDetail is not available yet")
        yield job_service_pb2.GetJobDetailResponse()

    async def GetJobCashFlows(
        self, request: job_service_pb2.GetJobCashFlowsRequest, context: aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[job_service_pb2.GetJobCashFlowsResponse]:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "GetJobCashFlows is not available yet")
        yield job_service_pb2.GetJobCashFlowsResponse()
