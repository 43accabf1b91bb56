"""What kind of valuation a job is — a full run over the dataset, or a preview of a random sample
of its policies — as one strategy object, so the rest of the gateway asks the kind instead of
testing the spec for a preview.

A **full run** values every block of the dataset: it is planned in chunks of blocks, each chunk
asks its blocks (RunChunkRequest.blocks), the dispatcher keeps its chunks within the window ahead
of the fold, its fold is checkpointed (a restarted gateway resumes it) and it reports running
statistics while it runs. A full run with variants (JobSpec.variants) is the same kind: it values
the plan once more per variant, each pass checkpointed in turn (job_runner.py), and its running
statistics describe the base.

A **preview** values a sample of ``sample_rows`` policies (`planner.preview_plan`): one chunk of
sample groups, asked as a SampleSelection; its groups are the fold's blocks, so no window applies,
nothing is checkpointed (a stopped preview is not resumed), and its only ± is its result's. Its
values are scaled to the dataset's policies, and its result says how far it is from the latest
full run of the same inputs and how uncertain it is (services/valuation/preview_error.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from livecalc.engine.v1 import engine_pb2, engine_service_pb2
from livecalc.gateway.v1 import job_pb2
from services.gateway.fold import JobFold
from services.gateway.planner import Plan, Sizing, plan, preview_plan
from services.valuation.arrays import F64
from services.valuation.preview_error import PreviewUncertainty, preview_uncertainty
from services.valuation.statistics import relative_difference, statistics


@dataclass(frozen=True)
class FullRun:
    """Every block of the dataset."""

    preview = False
    #: The dispatcher keeps chunks within its window ahead of the fold.
    windowed = True
    #: The fold is checkpointed while the job runs; the job resumes after a restart.
    checkpointed = True
    #: Running statistics go out while the job runs.
    running_statistics = True
    #: The fold keeps each block's means (what a preview's sampling error is measured from).
    keeps_block_means = False

    def plan(self, rows: int, sizing: Sizing) -> Plan:
        return plan(
            rows,
            slots=sizing.slots,
            scenarios=sizing.scenarios,
            chunk_blocks=sizing.chunk_blocks,
            slot_steps_per_second=sizing.slot_steps_per_second,
            granule=sizing.granule,
        )

    def select(self, request: engine_service_pb2.RunChunkRequest, job_plan: Plan, first: int, count: int) -> None:
        """Ask ``request`` for blocks [first, first + count)."""
        request.blocks.CopyFrom(engine_pb2.BlockRange(first_block=first, block_count=count))

    def values(self, total: F64, dataset_rows: int, job_plan: Plan) -> F64:
        """The result's values from the fold's total."""
        return total

    def figures(
        self, values: F64, fold: JobFold, primary: int, dataset_rows: int, full_mean: float | None
    ) -> tuple[float | None, PreviewUncertainty | None]:
        """The preview's relative difference from the full run and its uncertainty: none for a full run."""
        return None, None


@dataclass(frozen=True)
class Preview(FullRun):
    """A random sample of ``sample_rows`` policies drawn with ``seed``."""

    sample_rows: int = 0
    seed: int = 0
    preview = True
    windowed = False
    checkpointed = False
    running_statistics = False
    keeps_block_means = True

    def plan(self, rows: int, sizing: Sizing) -> Plan:
        return preview_plan(self.sample_rows)

    def select(self, request: engine_service_pb2.RunChunkRequest, job_plan: Plan, first: int, count: int) -> None:
        """Ask ``request`` for the whole sample, in the plan's groups (they are the fold's blocks)."""
        request.sample.CopyFrom(
            engine_pb2.SampleSelection(n=self.sample_rows, seed=self.seed, group_rows=job_plan.block_rows)
        )

    def values(self, total: F64, dataset_rows: int, job_plan: Plan) -> F64:
        """The sample's totals scaled to the dataset's policies (every output)."""
        return total * (dataset_rows / job_plan.rows)

    def figures(
        self, values: F64, fold: JobFold, primary: int, dataset_rows: int, full_mean: float | None
    ) -> tuple[float | None, PreviewUncertainty | None]:
        difference = None if full_mean is None else relative_difference(float(values[primary].mean()), full_mean)
        group_rows, group_means = fold.block_means()
        uncertainty = preview_uncertainty(
            group_means[:, primary],
            group_rows,
            population=dataset_rows,
            scenario_standard_error=statistics(values[primary]).stderr,
            scenarios=values.shape[1],
        )
        return difference, uncertainty


JobKind = FullRun | Preview
FULL_RUN = FullRun()


def kind_of(spec: job_pb2.JobSpec) -> JobKind:
    """The kind of valuation ``spec`` asks for."""
    if spec.HasField("preview"):
        return Preview(sample_rows=int(spec.preview.sample_rows), seed=int(spec.preview.seed))
    return FULL_RUN
