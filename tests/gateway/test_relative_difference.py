"""The preview's relative difference from the full run: one definition for the gateway's result
and the client's report, including a full run whose mean is 0."""

from __future__ import annotations

import math

from livecalc.gateway.v1 import job_pb2
from services.client.report import preview_difference
from services.valuation.statistics import relative_difference


def test_relative_difference_is_against_the_full_runs_magnitude() -> None:
    assert relative_difference(110.0, 100.0) == 0.1
    assert relative_difference(-110.0, -100.0) == -0.1  # below a negative mean is below


def test_a_zero_full_mean_gives_zero_when_equal_else_an_infinity_signed_like_the_difference() -> None:
    assert relative_difference(0.0, 0.0) == 0.0
    assert relative_difference(5.0, 0.0) == math.inf
    assert relative_difference(-5.0, 0.0) == -math.inf


def test_the_clients_report_uses_the_same_definition() -> None:
    def result(mean: float) -> job_pb2.JobResult:
        return job_pb2.JobResult(statistics=job_pb2.Statistics(mean=mean))

    for preview, full in ((110.0, 100.0), (-5.0, 0.0), (0.0, 0.0)):
        assert preview_difference(result(preview), result(full)) == relative_difference(preview, full)
