"""`livecalc submit --replay results.json`: the same job again, and proof it gave the same result.

A result is a pure function of its package (hash), dataset version and resolved scenarios
(docs/results.md "Provenance"), all of which a results file records: the job's spec as the
gateway recorded it (scenarios resolved: seed, a, σ, include_base, count, or a scenario set at
its version; preview, labels, variants as asked) and the result's provenance. A replay submits
that spec and, when the job ends, compares the new result hash with the recorded one.

Before anything is submitted, the inputs are checked so a replay that could not give the same
bits is refused with the reason: the package is no longer stored, the dataset (or the scenario
set) is no longer at the recorded version. A file without a spec (written before results
carried one) replays from its provenance alone: package, dataset, scenarios and preview.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from livecalc.gateway.v1 import job_pb2
from services.client.results_files import Results, read_results_file
from services.client.sync import Client
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound

#: `submit` options that set the spec: a replay takes the whole spec from the file.
SPEC_OPTIONS: Final = (
    "package",
    "dataset",
    "scenarios",
    "seed",
    "scenario_dataset",
    "preview",
    "label",
    "chunk_blocks",
    "variant",
    "variants",
)


@dataclass(frozen=True)
class Replay:
    """A results file to replay and the spec that replays it."""

    recorded: Results
    spec: job_pb2.JobSpec

    def verdict(self, result: job_pb2.JobResult) -> tuple[bool, str]:
        """(same result?, the line that says so): the result hash, and each recorded variant's."""
        recorded = self.recorded.result_hash
        if result.result_hash != recorded:
            return False, (
                f"replayed: hash differs: recorded {recorded} ({self.recorded.source}), replay {result.result_hash}"
            )
        differing = [
            f"variant {name}: recorded {was}, replay {now}"
            for name, was, now in _variant_hashes(self.recorded, result)
            if was != now
        ]
        if differing:
            return False, "replayed: base hash equal, variants differ: " + "; ".join(differing)
        return True, f"replayed: hash equal ({recorded})"


def _variant_hashes(recorded: Results, result: job_pb2.JobResult) -> list[tuple[str, str, str]]:
    """(name, recorded hash, replayed hash) of every variant the file records with a hash."""
    replayed = {v.name: v.result_hash for v in result.variants}
    out = []
    for v in recorded.document.get("variants") or []:
        if isinstance(v, dict) and v.get("name") and v.get("result_hash"):
            out.append((str(v["name"]), str(v["result_hash"]), replayed.get(str(v["name"]), "(none)")))
    return out


def check_options(args: argparse.Namespace) -> None:
    """InvalidArgument when ``--replay`` comes with an option that would change the spec, or
    with --detach (the replay's point is the comparison at the end)."""
    given = [
        f"--{name.replace('_', '-')}" for name in SPEC_OPTIONS if getattr(args, name, None) not in (None, False, 0, [])
    ]
    if given:
        raise InvalidArgument(f"--replay takes the whole job spec from the results file; drop {', '.join(given)}")
    if getattr(args, "detach", False):
        raise InvalidArgument("--replay waits for the job to compare its result hash; drop --detach")


def replay_spec(recorded: Results) -> job_pb2.JobSpec:
    """The spec that replays ``recorded``: its recorded spec, else one from its provenance."""
    spec = recorded.spec
    if spec is not None and spec.package_hash:
        return spec
    p = recorded.provenance
    if p is None or not p.package_hash:
        raise InvalidArgument(
            f"{recorded.source} records neither the job's spec nor its provenance (written before results "
            "carried them): it cannot be replayed"
        )
    spec = job_pb2.JobSpec(package_hash=p.package_hash, dataset_id=p.dataset_id)
    spec.scenarios.CopyFrom(p.scenarios)
    if p.HasField("preview"):
        spec.preview.CopyFrom(p.preview)
    return spec


def recorded_dataset_version(recorded: Results) -> str:
    p = recorded.provenance
    return (
        p.dataset_version
        if p is not None and p.dataset_version
        else str(recorded.document.get("dataset_version") or "")
    )


def check_inputs(lc: Client, recorded: Results, spec: job_pb2.JobSpec) -> None:
    """FailedPrecondition, saying which, when the package is no longer stored or the dataset or
    scenario set is no longer at the version the result was computed on."""
    p = recorded.provenance
    try:
        lc.get_package(spec.package_hash)
    except NotFound:
        name = f"{p.package_name} {p.package_version} " if p is not None and p.package_name else ""
        raise FailedPrecondition(
            f"package {name}({spec.package_hash}) is no longer stored on the gateway: upload it again "
            f"(livecalc package upload FILE) to replay {recorded.source}"
        ) from None
    _check_version("dataset", spec.dataset_id, recorded_dataset_version(recorded), lc, recorded)
    if spec.scenarios.dataset_id:
        _check_version("scenario set", spec.scenarios.dataset_id, spec.scenarios.dataset_version, lc, recorded)


def _check_version(what: str, dataset_id: str, recorded_version: str, lc: Client, recorded: Results) -> None:
    try:
        current = lc.get_dataset(dataset_id).version
    except NotFound:
        raise FailedPrecondition(
            f"{what} {dataset_id} no longer exists: {recorded.source} cannot be replayed"
        ) from None
    if recorded_version and current != recorded_version:
        raise FailedPrecondition(
            f"{what} {dataset_id} changed since {recorded.source} was computed: recorded version "
            f"{recorded_version}, current version {current}; a replay would not value the same data"
        )


def prepare(lc: Client, path: str | Path) -> Replay:
    """Read ``path``, build the spec that replays it and check its inputs are still there."""
    recorded = read_results_file(path)
    spec = replay_spec(recorded)
    check_inputs(lc, recorded, spec)
    return Replay(recorded, spec)
