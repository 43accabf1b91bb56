"""How a preview's uncertainty and its comparison with the full run read: the interval with what
it covers, one sentence against the full run, the table's rows and results.json; and the
plain progress view's last line shows the result's mean."""

from __future__ import annotations

import io
import json

import numpy as np

from livecalc.gateway.v1 import job_pb2
from services.client.report import (
    ProgressView,
    json_text,
    preview_comparison,
    preview_interval,
    result_document,
    result_lines,
)
from services.gateway.results import final_result, running_statistics
from services.valuation.interface.declaration import Outputs
from services.valuation.preview_error import PreviewUncertainty

OUTPUTS = Outputs(("net_cf",), 0)
UNCERTAINTY = PreviewUncertainty(
    confidence=0.95,
    sampling_standard_error=2_400_000.0,
    scenario_standard_error=627_274.0,
    standard_error=2_480_620.0,
    half_width=4_862_000.4,
    sampling_half_width=5_429_123.6,
    groups=10,
    sampling_degrees_of_freedom=9.0,
    degrees_of_freedom=10.4,
)


def _result(mean: float, *, preview: bool, uncertainty: PreviewUncertainty | None = None) -> job_pb2.JobResult:
    values = np.array([[mean - 1000.0, mean, mean + 1000.0]])
    return final_result(
        values,
        OUTPUTS,
        policy_count=10_000 if preview else 100_000,
        dataset_version="v",
        package_hash="ab" * 32,
        steps=1,
        elapsed_seconds=1.0,
        preview=preview,
        preview_uncertainty=uncertainty,
    )


def test_the_preview_line_says_what_its_interval_covers() -> None:
    preview = _result(188_171_216.0, preview=True, uncertainty=UNCERTAINTY)
    assert preview_interval(preview) == (
        "mean 188,171,216 ± 4,862,000 (95 %: scenarios and policy sampling; "
        "a full run on these scenarios within ± 5,429,124)"
    )
    bare = _result(188_171_216.0, preview=True)
    assert preview_interval(bare) == "mean 188,171,216 ± 577 (one standard error, scenarios only)"


def test_the_comparison_is_one_sentence_with_the_sampling_interval() -> None:
    preview = _result(188_171_216.0, preview=True, uncertainty=UNCERTAINTY)
    full = _result(193_503_294.0, preview=False)
    assert preview_comparison(preview, full) == (
        "preview was within 2.76 % of the full run (5,332,078 below its mean 193,503,294; "
        "inside the preview's 95 % policy-sampling interval, ± 5,429,124)"
    )
    far = _result(200_000_000.0, preview=True, uncertainty=UNCERTAINTY)
    assert preview_comparison(far, full).endswith("above its mean 193,503,294; outside the preview's 95 % "
                                                  "policy-sampling interval, ± 5,429,124)")  # fmt: skip
    assert preview_comparison(_result(193_503_294.0, preview=True), full) == (
        "preview was within 0.00 % of the full run (equal to its mean 193,503,294)"
    )


def test_the_table_and_the_results_json_carry_the_interval() -> None:
    preview = _result(188_171_216.0, preview=True, uncertainty=UNCERTAINTY)
    lines = result_lines(preview)
    assert any(line.startswith("± 95 %, scenarios and sampling") and line.endswith("4,862,000") for line in lines)
    assert any(line.startswith("± 95 %, to a full run") and line.endswith("5,429,124") for line in lines)
    assert any(line.startswith("sampling standard error") and line.endswith("2,400,000") for line in lines)
    assert not any("sampling" in line for line in result_lines(_result(1.0, preview=False)))
    full = _result(193_503_294.0, preview=False)
    doc = json.loads(json_text(result_document(full, preview=preview)))
    comparison = doc["preview_comparison"]
    assert comparison["full_run_within_sampling_interval"] is True
    assert comparison["preview_uncertainty"] == {
        "confidence_level": 95.0,
        "half_width": 4_862_000.4,
        "sampling_half_width": 5_429_123.6,
        "standard_error": 2_480_620.0,
        "sampling_standard_error": 2_400_000.0,
        "scenario_standard_error": 627_274.0,
        "sample_groups": 10,
        "degrees_of_freedom": 10.4,
        "sampling_degrees_of_freedom": 9.0,
    }


def test_the_last_progress_line_shows_the_final_statistics() -> None:
    """The gateway sends the exact statistics just before the 100 % progress: the plain view's
    last line, printed at once, shows them (not the last estimate's)."""
    out = io.StringIO()
    estimate = np.array([[190.0, 200.0, 210.0]])
    exact = np.array([[180.0, 190.0, 200.0]])

    def event(**kw: object) -> job_pb2.JobEvent:
        return job_pb2.JobEvent(job_id="j", **kw)  # type: ignore[arg-type]

    with ProgressView("full run", terminal=False, stream=out) as view:
        view.event(event(progress=job_pb2.JobProgress(policies_done=50, policies_total=100, elapsed_seconds=1.0)))
        view.event(event(statistics=running_statistics(estimate, 50, 100, OUTPUTS)))
        view.event(event(statistics=running_statistics(exact, 100, 100, OUTPUTS)))
        view.event(event(progress=job_pb2.JobProgress(policies_done=100, policies_total=100, elapsed_seconds=1.5)))
    last = out.getvalue().splitlines()[-1]
    assert last.startswith("full run: 100.0 %") and last.endswith("mean 190 ± 6"), last
