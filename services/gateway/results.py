"""Statistics, running estimates and final results as JobService messages.

The numbers come from services.valuation.statistics (MODEL.md's set); this module only
shapes them, and splits a result vector too large for one gRPC message into
JobResultPart events (NOTES.md: the default message limit is 4 MiB).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

import numpy as np

from livecalc.gateway.v1 import job_pb2
from services.gateway.fold import COMPONENTS
from services.valuation.arrays import F64
from services.valuation.statistics import result_hash, statistics

#: Scenario values one result event or part carries at most (8 bytes each: 2 MiB).
PART_VALUES: Final = 256 * 1024


def statistics_message(pvs: F64) -> job_pb2.Statistics:
    """Statistics of pv_net_cf and the component means of f64 [5][N] (rows in COMPONENTS order)."""
    s = statistics(pvs[0])
    means = {name: float(np.mean(pvs[i])) for i, name in enumerate(COMPONENTS)}
    return job_pb2.Statistics(
        scenario_count=s.count,
        mean=s.mean,
        std=s.std,
        standard_error=s.stderr,
        min=s.min,
        max=s.max,
        percentiles=[job_pb2.Percentile(level=p, value=v) for p, v in s.percentiles],
        ctes=[job_pb2.Cte(level=a, value=v) for a, v in s.cte],
        mean_pv_premiums=means["pv_premiums"],
        mean_pv_claims=means["pv_claims"],
        mean_pv_expenses=means["pv_expenses"],
        mean_pv_commissions=means["pv_commissions"],
    )


def running_statistics(estimate: F64, rows_done: int, rows_total: int) -> job_pb2.RunningStatistics:
    return job_pb2.RunningStatistics(
        policies_done=rows_done, policies_total=rows_total, statistics=statistics_message(estimate)
    )


def final_result(
    pvs: F64,
    *,
    policy_count: int,
    dataset_version: str,
    package_hash: str,
    steps: int,
    elapsed_seconds: float,
    preview: bool = False,
    preview_relative_difference: float | None = None,
) -> job_pb2.JobResult:
    """The full result, vector included (see `split_result` before sending it)."""
    result = job_pb2.JobResult(
        statistics=statistics_message(pvs),
        pv_net_cf=pvs[0].tolist(),
        result_hash=result_hash(pvs[0]),
        policy_count=policy_count,
        dataset_version=dataset_version,
        package_hash=package_hash,
        steps=steps,
        elapsed_seconds=elapsed_seconds,
        preview=preview,
    )
    if preview_relative_difference is not None:
        result.preview_relative_difference = preview_relative_difference
    return result


def split_result(
    result: job_pb2.JobResult, part_values: int = PART_VALUES
) -> tuple[list[job_pb2.JobResultPart], job_pb2.JobResult]:
    """(parts, result event): small vectors stay in the result; large ones go out in parts first."""
    n = len(result.pv_net_cf)
    if n <= part_values:
        return [], result
    values = list(result.pv_net_cf)
    parts = [
        job_pb2.JobResultPart(first_scenario=i, pv_net_cf=values[i : i + part_values], scenario_count=n)
        for i in range(0, n, part_values)
    ]
    slim = job_pb2.JobResult()
    slim.CopyFrom(result)
    del slim.pv_net_cf[:]
    slim.pv_net_cf_in_parts = True
    return parts, slim


def join_parts(parts: Iterator[job_pb2.JobResultPart] | list[job_pb2.JobResultPart]) -> list[float]:
    """The vector back from its parts (client side; checks they are contiguous)."""
    out: list[float] = []
    for part in parts:
        if part.first_scenario != len(out):
            raise ValueError(f"result part at scenario {part.first_scenario}, expected {len(out)}")
        out.extend(part.pv_net_cf)
    return out


def relative_difference(preview_mean: float, full_mean: float) -> float:
    """(preview − full)/|full|; ±inf when the full mean is 0 and they differ."""
    if full_mean == 0:
        return 0.0 if preview_mean == 0 else float(np.copysign(np.inf, preview_mean))
    return (preview_mean - full_mean) / abs(full_mean)
