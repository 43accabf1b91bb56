"""The checkpoint of a job with variants: its passes in the store, what a restarted gateway
accepts to resume from, and the live job's invariants over its passes.

A job with variants values its plan once per pass (the base's, then each variant's). The store
keeps each pass's package hash and a finished pass's total and steps beside the running pass's
checkpoint; `recovery.resumable` refuses a checkpoint that does not name every pass's package;
a pass joins the finished ones only with its fold complete and while a pass follows it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from livecalc.gateway.v1 import job_pb2
from services.gateway.events import EventLog
from services.gateway.fold import FoldState, JobFold
from services.gateway.job_state import JobStateError, Phase
from services.gateway.live_job import LiveJob
from services.gateway.planner import plan
from services.gateway.recovery import resumable
from services.gateway.store import Checkpoint, JobStore, PassTotal, ResultKey
from services.gateway.variants import VariantPackage
from services.valuation.blocks import BLOCK_SIZE
from services.valuation.scenarios import ScenarioParams

BASE, MORT, LAPSE = "b" * 64, "m" * 64, "l" * 64
BLOCKS, OUTPUTS, SCENARIOS = 4, 5, 3


def variant_spec(*names: str) -> job_pb2.JobSpec:
    return job_pb2.JobSpec(
        package_hash=BASE,
        dataset_id="pol",
        variants=[job_pb2.Variant(name=n, overrides=[job_pb2.Override(table="lapse", scale=0.5)]) for n in names],
    )


def checkpoint(packages: tuple[str, ...] = (), finished: int = 0) -> Checkpoint:
    total = np.zeros((OUTPUTS, SCENARIOS))
    done = tuple(PassTotal(1, total) for _ in range(finished))
    return Checkpoint("j", "v1", BLOCKS * BLOCK_SIZE, 1, 2, 10, total, packages, done)


def test_the_store_keeps_each_pass_and_the_finished_ones_totals_bit_for_bit(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite3")
    try:
        base_total = np.random.default_rng(7).normal(size=(OUTPUTS, SCENARIOS))
        with store.transaction():  # the job's first checkpoint records its passes
            for index, package_hash in enumerate((BASE, MORT, LAPSE)):
                store.put_pass("j", index, package_hash)
            store.put_checkpoint(checkpoint())
        store.flush()
        first = store.checkpoint("j")
        assert first is not None and first.packages == (BASE, MORT, LAPSE) and first.finished == ()

        with store.transaction():  # the base's pass ends: its total, and the first variant's checkpoint
            store.put_pass("j", 0, BASE, PassTotal(123, base_total))
            store.put_checkpoint(Checkpoint("j", "v1", BLOCKS * BLOCK_SIZE, 1, 0, 0, None))
        store.flush()
        second = store.checkpoint("j")
        assert second is not None and (second.next_block, second.steps, second.total) == (0, 0, None)
        assert second.packages == (BASE, MORT, LAPSE) and [p.steps for p in second.finished] == [123]
        assert second.finished[0].total.tobytes() == base_total.tobytes()

        store.drop_checkpoint("j")  # the job's end drops its passes with its checkpoint
        store.flush()
        assert store.checkpoint("j") is None
        assert store._db.execute("SELECT COUNT(*) FROM job_passes").fetchone()[0] == 0
    finally:
        store.close()


def test_a_variant_job_resumes_only_from_a_checkpoint_naming_every_pass_with_one_to_run() -> None:
    plain = job_pb2.Job(job_id="j", spec=job_pb2.JobSpec(package_hash=BASE, dataset_id="pol"))
    with_variants = job_pb2.Job(job_id="j", spec=variant_spec("mort", "lapse"))
    preview = job_pb2.Job(
        job_id="j", spec=job_pb2.JobSpec(package_hash=BASE, preview=job_pb2.PreviewSpec(sample_rows=9))
    )
    assert resumable(plain, checkpoint())
    assert not resumable(preview, checkpoint())
    assert resumable(with_variants, checkpoint((BASE, MORT, LAPSE), finished=2))  # in the last pass
    assert not resumable(with_variants, checkpoint())  # no passes recorded
    assert not resumable(with_variants, checkpoint((BASE, MORT)))  # a variant's package missing
    assert not resumable(with_variants, checkpoint((MORT, BASE, LAPSE)))  # not this job's base
    assert not resumable(with_variants, checkpoint((BASE, MORT, LAPSE), finished=3))  # nothing left to run


def live_job() -> LiveJob:
    return LiveJob(
        job=job_pb2.Job(job_id="j", spec=variant_spec("mort", "lapse")),
        log=EventLog("j"),
        plan=plan(BLOCKS * BLOCK_SIZE, slots=1, scenarios=SCENARIOS, chunk_blocks=1),
        params=ScenarioParams(count=SCENARIOS, seed=1),
        key=ResultKey(BASE, "v1", "s"),
        rows=BLOCKS * BLOCK_SIZE,
        phase=Phase.RUNNING,
        variants=(VariantPackage("mort", MORT), VariantPackage("lapse", LAPSE)),
    )


def complete_fold() -> JobFold:
    fold = JobFold(BLOCKS * BLOCK_SIZE, BLOCKS, SCENARIOS, outputs=OUTPUTS)
    fold.resume(FoldState(BLOCKS, np.ones((OUTPUTS, SCENARIOS)), 5))
    return fold


def test_passes_end_complete_and_in_order_and_checkpoints_count_blocks_over_every_pass() -> None:
    job = live_job()
    assert job.package_hash == BASE and job.packages == (BASE, MORT, LAPSE)
    job.fold = JobFold(BLOCKS * BLOCK_SIZE, BLOCKS, SCENARIOS, outputs=OUTPUTS)
    with pytest.raises(JobStateError, match="fold incomplete"):
        job.finish_pass()
    job.note_reported(BLOCKS)
    job.note_checkpoint(BLOCKS - 1, with_progress=True)
    for variant in (MORT, LAPSE):
        job.fold = complete_fold()
        job.finish_pass()
        job.fold = JobFold(BLOCKS * BLOCK_SIZE, BLOCKS, SCENARIOS, outputs=OUTPUTS)
        assert job.package_hash == variant and job.blocks_done == job.pass_blocks == len(job.finished) * BLOCKS
        job.note_checkpoint(job.pass_blocks, with_progress=False)  # the new pass's first
    with pytest.raises(JobStateError, match="stepping back"):
        job.note_checkpoint(BLOCKS, with_progress=False)  # the first variant's pass's block 0 again
    job.fold = complete_fold()
    with pytest.raises(JobStateError, match="after the last"):
        job.finish_pass()  # the last pass ends the job, not another pass
