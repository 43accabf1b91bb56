"""Statistics, running estimates and final results as JobService messages.

A result describes every output the package's model declares (docs/model-interface.md
"Outputs"): `JobResult.outputs` holds each output's statistics and per-scenario portfolio
value, in declared order; the primary output's statistics (with every output's mean) are
`JobResult.statistics`, and its values give `result_hash`. The numbers come from
services.valuation.statistics (docs/model.md "Statistics"); this module only shapes them, and
splits values too large for one gRPC message into JobResultPart events (gRPC's default
message limit is 4 MiB).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import numpy as np

from livecalc.gateway.v1 import job_pb2
from services.valuation.arrays import F64
from services.valuation.interface.declaration import Outputs
from services.valuation.preview_error import PreviewUncertainty
from services.valuation.statistics import result_hash, statistics

#: Values (of all outputs together) one result event or part carries at most (8 bytes each: 2 MiB).
PART_VALUES: Final = 256 * 1024


def _check(values: F64, outputs: Outputs) -> None:
    if values.ndim != 2 or values.shape[0] != len(outputs.names):
        raise ValueError(f"values of shape {values.shape} for {len(outputs.names)} outputs")


def output_statistics(values: F64) -> job_pb2.Statistics:
    """Statistics of one output's portfolio values by scenario (f64 [N]), without output means."""
    s = statistics(values)
    return job_pb2.Statistics(
        scenario_count=s.count,
        mean=s.mean,
        std=s.std,
        standard_error=s.stderr,
        min=s.min,
        max=s.max,
        percentiles=[job_pb2.Percentile(level=p, value=v) for p, v in s.percentiles],
        ctes=[job_pb2.Cte(level=a, value=v) for a, v in s.cte],
    )


def statistics_message(values: F64, outputs: Outputs) -> job_pb2.Statistics:
    """Statistics of the primary output of f64 [K][N] (rows in the outputs' order), with every
    output's mean."""
    _check(values, outputs)
    msg = output_statistics(values[outputs.primary])
    msg.output_means.extend(
        job_pb2.OutputMean(name=name, mean=msg.mean if k == outputs.primary else float(np.mean(values[k])))
        for k, name in enumerate(outputs.names)
    )
    return msg


def running_statistics(estimate: F64, rows_done: int, rows_total: int, outputs: Outputs) -> job_pb2.RunningStatistics:
    return job_pb2.RunningStatistics(
        policies_done=rows_done, policies_total=rows_total, statistics=statistics_message(estimate, outputs)
    )


def final_result(
    values: F64,
    outputs: Outputs,
    *,
    policy_count: int,
    dataset_version: str,
    package_hash: str,
    steps: int,
    elapsed_seconds: float,
    preview: bool = False,
    preview_relative_difference: float | None = None,
    preview_uncertainty: PreviewUncertainty | None = None,
) -> job_pb2.JobResult:
    """The full result of f64 [K][N] (rows in the outputs' order), every output's values
    included (see `split_result` before sending it)."""
    _check(values, outputs)
    primary = values[outputs.primary]
    result = job_pb2.JobResult(
        statistics=statistics_message(values, outputs),
        result_hash=result_hash(primary),
        policy_count=policy_count,
        dataset_version=dataset_version,
        package_hash=package_hash,
        steps=steps,
        elapsed_seconds=elapsed_seconds,
        preview=preview,
        outputs=[
            job_pb2.OutputResult(
                name=name,
                primary=k == outputs.primary,
                statistics=output_statistics(values[k]),
                values=values[k].tolist(),
            )
            for k, name in enumerate(outputs.names)
        ],
    )
    if preview_relative_difference is not None:
        result.preview_relative_difference = preview_relative_difference
    if preview_uncertainty is not None:
        result.preview_uncertainty.CopyFrom(uncertainty_message(preview_uncertainty))
    return result


def uncertainty_message(u: PreviewUncertainty) -> job_pb2.PreviewUncertainty:
    """A preview's uncertainty (services/valuation/preview_error.py) as its message; levels in percent."""
    return job_pb2.PreviewUncertainty(
        confidence_level=100.0 * u.confidence,
        sampling_standard_error=u.sampling_standard_error,
        scenario_standard_error=u.scenario_standard_error,
        standard_error=u.standard_error,
        half_width=u.half_width,
        sampling_half_width=u.sampling_half_width,
        sample_groups=u.groups,
        sampling_degrees_of_freedom=u.sampling_degrees_of_freedom,
        degrees_of_freedom=u.degrees_of_freedom,
    )


def primary_output(result: job_pb2.JobResult) -> job_pb2.OutputResult:
    """The result's primary output (the first flagged; an empty one for a result without outputs)."""
    return next((o for o in result.outputs if o.primary), job_pb2.OutputResult())


def value_count(result: job_pb2.JobResult) -> int:
    """Values the result's outputs carry, all together."""
    return sum(len(o.values) for o in result.outputs)


def split_result(
    result: job_pb2.JobResult, part_values: int = PART_VALUES
) -> tuple[list[job_pb2.JobResultPart], job_pb2.JobResult]:
    """(parts, result event): values that fit stay in the result; when all outputs' values
    together do not, every output's go out in parts first (output by output, each in scenario
    order, at most ``part_values`` values a part) and the result keeps none."""
    if value_count(result) <= part_values:
        return [], result
    parts = []
    for k, output in enumerate(result.outputs):
        values = list(output.values)
        n = len(values)
        parts += [
            job_pb2.JobResultPart(
                first_scenario=i, scenario_count=n, output_index=k, values=values[i : i + part_values]
            )
            for i in range(0, n, part_values)
        ]
    slim = job_pb2.JobResult()
    slim.CopyFrom(result)
    for output in slim.outputs:
        del output.values[:]
    slim.outputs_in_parts = True
    return parts, slim


def join_parts(parts: Iterable[job_pb2.JobResultPart]) -> dict[int, list[float]]:
    """Each output's values back from the parts, by output index (checks that each output's
    parts are contiguous from scenario 0)."""
    out: dict[int, list[float]] = {}
    for part in parts:
        values = out.setdefault(int(part.output_index), [])
        if part.first_scenario != len(values):
            raise ValueError(
                f"result part of output {part.output_index} at scenario {part.first_scenario}, expected {len(values)}"
            )
        values.extend(part.values)
    return out


def with_parts(result: job_pb2.JobResult, parts: Iterable[job_pb2.JobResultPart]) -> job_pb2.JobResult:
    """A copy of the result event with the values its parts carried put back."""
    whole = job_pb2.JobResult()
    whole.CopyFrom(result)
    if whole.outputs_in_parts:
        for k, values in join_parts(parts).items():
            if not 0 <= k < len(whole.outputs):
                raise ValueError(f"result part of output {k}; the result has {len(whole.outputs)}")
            del whole.outputs[k].values[:]
            whole.outputs[k].values.extend(values)
        whole.outputs_in_parts = False
    return whole


def attach_values(result: job_pb2.JobResult, values: F64 | None) -> None:
    """Put stored values (f64 [rows][N], `JobStore.result_values`) back into the result's outputs
    when they fit one message: row k into output k, or a single row (a result recorded before
    outputs: the primary's alone) into the primary."""
    if values is None or values.size > PART_VALUES:
        return
    if values.shape[0] == len(result.outputs):
        targets = list(result.outputs)
    elif values.shape[0] == 1:
        targets = [o for o in result.outputs if o.primary][:1]
    else:
        return
    for output, row in zip(targets, values, strict=False):
        del output.values[:]
        output.values.extend(row.tolist())
