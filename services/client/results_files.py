"""A finished job's results as a document, from the gateway or from a results file written before.

`jobs compare` and `submit --replay` read results the same way whichever the source: a job id
(or a unique prefix) is fetched and shaped by `report.result_document`, exactly what `--out
f.json` writes; a path is read back from such a file. A file that is not a results document
(not JSON, or without a result hash and outputs) is refused naming what it lacks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from livecalc.gateway.v1 import job_pb2
from services.client.ids import resolve_job_id
from services.client.report import primary_output, result_document
from services.client.sync import Client
from services.common.errors import FailedPrecondition, InvalidArgument


@dataclass(frozen=True)
class Results:
    """One result's document and where it came from (``job J`` or a file's path)."""

    source: str
    document: dict[str, Any]

    @property
    def result_hash(self) -> str:
        return str(self.document["result_hash"])

    @property
    def job_id(self) -> str:
        return str(self.document.get("job_id") or "")

    @property
    def outputs(self) -> list[dict[str, Any]]:
        return list(self.document["outputs"])

    @property
    def provenance(self) -> job_pb2.Provenance | None:
        """The recorded provenance; None in a file written before results carried one."""
        found = self.document.get("provenance")
        if not isinstance(found, dict):
            return None
        return json_format.ParseDict(found, job_pb2.Provenance(), ignore_unknown_fields=True)

    @property
    def spec(self) -> job_pb2.JobSpec | None:
        """The job's spec as the gateway recorded it (scenarios resolved); None when not written."""
        found = self.document.get("spec")
        if not isinstance(found, dict):
            return None
        return json_format.ParseDict(found, job_pb2.JobSpec(), ignore_unknown_fields=True)


def full_result(lc: Client, job: job_pb2.Job) -> job_pb2.JobResult:
    """The job's result with every output's values (from the event log when they were sent in parts)."""
    result = job.result
    if result.outputs_in_parts or len(primary_output(result).values) != result.statistics.scenario_count:
        return lc.wait(job.job_id)
    return result


def job_results(lc: Client, job_id: str) -> Results:
    """The results of a succeeded job on the gateway (``job_id`` may be a unique prefix)."""
    job = lc.get_job(resolve_job_id(lc, job_id))
    if job.state != job_pb2.JOB_STATE_SUCCEEDED:
        state = job_pb2.JobState.Name(job.state).removeprefix("JOB_STATE_").lower()
        raise FailedPrecondition(f"job {job.job_id} has no result (it is {state})")
    document = result_document(full_result(lc, job), job_id=job.job_id, dataset_id=job.spec.dataset_id, spec=job.spec)
    return Results(f"job {job.job_id}", document)


def read_results_file(path: str | Path) -> Results:
    """A results document written by `--out … .json` (or `livecalc run`'s results.json)."""
    source = Path(path)
    try:
        document = json.loads(source.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InvalidArgument(f"cannot read {source}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidArgument(f"{source} is not a results file: not JSON ({exc})") from None
    if not isinstance(document, dict):
        raise InvalidArgument(f"{source} is not a results file: a JSON {type(document).__name__}, not an object")
    missing = [k for k, kind in (("result_hash", str), ("outputs", list)) if not isinstance(document.get(k), kind)]
    if missing:
        raise InvalidArgument(
            f"{source} is not a results file: it has no {' and no '.join(missing)} "
            "(write one with --out FILE.json on submit, jobs get or jobs watch)"
        )
    return Results(str(source), document)


def load_results(lc: Client, ref: str) -> Results:
    """``ref`` as a results file when it names an existing file (or ends in .json), else as a job id."""
    if Path(ref).is_file() or ref.lower().endswith(".json"):
        return read_results_file(ref)
    return job_results(lc, ref)
