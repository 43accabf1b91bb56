"""The RunChunk requests of one job, built in one place.

Every request of a job carries the same job part (`job_part`: its id, package, dataset version,
scenarios, threads, time limit, and where engines download the package) and its own selection:
a chunk's block range, or a preview's sample (`JobKind.select`). The dispatcher asks `for_work`
for each piece of work it sends, a chunk or a retried remainder of one.
"""

from __future__ import annotations

from dataclasses import dataclass

from livecalc.engine.v1 import engine_service_pb2
from livecalc.gateway.v1 import job_pb2
from services.gateway.job_kind import JobKind
from services.gateway.planner import Plan
from services.valuation.blocks import BLOCK_SIZE


def job_part(
    job: job_pb2.Job, *, dataset_version: str, package_address: str, time_limit_seconds: float
) -> engine_service_pb2.RunChunkRequest:
    """What every RunChunk request of ``job`` carries."""
    spec = job.spec
    return engine_service_pb2.RunChunkRequest(
        job_id=job.job_id,
        package_hash=spec.package_hash,
        package_address=package_address,
        dataset_id=spec.dataset_id,
        dataset_version=dataset_version,
        block_size=BLOCK_SIZE,
        scenarios=spec.scenarios,
        threads=spec.threads,
        time_limit_seconds=time_limit_seconds,
    )


@dataclass(frozen=True)
class ChunkRequests:
    """RunChunk requests of one job: ``job`` (the part every request shares) with one piece's
    selection, as ``kind`` asks it of ``plan``."""

    job: engine_service_pb2.RunChunkRequest
    kind: JobKind
    plan: Plan

    @property
    def time_limit_seconds(self) -> float:
        return float(self.job.time_limit_seconds)

    def for_work(self, chunk_id: int, first_block: int, block_count: int) -> engine_service_pb2.RunChunkRequest:
        """The request for blocks [first_block, first_block + block_count) of chunk ``chunk_id``."""
        req = engine_service_pb2.RunChunkRequest()
        req.CopyFrom(self.job)
        req.chunk_id = chunk_id
        self.kind.select(req, self.plan, first_block, block_count)
        return req
