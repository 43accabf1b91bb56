"""Jobs and results as typed values (livecalc_client.results): state names, floats, tuples."""

from __future__ import annotations

from livecalc.gateway.v1 import job_pb2
from livecalc_client import JobState
from livecalc_client.results import job_from_proto


def test_a_job_message_becomes_a_typed_job() -> None:
    message = job_pb2.Job(job_id="j1", state=job_pb2.JOB_STATE_SUCCEEDED, cancel_reason="")
    message.spec.package_hash, message.spec.dataset_id = "p" * 64, "pol"
    message.spec.labels["team"] = "alm"
    message.create_time.FromSeconds(1_700_000_000)
    result = message.result
    result.result_hash, result.policy_count = "h" * 64, 12
    result.statistics.ctes.add(level=0.99, value=5.0)
    result.statistics.output_means.add(name="pv", mean=1.5)
    output = result.outputs.add(name="pv", primary=True)
    output.values.extend([1.0, 2.0])
    job = job_from_proto(message)
    assert job.state is JobState.SUCCEEDED and job.state.value == str(job.state) == "succeeded"
    assert job.state.ended and not JobState.RUNNING.ended
    assert (job.package_hash, job.dataset_id, job.labels) == ("p" * 64, "pol", {"team": "alm"})
    assert job.create_time is not None and job.create_time.year == 2023 and job.start_time is None
    assert job.result is not None and job.error is None
    assert job.result.policy_count == 12 and job.result.statistics.ctes == {0.99: 5.0}
    assert job.result.statistics.output_means == {"pv": 1.5}
    assert job.result.primary is not None and job.result.primary.values == (1.0, 2.0)
    assert job.proto is message


def test_a_failed_job_carries_its_error_and_no_result() -> None:
    message = job_pb2.Job(job_id="j2", state=job_pb2.JOB_STATE_FAILED)
    message.error.code, message.error.message = "INVALID_ARGUMENT", "no such column"
    job = job_from_proto(message)
    assert job.state is JobState.FAILED and job.result is None
    assert job.error == "INVALID_ARGUMENT: no such column"
    assert JobState.from_proto(99) is JobState.UNSPECIFIED
