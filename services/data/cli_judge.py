"""Judging a local dataset file in this process, for `livecalc datasets validate FILE` and before
`livecalc datasets upload` sends one: with the data service's own code (`validate_file`), by a
package's declaration (`package_judge`: a directory, an archive or a stored package's hash) or
the shipped term-life declaration; a CSV separated by ';' or tabs gets a hint (LiveCalc reads
commas)."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

import anyio

from livecalc.data.v1 import data_service_pb2
from livecalc.gateway.v1 import package_service_pb2, package_service_pb2_grpc
from services.client.ids import FULL_HASH, HASH_LIKE, resolve_package_hash
from services.client.sync import Client
from services.common.client import call as call_service
from services.common.errors import InvalidArgument, LivecalcError
from services.data.validation import TERM_LIFE, Judge, validate_file
from services.valuation.interface.records import package_rules, term_life_rules
from services.valuation.packages.archive import read_archive
from services.valuation.packages.manifest import CONFIG
from services.valuation.packages.package import read_directory
from services.valuation.packages.report import raise_on_errors


class DatasetInvalid(LivecalcError):
    """Validation found violations (the report was printed)."""


def _download_package(address: str, package_hash: str, timeout: float) -> bytes:
    """A stored package's archive from the gateway (PackageService.DownloadPackage)."""

    def fetch(stub: package_service_pb2_grpc.PackageServiceStub) -> bytes:
        request = package_service_pb2.DownloadPackageRequest(package_hash=package_hash)
        return b"".join(m.chunk for m in stub.DownloadPackage(request, timeout=timeout))

    return call_service(address, "gateway", package_service_pb2_grpc.PackageServiceStub, fetch)


def package_judge(spec: str, gateway: str, timeout: float) -> tuple[Judge, dict[str, Any]]:
    """The rules a package's datasets are judged by, and its config: ``spec`` is a package
    directory, an archive, or the hash (or a unique prefix of it) of a package stored on the gateway."""
    path = Path(spec)
    if path.is_dir():
        config, files, issues, _ = read_directory(path)
        raise_on_errors(issues)
    elif path.is_file() or HASH_LIKE.fullmatch(spec.lower()):
        if path.is_file():
            archive = path.read_bytes()
        else:
            package_hash = spec.lower()
            if not FULL_HASH.fullmatch(package_hash):
                with Client(gateway, timeout=timeout) as lc:
                    package_hash = resolve_package_hash(lc, package_hash)
            archive = _download_package(gateway, package_hash, timeout)
        files = read_archive(archive)
        if CONFIG not in files:
            raise InvalidArgument(f"--package {spec}: the archive has no {CONFIG}")
        config = json.loads(files[CONFIG])
    else:
        raise InvalidArgument(f"--package {spec}: neither a package directory, an archive nor a package hash")
    if not isinstance(config, dict):
        raise InvalidArgument(f"--package {spec}: {CONFIG} must hold a JSON object")
    try:
        interface, bounds = package_rules(config, files.get)
    except ValueError as exc:
        raise InvalidArgument(f"--package {spec}: {exc}") from None
    return Judge(interface, bounds, str(config.get("model") or "")), config


def delimiter_hint(header: str) -> str | None:
    """A hint when a CSV header looks separated by ';' or tabs (LiveCalc reads commas)."""
    if "," in header:
        return None
    for sep, name in ((";", "semicolons"), ("\t", "tabs")):
        if sep in header:
            return (
                f"the header looks separated by {name}, not commas: LiveCalc reads comma-separated files "
                "(export the file as CSV with ',' as the delimiter)"
            )
    return None


def local_header(path: Path) -> str:
    if path.suffix.lower() != ".csv":
        return ","
    with path.open("rb") as f:
        return f.readline(1 << 16).decode("utf-8", errors="replace")


def print_report(reply: data_service_pb2.ValidateDatasetResponse, hint: str | None, out: Any) -> None:
    state = "valid" if reply.valid else "INVALID"
    version = f" ({reply.version})" if reply.version else ""
    print(f"{reply.dataset_id}{version}: {state}, {reply.rows_checked:,} rows checked", file=out)
    if reply.missing_columns:
        print(f"missing columns: {', '.join(reply.missing_columns)}", file=out)
    for rc in reply.rule_counts:
        print(f"  {rc.rule:<22} {rc.count:>10,}", file=out)
    for v in reply.violations:
        print(f"  row {v.row}: [{v.rule}] {v.message}", file=out)
    if hint:
        print(f"hint: {hint}", file=sys.stderr)


def local_columns(path: Path) -> list[str]:
    """The column names of a local .csv (its header line) or .parquet file (its schema)."""
    if path.suffix.lower() == ".csv":
        return next(csv.reader([local_header(path)]), [])
    import pyarrow.parquet as pq  # noqa: PLC0415 - parquet only

    return list(pq.read_schema(path).names)


def judge_upload(args: argparse.Namespace, path: Path) -> None:
    """Judge a file before it is uploaded; an invalid one is refused at once (DatasetInvalid,
    nothing sent), with its report on stderr. By ``--package``'s declaration; else by the
    shipped term-life declaration when the file has its policy columns (another model's
    policies and scenario sets are not judged without their package); a CSV whose header is
    separated by ';' or tabs is refused whatever the model (LiveCalc reads commas)."""
    hint = delimiter_hint(local_header(path))
    if hint is not None:
        raise DatasetInvalid(f"{path.name}: not uploaded: {hint} (--no-validate uploads it as it is)")
    if args.package is not None:
        judge, _ = package_judge(args.package, args.address, args.timeout)
        whose = f"the declaration of --package {args.package}"
    else:
        judge = Judge(*term_life_rules(), model=TERM_LIFE)
        if not set(judge.interface.required_columns) <= set(local_columns(path)):
            print(
                f"{path.name}: not judged before upload: its columns are not term life's; --package PACKAGE "
                "judges it by your model's declaration",
                file=sys.stderr,
            )
            return
        whose = f"the shipped {TERM_LIFE} declaration (--package PACKAGE judges by your model's)"
    reply = anyio.run(validate_file, path, judge, 20)
    if not reply.valid:
        print_report(reply, None, sys.stderr)
        raise DatasetInvalid(
            f"{path.name}: not uploaded: {reply.violation_count:,} violation(s)"
            f"{' and missing columns' if reply.missing_columns else ''} of {whose}; "
            "--no-validate uploads it as it is"
        )
