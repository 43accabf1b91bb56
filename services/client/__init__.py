"""The Python client of LiveCalc Mesh: `AsyncClient` (grpc.aio) and `Client` (blocking).

Jobs (submit → events, watch, get, list, cancel, wait/run for the result), packages (upload a
file or a directory, get, list) and datasets (list, show, sample, upload): the client distribution's
(`livecalc_client`), with package directories built here. Failures raise the project's error
types (`livecalc_client.errors`, also `services.common.errors`); a job that fails raises
`JobFailed`, one that was cancelled `JobCancelled`.
"""

from services.client.aio import AsyncClient, ResultAssembler, job_spec, package_archive
from services.client.errors import JobCancelled, JobFailed
from services.client.sync import Client

__all__ = ["AsyncClient", "Client", "JobCancelled", "JobFailed", "ResultAssembler", "job_spec", "package_archive"]
