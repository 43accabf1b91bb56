"""The Python client of LiveCalc Mesh: `Client` (blocking) and `AsyncClient` (grpc.aio).

Jobs (submit → events, watch, get, list, cancel, wait/run for the result), packages (upload a
file, get, list) and datasets (list, show, sample, upload), all through the gateway. Failures
raise `livecalc_client.errors` types (`NotFound`, `InvalidArgument`, `Unavailable`, …); a job
that fails raises `JobFailed`, one that was cancelled `JobCancelled`. `job`, `jobs`, `result`
and `value` return typed values (`Job` with a `JobState` name, `JobResult`, `Statistics`,
`Output`: livecalc_client.results); the other methods the protobuf messages. Installs alone
(`pip install livecalc-client`: grpcio and protobuf); livecalc-mesh includes it and adds the
services, the `livecalc` command and package building.
"""

from livecalc_client.aio import AsyncClient, ResultAssembler, job_spec, package_archive
from livecalc_client.channels import ChannelSecurity
from livecalc_client.errors import JobCancelled, JobFailed, LivecalcError
from livecalc_client.results import Job, JobResult, JobState, Output, Statistics
from livecalc_client.sync import Client

__all__ = [
    "AsyncClient",
    "ChannelSecurity",
    "Client",
    "Job",
    "JobCancelled",
    "JobFailed",
    "JobResult",
    "JobState",
    "LivecalcError",
    "Output",
    "ResultAssembler",
    "Statistics",
    "job_spec",
    "package_archive",
]
