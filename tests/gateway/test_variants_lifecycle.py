"""A job with variants cancelled, and stopped by its gateway (in-process meshes, tests.inprocess).

The job (24 blocks, 2 variants: 72 blocks in three passes) is long enough that the point where
the test acts leaves more than a whole pass to run. Cancelled in a variant's pass, it ends
CANCELLED and its progress stops there. A gateway stopped during the base pass, or during the
first variant's, leaves a checkpoint of the running pass with the finished passes' totals; the
next gateway on the same store resumes the job in that pass and ends it with the base's and
every variant's result hash and the steps of the same job run without a stop, its progress
never stepping back across the restart, and only the blocks after the checkpoint dispatched
again. The same holds from the checkpoint a variant's pass writes as it starts (all that a
gateway killed just after the base pass ended leaves of the pass).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from livecalc.gateway.v1 import job_pb2, job_service_pb2
from services.gateway.store import JobStore
from services.valuation.blocks import BLOCK_SIZE
from tests.engine.mesh import datasets_dir, policies_csv, stochastic_package, upload_package
from tests.gateway.jobmesh import get_job, spec, stub, submit, watch
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


#: A progress event after (nearly) every one-block chunk, so the windows the stop tests wait for
#: (a few blocks of one pass) always see one: at the default 0.25 s, a fast machine folds a
#: whole pass between two events and the test would read the job to its end.
EVERY_BLOCK = {"progress_seconds": 0.005}


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


def stopped_and_resumed(
    tmp: Path, reached: Callable[[job_pb2.JobProgress], bool], finished: int, *, at_pass_start: bool = False
) -> None:
    """Stop the gateway once the job's progress has ``reached``, check the store holds a
    checkpoint of pass ``finished`` (the passes before it done), and check that the next gateway
    on the same store resumes the job to the result of the same job run without a stop.
    ``at_pass_start``: the checkpoint is set back to the one the pass's start wrote (what a
    gateway killed just after the pass before ended leaves)."""
    root, archive = inputs(tmp)
    with threaded_mesh(tmp, datasets=root, gateway_flags=EVERY_BLOCK) as mesh:
        package_hash = upload_package(mesh.gateway, archive)
        job_id = submit_until(mesh.gateway, big_job(package_hash), reached)
    store = JobStore(tmp / "gw" / "jobs.sqlite3")  # the stopped gateway's, between the two
    try:
        checkpoint = store.checkpoint(job_id)
        assert checkpoint is not None
        if at_pass_start:
            store.put_checkpoint(dataclasses.replace(checkpoint, next_block=0, steps=0, total=None))
            store.flush()
            checkpoint = store.checkpoint(job_id)
    finally:
        store.close()
    assert checkpoint is not None and len(checkpoint.packages) == 1 + len(VARIANTS)
    assert len(checkpoint.finished) == finished, "the gateway stopped in another pass than the test meant"

    with threaded_mesh(tmp, datasets=root) as mesh:  # the same job store and packages
        restarted = time.monotonic()
        events = watch(mesh.gateway, job_id)
        resumed_in = time.monotonic() - restarted
        assert events[-1].WhichOneof("event") == "result", events[-1]
        resumed = events[-1].result
        # resumed, not rerun: only the running pass's blocks after its checkpoint and the later passes
        dispatched = mesh.metric(mesh.gateway, "livecalc_gateway_chunks_dispatched_total")
        assert 0 < dispatched <= (3 - finished) * BLOCKS - checkpoint.next_block, f"{dispatched:g} chunks dispatched"
        started = time.monotonic()
        again = submit(mesh.gateway, big_job(package_hash))  # the same job, not stopped
        whole_in = time.monotonic() - started
        assert again[-1].WhichOneof("event") == "result", again[-1]
        uninterrupted = again[-1].result

    assert resumed.result_hash == uninterrupted.result_hash
    assert resumed.steps == uninterrupted.steps, "a block counted twice or never across the restart"
    assert [(v.name, v.package_hash, v.result_hash) for v in resumed.variants] == [
        (v.name, v.package_hash, v.result_hash) for v in uninterrupted.variants
    ]
    assert [v.statistics for v in resumed.variants] == [v.statistics for v in uninterrupted.variants]
    progress = [e.progress for e in events if e.WhichOneof("event") == "progress"]
    done = [p.blocks_done for p in progress]
    assert done == sorted(done) and done[-1] == 3 * BLOCKS, f"progress stepped back: {done}"
    policies = [p.policies_done for p in progress]
    assert policies == sorted(policies), f"policies done stepped back: {policies}"
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    print(
        f"\nstopped in pass {finished} at its block {checkpoint.next_block}: {dispatched:g} of {3 * BLOCKS} chunks "
        f"dispatched after the restart, ended in {resumed_in:.2f} s (the job without a stop: {whole_in:.2f} s)"
    )


def test_a_gateway_stopped_in_the_base_pass_resumes_the_job_to_the_same_hashes(tmp_path: Path) -> None:
    stopped_and_resumed(tmp_path, lambda p: 2 <= p.blocks_done < BLOCKS // 2, finished=0)


def test_a_gateway_stopped_in_a_variants_pass_resumes_it_to_the_same_hashes(tmp_path: Path) -> None:
    stopped_and_resumed(tmp_path, lambda p: BLOCKS + 2 <= p.blocks_done < BLOCKS + BLOCKS // 2, finished=1)


def test_a_variants_pass_resumes_from_the_checkpoint_its_start_wrote(tmp_path: Path) -> None:
    stopped_and_resumed(
        tmp_path, lambda p: BLOCKS + 2 <= p.blocks_done < BLOCKS + BLOCKS // 2, finished=1, at_pass_start=True
    )
