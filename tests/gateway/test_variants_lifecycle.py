"""A job with variants cancelled, and stopped by its gateway (in-process meshes, tests.inprocess).

The job (24 blocks, 2 variants: 72 blocks in three passes) is long enough that the point where
the test acts leaves more than a whole pass to run. Cancelled in a variant's pass, it ends
CANCELLED and its progress stops there. A gateway stopped during the base pass leaves no
checkpoint to resume from (a variant job keeps its finished passes in memory only): the next
gateway on the same store marks it FAILED, ABORTED, rather than resume half of it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from livecalc.gateway.v1 import job_pb2, job_service_pb2
from services.gateway.recovery import RESTART_MESSAGE
from services.valuation.blocks import BLOCK_SIZE
from tests.engine.mesh import datasets_dir, policies_csv, stochastic_package, upload_package
from tests.gateway.jobmesh import get_job, spec, stub
from tests.inprocess import threaded_mesh

pytestmark = pytest.mark.timeout(120)

BLOCKS = 24
VARIANTS = [
    job_pb2.Variant(name="lapse_down", overrides=[job_pb2.Override(table="lapse", scale=0.5)]),
    job_pb2.Variant(name="rates_down", overrides=[job_pb2.Override(table="curve", shift=-0.01)]),
]


def inputs(tmp: Path) -> tuple[Path, bytes]:
    root = datasets_dir(tmp)
    policies_csv(root / "pol.csv", BLOCKS * BLOCK_SIZE)
    return root, stochastic_package(tmp / "model")


def submit_until(address: str, job: job_pb2.JobSpec, reached: Callable[[job_pb2.JobProgress], bool]) -> str:
    """Submit ``job`` and follow it until a progress event satisfies ``reached``; its id."""
    channel, jobs = stub(address)
    with channel:
        call = jobs.SubmitJob(job_service_pb2.SubmitJobRequest(spec=job), timeout=60)
        try:
            for reply in call:
                event = reply.event
                assert event.WhichOneof("event") in ("accepted", "progress", "statistics"), event
                if event.WhichOneof("event") == "progress" and reached(event.progress):
                    return str(event.job_id)
        finally:
            call.cancel()
    raise AssertionError("the job ended before the point the test waited for")


def big_job(package_hash: str) -> job_pb2.JobSpec:
    return spec(package_hash, "pol", 64, chunk_blocks=1, variants=VARIANTS)


def test_cancel_in_a_variant_pass_stops_the_job(tmp_path: Path) -> None:
    root, archive = inputs(tmp_path)
    with threaded_mesh(tmp_path, datasets=root) as mesh:
        package_hash = upload_package(mesh.gateway, archive)
        job_id = submit_until(mesh.gateway, big_job(package_hash), lambda p: p.blocks_done > BLOCKS)
        channel, jobs = stub(mesh.gateway)
        with channel:
            ended = jobs.CancelJob(job_service_pb2.CancelJobRequest(job_id=job_id, reason="enough"), timeout=30).job
        assert ended.state == job_pb2.JOB_STATE_CANCELLED and ended.cancel_reason == "enough"
        assert BLOCKS < ended.progress.blocks_done < 3 * BLOCKS and ended.progress.blocks_total == 3 * BLOCKS
        assert get_job(mesh.gateway, job_id).progress.blocks_done == ended.progress.blocks_done


def test_a_gateway_stopped_mid_job_fails_it_cleanly_at_the_next_start(tmp_path: Path) -> None:
    root, archive = inputs(tmp_path)
    with threaded_mesh(tmp_path, datasets=root) as mesh:
        package_hash = upload_package(mesh.gateway, archive)
        job_id = submit_until(mesh.gateway, big_job(package_hash), lambda p: 2 <= p.blocks_done < BLOCKS)
    with threaded_mesh(tmp_path, datasets=root) as mesh:  # the same job store and packages
        job = get_job(mesh.gateway, job_id)
    assert job.state == job_pb2.JOB_STATE_FAILED, job
    assert (job.error.code, job.error.message) == ("ABORTED", RESTART_MESSAGE)
