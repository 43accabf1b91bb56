"""A job's sensitivities (JobSpec.variants): checked and derived at submit, compared at the end.

At submit `check_variants` applies the spec's own rules (at most `MAX_VARIANTS`, names valid
and distinct, every override with a target and a change, none with a preview), then
`derive_variants` builds each variant's package from the base package (services/valuation/
packages/overrides.py: the declared table or float64 parameter changed, checked as an upload is)
and stores it in the package store as an upload would be, for the submitting tenant: its own
package hash, so that a job on that hash values the variant alone. Every problem of every
variant is reported at once, INVALID_ARGUMENT, each naming the variant and the field.

At the end `variant_result` compares a variant's values with the base's: its statistics, its
result hash (computed as the base's, so the variant run alone gives the same one), every
output's statistics, and the change of the primary output's mean.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import anyio.to_thread

from livecalc.gateway.v1 import job_pb2
from services.common.errors import FieldViolation, InvalidArgument
from services.gateway.package_store import PackageStore
from services.gateway.results import output_statistics, statistics_message
from services.valuation.arrays import F64
from services.valuation.interface.declaration import Outputs
from services.valuation.packages.overrides import Override, derived_archive
from services.valuation.packages.package import Package, verify_archive
from services.valuation.packages.report import PackageInvalid
from services.valuation.statistics import relative_difference, result_hash

#: Variants one job may carry (each is a whole extra valuation).
MAX_VARIANTS: Final = 32
_NAME: Final = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


@dataclass(frozen=True)
class VariantPackage:
    """A variant as the job runs it: its name and the hash of the package derived for it."""

    name: str
    package_hash: str


def overrides_of(variant: job_pb2.Variant) -> list[Override]:
    """The variant's overrides as the package code takes them (a missing target or change is
    left to `derive`, which names it)."""
    out = []
    for o in variant.overrides:
        target = o.WhichOneof("target")
        change = o.WhichOneof("change")
        out.append(
            Override(
                target="table" if target == "table" else "parameter",
                name=o.table if target == "table" else o.parameter,
                change=change or "scale",
                amount=float(getattr(o, change)) if change in ("scale", "shift", "value") else 0.0,
                csv=o.table_csv,
                clamp=o.clamp,
            )
        )
    return out


def check_variants(spec: job_pb2.JobSpec) -> None:
    """INVALID_ARGUMENT naming every variant field that breaks the spec's rules (job.proto)."""
    if not spec.variants:
        return
    bad: list[FieldViolation] = []
    if spec.HasField("preview"):
        bad.append(FieldViolation("spec.variants", "a preview values no variants: submit them with a full run"))
    if len(spec.variants) > MAX_VARIANTS:
        bad.append(FieldViolation("spec.variants", f"has {len(spec.variants)} variants; at most {MAX_VARIANTS}"))
    seen: set[str] = set()
    for i, variant in enumerate(spec.variants):
        at = f"spec.variants[{i}]"
        if not _NAME.fullmatch(variant.name):
            bad.append(
                FieldViolation(
                    f"{at}.name",
                    f"{variant.name!r:.70} is not a variant name: 1 to 64 letters, digits, '_', '-' or '.'",
                )
            )
        elif variant.name in seen:
            bad.append(FieldViolation(f"{at}.name", f"variant {variant.name!r} is named twice"))
        seen.add(variant.name)
        if not variant.overrides:
            bad.append(FieldViolation(f"{at}.overrides", f"variant {variant.name!r} changes nothing"))
        for j, o in enumerate(variant.overrides):
            if o.WhichOneof("target") is None:
                bad.append(FieldViolation(f"{at}.overrides[{j}]", f"variant {variant.name!r}: set table or parameter"))
            if o.clamp and o.WhichOneof("change") not in ("scale", "shift"):
                bad.append(
                    FieldViolation(
                        f"{at}.overrides[{j}].clamp", f"variant {variant.name!r}: clamp goes with scale or shift"
                    )
                )
            if o.WhichOneof("change") is None:
                bad.append(
                    FieldViolation(
                        f"{at}.overrides[{j}]", f"variant {variant.name!r}: set scale, shift, value or table_csv"
                    )
                )
    if bad:
        raise InvalidArgument("invalid variants", tuple(bad))


def _field(variant: int, where: str, override: Override | None) -> str:
    """The spec field of an issue at ``where`` (``overrides[j]``: that override's target)."""
    path = f"spec.variants[{variant}]"
    if _override_index(where) is None:
        return path
    return f"{path}.{where}.{override.target}" if override is not None else f"{path}.{where}"


def _archives(base: Package, spec: job_pb2.JobSpec) -> list[bytes]:
    """Every variant's derived archive; `InvalidArgument` naming every variant's problems."""
    archives: list[bytes] = []
    bad: list[FieldViolation] = []
    for i, variant in enumerate(spec.variants):
        overrides = overrides_of(variant)
        try:
            archives.append(derived_archive(base, overrides))
        except PackageInvalid as exc:
            for issue in exc.issues:
                if issue.severity != "error":
                    continue
                index = _override_index(issue.where)
                override = overrides[index] if index is not None and index < len(overrides) else None
                bad.append(
                    FieldViolation(_field(i, issue.where, override), f"variant {variant.name!r}: {issue.message}")
                )
    if bad:
        raise InvalidArgument("invalid variants", tuple(bad))
    return archives


def _override_index(where: str) -> int | None:
    match = re.fullmatch(r"overrides\[(\d+)\]", where)
    return int(match.group(1)) if match else None


async def derive_variants(packages: PackageStore, spec: job_pb2.JobSpec, tenant: str) -> list[VariantPackage]:
    """Each variant of ``spec`` derived from its base package and stored for ``tenant`` (an
    upload of the same derived package is the same package: stored once)."""
    if not spec.variants:
        return []
    data = b"".join([piece async for *_, piece in packages.download(spec.package_hash, tenant=tenant)])
    base = await anyio.to_thread.run_sync(verify_archive, data, packages.limits)
    archives = await anyio.to_thread.run_sync(_archives, base, spec)
    out = []
    for variant, archive in zip(spec.variants, archives, strict=True):
        record, _ = await packages.put(archive, tenant)
        out.append(VariantPackage(variant.name, record.package_hash))
    return out


def variant_result(
    variant: VariantPackage, values: F64, base: job_pb2.JobResult, outputs: Outputs
) -> job_pb2.VariantResult:
    """The variant's values (f64 [K][N], the outputs' order) against the base's result."""
    stats = statistics_message(values, outputs)
    return job_pb2.VariantResult(
        name=variant.name,
        package_hash=variant.package_hash,
        result_hash=result_hash(values[outputs.primary]),
        statistics=stats,
        mean_change=stats.mean - base.statistics.mean,
        relative_change=relative_difference(stats.mean, base.statistics.mean),
        outputs=[
            job_pb2.OutputResult(name=name, primary=k == outputs.primary, statistics=output_statistics(values[k]))
            for k, name in enumerate(outputs.names)
        ],
    )


def variant_results(
    variants: Sequence[VariantPackage], values: Sequence[F64], base: job_pb2.JobResult, outputs: Outputs
) -> list[job_pb2.VariantResult]:
    """Every variant's result, in spec order."""
    return [variant_result(v, x, base, outputs) for v, x in zip(variants, values, strict=True)]
