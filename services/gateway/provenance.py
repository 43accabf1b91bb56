"""Where a result comes from (`JobResult.provenance`): everything it depends on, enough to replay it.

A result is a pure function of the package (its hash), the dataset version, the resolved
scenarios (seed, a, σ, include_base, count; or a scenario set at a version) and the model ABI the
engines ran; a job on the same inputs gives the same result hash whatever engines, threads or
chunk sizes computed it. The provenance records those inputs with the names a reader needs
(the package's name and version from its manifest), the builds that computed it (engine and
gateway versions) and when it was submitted and finished. It is built once, when the result is,
and kept with the job's record, so it survives a gateway restart.

The engines are those whose partials this gateway process folded: a job resumed after a restart
names the engines of the run that finished it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from livecalc.gateway.v1 import job_pb2
from services.common.version import mesh_version


@dataclass(frozen=True)
class EngineBuild:
    """What an engine said it is (GetCapabilities): its version and the model ABI it implements."""

    version: str
    abi_version: int


def provenance(
    job: job_pb2.Job,
    package_config: Mapping[str, Any],
    *,
    dataset_version: str,
    engines: Iterable[EngineBuild],
    finish_time: Timestamp,
    gateway_version: str | None = None,
) -> job_pb2.Provenance:
    """The provenance of ``job``'s result: ``package_config`` is its package's config (name and
    version), ``engines`` the builds that computed its blocks; the scenarios are the job's spec as
    recorded at submit (every parameter resolved, a scenario set with its version)."""
    spec = job.spec
    builds = set(engines)
    out = job_pb2.Provenance(
        package_name=str(package_config.get("name", "")),
        package_version=str(package_config.get("version", "")),
        package_hash=spec.package_hash,
        dataset_id=spec.dataset_id,
        dataset_version=dataset_version,
        engine_versions=sorted({b.version for b in builds}),
        # one model runs under one ABI (an engine refuses a module that speaks another)
        model_abi_version=max((b.abi_version for b in builds), default=0),
        gateway_version=gateway_version if gateway_version is not None else mesh_version(),
    )
    out.scenarios.CopyFrom(spec.scenarios)
    out.submit_time.CopyFrom(job.create_time)
    out.finish_time.CopyFrom(finish_time)
    if spec.HasField("preview"):
        out.preview.CopyFrom(spec.preview)
    return out
