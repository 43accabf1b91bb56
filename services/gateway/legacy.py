"""Job records and events stored before results carried declared outputs, read as they are now.

Before the model interface a result described term life alone: the portfolio pv_net_cf by
scenario (JobResult and JobResultPart field 2) and, beside net_cf's statistics, the means of
premiums, claims, expenses and commissions (Statistics fields 9–12). Those fields are reserved
now, so a stored message keeps them as unknown fields. The store passes every record and event
it reads through `upgrade_job` / `upgrade_event`, which turn them into what the gateway writes
today: term life's five outputs in the model's order (`TERM_LIFE_OUTPUTS`), net_cf primary with
its statistics and values, the other four with their scenario count and mean only (their
values and spread were never recorded). A message already in the current shape is untouched.
"""

from __future__ import annotations

import struct
from typing import Final

import numpy as np
from google.protobuf.message import Message
from google.protobuf.unknown_fields import UnknownFieldSet

from livecalc.gateway.v1 import job_pb2
from services.valuation.interface.declaration import TERM_LIFE_CASH_FLOWS, TERM_LIFE_OUTPUTS

#: The old Statistics fields of the means of the outputs other than net_cf, by field number:
#: fields 9–12 held the four cash flows in the declaration's order.
_MEAN_FIELDS: Final = dict(zip(range(9, 13), TERM_LIFE_CASH_FLOWS, strict=True))
#: The old field of the pv_net_cf vector in JobResult and JobResultPart.
_VECTOR_FIELD: Final = 2
_PRIMARY: Final = TERM_LIFE_OUTPUTS.index("net_cf")
_WIRE_FIXED64: Final = 1
_WIRE_LENGTH_DELIMITED: Final = 2


def _doubles(msg: Message, number: int) -> list[float]:
    """The doubles an unknown field holds (packed or not, every occurrence in order)."""
    out: list[float] = []
    fields = UnknownFieldSet(msg)
    for i in range(len(fields)):
        field = fields[i]
        if field.field_number != number:
            continue
        if field.wire_type == _WIRE_LENGTH_DELIMITED:
            out += np.frombuffer(bytes(field.data), dtype="<f8").astype(np.float64).tolist()
        elif field.wire_type == _WIRE_FIXED64:
            out.append(struct.unpack("<d", struct.pack("<Q", field.data))[0])
    return out


def _legacy_means(stats: job_pb2.Statistics) -> list[job_pb2.OutputMean]:
    """Every legacy output's mean (an absent old field was a mean of 0: proto3 omits zeros)."""
    values = {name: (_doubles(stats, number) or [0.0])[-1] for number, name in _MEAN_FIELDS.items()}
    values["net_cf"] = stats.mean
    return [job_pb2.OutputMean(name=name, mean=values[name]) for name in TERM_LIFE_OUTPUTS]


def upgrade_statistics(stats: job_pb2.Statistics) -> None:
    """Statistics of net_cf from before outputs get every legacy output's mean."""
    if stats.output_means or not stats.scenario_count:
        return
    stats.output_means.extend(_legacy_means(stats))
    stats.DiscardUnknownFields()


def upgrade_result(result: job_pb2.JobResult) -> None:
    """A result from before outputs as term life's five outputs (net_cf primary)."""
    if result.outputs or not result.HasField("statistics"):
        return
    means = _legacy_means(result.statistics)
    primary = job_pb2.OutputResult(name="net_cf", primary=True, values=_doubles(result, _VECTOR_FIELD))
    primary.statistics.CopyFrom(result.statistics)
    primary.statistics.DiscardUnknownFields()
    count = result.statistics.scenario_count
    for k, mean in enumerate(means):
        if k == _PRIMARY:
            result.outputs.append(primary)
        else:
            stats = job_pb2.Statistics(scenario_count=count, mean=mean.mean)
            result.outputs.append(job_pb2.OutputResult(name=mean.name, statistics=stats))
    result.statistics.output_means.extend(means)
    result.DiscardUnknownFields()


def upgrade_part(part: job_pb2.JobResultPart) -> None:
    """A part of a result from before outputs: a slice of net_cf's values."""
    if part.values:
        return
    values = _doubles(part, _VECTOR_FIELD)
    if values:
        part.values.extend(values)
        part.output_index = _PRIMARY
        part.DiscardUnknownFields()


def upgrade_job(job: job_pb2.Job) -> job_pb2.Job:
    """The record in the current shape (changed in place; returned for convenience)."""
    if job.HasField("result"):  # touching `result` of a job without one would create it
        upgrade_result(job.result)
    return job


def upgrade_event(event: job_pb2.JobEvent) -> job_pb2.JobEvent:
    """The event in the current shape (changed in place; returned for convenience)."""
    kind = event.WhichOneof("event")
    if kind == "result":
        upgrade_result(event.result)
    elif kind == "result_part":
        upgrade_part(event.result_part)
    elif kind == "statistics":
        upgrade_statistics(event.statistics.statistics)
    elif kind == "accepted":
        upgrade_job(event.accepted.job)
    return event
