"""`livecalc datasets ...`: generate synthetic policies, and talk to a data service over gRPC.

Client commands take `--address` (default 127.0.0.1:50053) and `--json` (one JSON
document on stdout and nothing else). Failures are LivecalcError subclasses, which the
top-level CLI prints as one line on stderr with exit code 1.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from livecalc.data.v1 import data_pb2, data_service_pb2, data_service_pb2_grpc
from services.common.config import DEFAULT_PORTS
from services.common.errors import InvalidArgument, LivecalcError, Unavailable
from services.data.generate import generate
from services.data.upload import CHUNK_LIMIT

DEFAULT_ADDRESS = f"127.0.0.1:{DEFAULT_PORTS['data'][0]}"
T = TypeVar("T")


class RemoteError(LivecalcError):
    """The data service answered with an error status."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(f"{code.name.lower()}: {message}")
        self.code = code


class DatasetInvalid(LivecalcError):
    """Validation found violations (the report was printed)."""


def call(address: str, fn: Callable[[data_service_pb2_grpc.DataServiceStub], T]) -> T:
    """Run `fn` with a stub on a fresh channel; gRPC errors become one-line LivecalcErrors."""
    options = [("grpc.max_receive_message_length", 16 << 20)]
    with grpc.insecure_channel(address, options=options) as channel:
        try:
            return fn(data_service_pb2_grpc.DataServiceStub(channel))
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
            details = exc.details() if hasattr(exc, "details") else str(exc)
            if code == grpc.StatusCode.UNAVAILABLE:
                raise Unavailable(f"cannot reach the data service at {address}: {details}") from None
            raise RemoteError(code, details or code.name) from None


def as_dict(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def emit_json(document: Any) -> None:
    json.dump(document, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


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
    for c in columns:
        kind = _enum("COLUMN_TYPE_", c.type, data_pb2.ColumnType)
        print(f"{c.name:<24} {kind:<8} {'nullable' if c.nullable else 'required'}")


def cmd_generate(args: argparse.Namespace) -> int:
    size = generate(Path(args.out), args.rows, args.seed)
    if args.json:
        emit_json({"path": str(args.out), "rows": args.rows, "seed": args.seed, "size_bytes": size})
    else:
        print(f"wrote {args.rows:,} policies ({size:,} bytes) to {args.out}")
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


def cmd_sample(args: argparse.Namespace) -> int:
    request = data_service_pb2.SampleRowsRequest(
        dataset_id=args.dataset_id, n=args.n, seed=args.seed, columns=args.columns or []
    )
    reply = call(args.address, lambda s: s.SampleRows(request, timeout=args.timeout))
    if args.json:
        emit_json(as_dict(reply))
        return 0
    # Struct keeps neither column order nor integer-ness: the schema restores both.
    schema = call(args.address, lambda s: s.GetSchema(data_service_pb2.GetSchemaRequest(dataset_id=args.dataset_id)))
    rows = [json_format.MessageToDict(r.values) for r in reply.rows]
    present = set(rows[0]) if rows else set()
    names = [c.name for c in schema.columns if c.name in present]
    integers = {c.name for c in schema.columns if c.type == data_pb2.COLUMN_TYPE_INT64}
    table = [["row", *names]]
    for r, values in zip(reply.rows, rows, strict=True):
        table.append([str(r.row), *(_cell(values.get(n), n in integers) for n in names)])
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)))
    return 0


def _cell(value: Any, integer: bool) -> str:
    if value is None:
        return ""
    if integer and isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def cmd_validate(args: argparse.Namespace) -> int:
    request = data_service_pb2.ValidateDatasetRequest(
        dataset_id=args.dataset_id, model=args.model, max_violations=args.max_violations
    )
    reply = call(args.address, lambda s: s.ValidateDataset(request, timeout=args.timeout))
    if args.json:
        emit_json(as_dict(reply))
    else:
        state = "valid" if reply.valid else "INVALID"
        print(f"{reply.dataset_id} ({reply.version}): {state}, {reply.rows_checked:,} rows checked")
        if reply.missing_columns:
            print(f"missing columns: {', '.join(reply.missing_columns)}")
        for rc in reply.rule_counts:
            print(f"  {rc.rule:<22} {rc.count:>10,}")
        for v in reply.violations:
            print(f"  row {v.row}: [{v.rule}] {v.message}")
    if not reply.valid:
        raise DatasetInvalid(f"dataset {reply.dataset_id!r} has {reply.violation_count} violation(s)")
    return 0


def _file_sha256(path: Path) -> tuple[int, str]:
    sha = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_LIMIT):
            sha.update(chunk)
            size += len(chunk)
    return size, sha.hexdigest()


def upload_requests(
    path: Path, header: data_service_pb2.UploadHeader
) -> Iterator[data_service_pb2.UploadDatasetRequest]:
    yield data_service_pb2.UploadDatasetRequest(header=header)
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_LIMIT):
            yield data_service_pb2.UploadDatasetRequest(chunk=chunk)


def cmd_upload(args: argparse.Namespace) -> int:
    path = Path(args.path)
    suffix = path.suffix.lower()
    formats = {".csv": data_pb2.DATASET_FORMAT_CSV, ".parquet": data_pb2.DATASET_FORMAT_PARQUET}
    if suffix not in formats:
        raise InvalidArgument(f"{path.name}: the file name must end in .csv or .parquet")
    if not path.is_file():
        raise InvalidArgument(f"{path}: no such file")
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
    p.add_argument("--address", default=DEFAULT_ADDRESS, help=f"data service HOST:PORT (default {DEFAULT_ADDRESS})")
    p.add_argument("--json", action="store_true", help="print one JSON document and nothing else")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the answer (default 600)")
    p.set_defaults(func=func)
    return p


def _uint64(text: str) -> int:
    value = int(text)
    if not 0 <= value < 1 << 64:
        raise argparse.ArgumentTypeError("must be in 0..2^64-1")
    return value


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `datasets` command group to the top-level parser."""
    group = sub.add_parser("datasets", help="datasets: generate locally; list, inspect, sample, validate, upload")
    cmds = group.add_subparsers(dest="datasets_command", required=True, metavar="COMMAND")

    gen = cmds.add_parser("generate", help="write synthetic term-life policies (.csv or .parquet)")
    gen.add_argument("--rows", type=int, required=True, help="number of policies")
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
    sample.add_argument("--n", type=int, default=10, help="rows to draw (default 10)")
    sample.add_argument("--seed", type=_uint64, default=0, help="sampler seed (default 0)")
    sample.add_argument("--columns", nargs="+", help="columns to return (default all)")
    validate = _client(
        cmds, "validate", "check a dataset against a model's policy schema (exit 1 if invalid)", cmd_validate
    )
    validate.add_argument("dataset_id")
    validate.add_argument("--model", default="term_life", help="model schema (default term_life)")
    validate.add_argument("--max-violations", type=int, default=20, help="violations to list (default 20)")
    upload = _client(cmds, "upload", "upload a .csv or .parquet file as a dataset", cmd_upload)
    upload.add_argument("path")
    upload.add_argument("--id", help="dataset id (default: the file name without extension)")
    upload.add_argument("--overwrite", action="store_true", help="replace an existing dataset of that id")


def register_bench(bench_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `bench data`."""
    from services.data.bench import add_bench_parser  # noqa: PLC0415 - keeps CLI start-up light

    add_bench_parser(bench_sub)
