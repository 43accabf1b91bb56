"""`livecalc datasets ...`: generate synthetic policies, and talk to a data service over gRPC.

Client commands take `--address` — the gateway's, which forwards DataService to its data
service (a data service's own address works too); by default $LIVECALC_ADDRESS, else the current
context, else 127.0.0.1:50051 (services.client.contexts) — and `--json` (one JSON document on
stdout and nothing else). Failures are LivecalcError subclasses, which the top-level CLI prints
as one line on stderr with exit code 1. `validate FILE` (or `--file FILE`) judges a local file
before upload with the data service's own code, in this process: no service is needed (unless
`--package` names a stored package by hash or a unique prefix of one, which is downloaded from
the gateway; cli_judge.py). `upload` judges the file the same way before sending it and refuses an invalid
one at once: by `--package`'s declaration, else — when the file has term life's policy
columns — by the shipped term-life declaration; `--no-validate` sends it as it is.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final, TypeVar

import anyio

from livecalc.data.v1 import data_pb2, data_service_pb2, data_service_pb2_grpc
from services.client.contexts import ADDRESS_HELP
from services.common.client import as_dict, emit_json, table, write_out
from services.common.client import call as call_service
from services.common.errors import InvalidArgument
from services.data.cli_judge import (
    DatasetInvalid,
    delimiter_hint,
    judge_upload,
    local_header,
    package_judge,
    print_report,
)
from services.data.generate import GENERATORS, generate
from services.data.validation import TERM_LIFE, Judge, validate_file
from services.valuation.interface.records import term_life_rules
from services.valuation.interface.tables import bounds_json
from services.valuation.packages.canonical import canonical_json

#: Upload chunk payload: well below the service's per-chunk cap and, with framing, the
#: 4 MiB message limit (a 4 MiB payload plus its 5 framing bytes is over it).
UPLOAD_CHUNK_BYTES: Final = 1 << 20
T = TypeVar("T")


def call(address: str, fn: Callable[[data_service_pb2_grpc.DataServiceStub], T]) -> T:
    return call_service(address, "data", data_service_pb2_grpc.DataServiceStub, fn)


def _enum(name: str, value: int, enum: Any) -> str:
    return str(enum.Name(value)).removeprefix(name).lower()


def _print_dataset(d: data_pb2.Dataset) -> None:
    print(f"dataset_id: {d.dataset_id}")
    print(f"source:     {_enum('DATASET_SOURCE_', d.source, data_pb2.DatasetSource)}")
    print(f"format:     {_enum('DATASET_FORMAT_', d.format, data_pb2.DatasetFormat)}")
    print(f"rows:       {d.row_count:,}")
    print(f"size:       {d.size_bytes:,} bytes")
    print(f"version:    {d.version}")
    print(f"modified:   {d.modify_time.ToDatetime().isoformat()}Z")
    print(f"location:   {d.location}")
    print(f"columns:    {', '.join(c.name for c in d.columns)}")


def _print_columns(columns: Any) -> None:
    rows = [["COLUMN", "TYPE", "NULLS"]]
    rows += [
        [c.name, _enum("COLUMN_TYPE_", c.type, data_pb2.ColumnType), "nullable" if c.nullable else "required"]
        for c in columns
    ]
    write_out(table(rows))


def cmd_generate(args: argparse.Namespace) -> int:
    size = generate(Path(args.out), args.rows, args.seed, model=args.model)
    if args.json:
        doc = {"path": str(args.out), "model": args.model, "rows": args.rows, "seed": args.seed, "size_bytes": size}
        emit_json(doc)
    else:
        print(f"wrote {args.rows:,} {args.model} policies ({size:,} bytes) to {args.out}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    def fetch(stub: data_service_pb2_grpc.DataServiceStub) -> list[data_pb2.Dataset]:
        out: list[data_pb2.Dataset] = []
        token = ""
        while True:
            page = stub.ListDatasets(data_service_pb2.ListDatasetsRequest(page_token=token), timeout=args.timeout)
            out.extend(page.datasets)
            token = page.next_page_token
            if not token:
                return out

    datasets = call(args.address, fetch)
    if args.json:
        emit_json({"datasets": [as_dict(d) for d in datasets]})
        return 0
    print(f"{'DATASET':<32} {'FORMAT':<8} {'ROWS':>12} {'BYTES':>14}  VERSION")
    for d in datasets:
        fmt = _enum("DATASET_FORMAT_", d.format, data_pb2.DatasetFormat)
        if d.error:
            print(f"{d.dataset_id:<32} {fmt:<8} {'-':>12} {d.size_bytes:>14,}  unreadable: {d.error}")
        else:
            print(f"{d.dataset_id:<32} {fmt:<8} {d.row_count:>12,} {d.size_bytes:>14,}  {d.version}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    reply = call(
        args.address,
        lambda s: s.GetDataset(data_service_pb2.GetDatasetRequest(dataset_id=args.dataset_id), timeout=args.timeout),
    )
    if args.json:
        emit_json(as_dict(reply.dataset))
    else:
        _print_dataset(reply.dataset)
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    reply = call(
        args.address,
        lambda s: s.GetSchema(data_service_pb2.GetSchemaRequest(dataset_id=args.dataset_id), timeout=args.timeout),
    )
    if args.json:
        emit_json(as_dict(reply))
    else:
        _print_columns(reply.columns)
    return 0


def cell_value(cell: data_pb2.Cell) -> Any:
    """A typed cell as a plain value: int64 stays an exact int, a missing value is None."""
    kind = cell.WhichOneof("value")
    return None if kind is None else getattr(cell, kind)


def sample_document(reply: data_service_pb2.SampleRowsResponse) -> dict[str, Any]:
    """The sample as JSON: columns in schema order, integers as integers."""
    names = [c.name for c in reply.columns]
    return {
        "dataset_id": reply.dataset_id,
        "version": reply.version,
        "seed": reply.seed,
        "dataset_row_count": reply.dataset_row_count,
        "columns": [as_dict(c) for c in reply.columns],
        "rows": [
            {"row": r.row, "values": {n: cell_value(c) for n, c in zip(names, r.cells, strict=True)}}
            for r in reply.rows
        ],
    }


def cmd_sample(args: argparse.Namespace) -> int:
    request = data_service_pb2.SampleRowsRequest(
        dataset_id=args.dataset_id, n=args.n, seed=args.seed, columns=args.columns or []
    )
    reply = call(args.address, lambda s: s.SampleRows(request, timeout=args.timeout))
    if args.json:
        emit_json(sample_document(reply))
        return 0
    table = [["row", *(c.name for c in reply.columns)]]
    for r in reply.rows:
        table.append([str(r.row), *(_cell(cell_value(c)) for c in r.cells)])
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)))
    return 0


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


def cmd_validate(args: argparse.Namespace) -> int:
    if args.file is None and args.dataset_id is not None and Path(args.dataset_id).is_file():
        args.file, args.dataset_id = args.dataset_id, None  # `validate FILE`: a local file by its path
    if (args.dataset_id is None) == (args.file is None):
        raise InvalidArgument("name one of: a DATASET on the data service, or a local --file (or a FILE path)")
    gateway = args.gateway or args.address
    judge, config = (None, {}) if args.package is None else package_judge(args.package, gateway, args.timeout)
    hint = None
    if args.file is not None:
        path = Path(args.file)
        judge = judge or Judge(*term_life_rules(), model=TERM_LIFE)
        if args.model not in ("", TERM_LIFE) and args.package is None:
            raise InvalidArgument(f"--model {args.model}: only {TERM_LIFE} is known by name; give its --package")
        reply = anyio.run(validate_file, path, judge, args.max_violations)
        if reply.missing_columns:
            hint = delimiter_hint(local_header(path))
    else:
        request = data_service_pb2.ValidateDatasetRequest(
            dataset_id=args.dataset_id, model=args.model, max_violations=args.max_violations
        )
        if judge is not None:
            request.model = judge.model
            if "interface" in config:
                request.interface_json = canonical_json(config["interface"]).decode("utf-8")
                request.table_bounds.update(bounds_json(judge.bounds))
        reply = call(args.address, lambda s: s.ValidateDataset(request, timeout=args.timeout))
        if reply.missing_columns:  # one column named "policy_id;age_at_entry;…" is a file of another delimiter
            schema_request = data_service_pb2.GetSchemaRequest(dataset_id=args.dataset_id)
            schema = call(args.address, lambda s: s.GetSchema(schema_request, timeout=args.timeout))
            if len(schema.columns) == 1:
                hint = delimiter_hint(schema.columns[0].name)
    if args.json:
        emit_json({**as_dict(reply), **({"hint": hint} if hint else {})})
    else:
        print_report(reply, hint, sys.stdout)
    if not reply.valid:
        raise DatasetInvalid(f"dataset {reply.dataset_id!r} has {reply.violation_count} violation(s)")
    return 0


def _file_sha256(path: Path) -> tuple[int, str]:
    sha = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(UPLOAD_CHUNK_BYTES):
            sha.update(chunk)
            size += len(chunk)
    return size, sha.hexdigest()


def upload_requests(
    path: Path, header: data_service_pb2.UploadHeader
) -> Iterator[data_service_pb2.UploadDatasetRequest]:
    yield data_service_pb2.UploadDatasetRequest(header=header)
    with path.open("rb") as f:
        while chunk := f.read(UPLOAD_CHUNK_BYTES):
            yield data_service_pb2.UploadDatasetRequest(chunk=chunk)


def cmd_upload(args: argparse.Namespace) -> int:
    path = Path(args.path)
    suffix = path.suffix.lower()
    formats = {".csv": data_pb2.DATASET_FORMAT_CSV, ".parquet": data_pb2.DATASET_FORMAT_PARQUET}
    if suffix not in formats:
        raise InvalidArgument(f"{path.name}: the file name must end in .csv or .parquet")
    if not path.is_file():
        raise InvalidArgument(f"{path}: no such file")
    if not args.no_validate:
        judge_upload(args, path)
    size, digest = _file_sha256(path)
    header = data_service_pb2.UploadHeader(
        dataset_id=args.id or path.name[: -len(suffix)],
        format=formats[suffix],
        size_bytes=size,
        sha256=digest,
        overwrite=args.overwrite,
    )
    reply = call(args.address, lambda s: s.UploadDataset(upload_requests(path, header), timeout=args.timeout))
    if args.json:
        emit_json(as_dict(reply.dataset))
    else:
        d = reply.dataset
        print(f"uploaded {d.dataset_id}: {d.row_count:,} rows, {d.size_bytes:,} bytes, version {d.version}")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    request = data_service_pb2.DeleteDatasetRequest(dataset_id=args.dataset_id)
    reply = call(args.address, lambda s: s.DeleteDataset(request, timeout=args.timeout))
    if args.json:
        emit_json(as_dict(reply))
    else:
        print(f"deleted {reply.dataset_id}")
    return 0


def _client(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    help_text: str,
    func: Callable[[argparse.Namespace], int],
) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(name, help=help_text)
    p.add_argument("--address", help=ADDRESS_HELP + "; a data service's own address works too")
    p.add_argument("--json", action="store_true", help="print one JSON document and nothing else")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the answer (default 600)")
    p.set_defaults(func=func)
    return p


def _bounded(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an integer in [low, high] (the protobuf field's range)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be in {low}..{high}, got {text}")
        return value

    return parse


_uint64 = _bounded(0, (1 << 64) - 1)
_positive_int64 = _bounded(1, (1 << 63) - 1)
_count_int32 = _bounded(0, (1 << 31) - 1)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `datasets` command group to the top-level parser."""
    group = sub.add_parser("datasets", help="datasets: generate locally; list, inspect, sample, validate, upload")
    cmds = group.add_subparsers(dest="datasets_command", required=True, metavar="COMMAND")

    gen = cmds.add_parser("generate", help="write synthetic policies (.csv or .parquet): term life or savings")
    gen.add_argument(
        "--model",
        choices=tuple(GENERATORS),
        default="term_life",
        help="whose policies: term_life (default) or savings (lifelib CashValue_ME's products A-D)",
    )
    gen.add_argument("--rows", type=_positive_int64, required=True, help="number of policies")
    gen.add_argument("--seed", type=_uint64, default=0, help="random seed (default 0)")
    gen.add_argument("--out", required=True, help="output path ending in .csv or .parquet")
    gen.add_argument("--json", action="store_true", help="print one JSON document and nothing else")
    gen.set_defaults(func=cmd_generate)

    _client(cmds, "list", "list the datasets", cmd_list)
    for name, help_text, func in (
        ("show", "a dataset's metadata", cmd_show),
        ("schema", "a dataset's columns", cmd_schema),
        ("delete", "delete a dataset", cmd_delete),
    ):
        _client(cmds, name, help_text, func).add_argument("dataset_id")
    sample = _client(cmds, "sample", "a seeded uniform sample of rows", cmd_sample)
    sample.add_argument("dataset_id")
    sample.add_argument("--n", type=_positive_int64, default=10, help="rows to draw (default 10)")
    sample.add_argument("--seed", type=_uint64, default=0, help="sampler seed (default 0)")
    sample.add_argument("--columns", nargs="+", help="columns to return (default all)")
    validate = _client(
        cmds,
        "validate",
        "check a dataset, or a local file before upload, against a model's declared columns and rules "
        "(exit 1 if invalid)",
        cmd_validate,
    )
    validate.add_argument(
        "dataset_id",
        nargs="?",
        metavar="DATASET|FILE",
        help="a dataset on the data service, or the path of a local .csv or .parquet file (no service needed)",
    )
    validate.add_argument("--file", help="a local .csv or .parquet file (no service needed)")
    validate.add_argument(
        "--package",
        metavar="HASH|DIR|FILE",
        help="judge by this package's declaration: a package directory, an archive, or a stored package's hash "
        "or a unique prefix of it (downloaded from the gateway); default: the shipped term-life declaration",
    )
    validate.add_argument(
        "--gateway", help="gateway HOST:PORT for --package HASH when --address is a data service's (default --address)"
    )
    validate.add_argument("--model", default=TERM_LIFE, help="model name without --package (default term_life)")
    validate.add_argument("--max-violations", type=_count_int32, default=20, help="violations to list (default 20)")
    upload = _client(cmds, "upload", "upload a .csv or .parquet file as a dataset", cmd_upload)
    upload.add_argument("path")
    upload.add_argument("--id", help="dataset id (default: the file name without extension)")
    upload.add_argument("--overwrite", action="store_true", help="replace an existing dataset of that id")
    upload.add_argument(
        "--package",
        metavar="HASH|DIR|FILE",
        help="judge the file by this package's declaration before sending it (refused at once if invalid); "
        "default: the shipped term-life declaration when the file has term life's columns",
    )
    upload.add_argument(
        "--no-validate", action="store_true", help="send the file without judging it first (e.g. a scenario set)"
    )


def register_bench(bench_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `bench data`."""
    from services.data.bench import add_bench_parser  # noqa: PLC0415 - keeps CLI start-up light

    add_bench_parser(bench_sub)
