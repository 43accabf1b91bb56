"""ValidateDataset: check every row of a dataset against a model's declared policy columns and rules.

The declaration comes with the request (``interface_json``, the canonical JSON of a package's
``interface``, and the table bounds its rules read); a request naming only ``term_life`` is judged
by the shipped term-life declaration. Rows are judged by `services.valuation.interface.records`,
the engine's own checks. One streaming pass in row order (CSV spans or Parquet row groups, so
memory stays bounded) checks types, required values, ranges and rules with vectorized masks;
duplicate keys are found by sorting (key, row) pairs. To bound memory on huge datasets the keys
are split into hash partitions of at most IDS_PER_PASS each; partition 0 is checked during the
main pass and any further partition costs one more pass over the key column only.
"""

from __future__ import annotations

import functools
import io
import json
import tempfile
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import anyio.to_thread
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.csv as pacsv

from livecalc.data.v1 import data_pb2, data_service_pb2
from services.common.errors import FailedPrecondition, FieldViolation, InvalidArgument
from services.common.storage.base import ObjectChanged
from services.common.storage.local import LocalStorage
from services.data.catalog import Catalog, DatasetEntry
from services.data.reading import csv_convert_options, csv_spans, parquet_pieces
from services.valuation.interface.declaration import ModelInterface
from services.valuation.interface.parser import parse_interface
from services.valuation.interface.records import (
    DUPLICATE_MESSAGE,
    SHOWN_RULES,
    check_rows,
    duplicate_rule,
    resolve_bounds,
    term_life_rules,
)
from services.valuation.interface.tables import BoundKey, bounds_from_json
from services.valuation.policy_schema import coerce

DEFAULT_MAX_VIOLATIONS: Final = 100
MAX_INTERFACE_BYTES: Final = 1 << 20
TERM_LIFE: Final = "term_life"
MAX_VIOLATIONS: Final = 10_000
IDS_PER_PASS: Final = 4_000_000

Mask = npt.NDArray[np.bool_]


@dataclass
class _Report:
    cap: int
    rows: int = 0
    total: int = 0
    rule_rows: dict[str, int] = field(default_factory=dict)
    details: list[data_pb2.Violation] = field(default_factory=list)

    def add(self, rule: str, column: str, first_row: int, mask: Mask, message: str, *, values: object = None) -> None:
        hits = np.flatnonzero(mask)
        if not hits.size:
            return
        self.total += int(hits.size)
        room = self.cap - len(self.details)
        for i in hits[: max(room, 0)].tolist():
            shown = "" if values is None else f" (got {_cell(values, i)})"
            self.details.append(
                data_pb2.Violation(row=first_row + i, column=column, rule=rule, message=f"{column} {message}{shown}")
            )

    def count_rows(self, rule: str, mask: Mask) -> None:
        self.rule_rows[rule] = self.rule_rows.get(rule, 0) + int(mask.sum())


def _cell(values: object, i: int) -> str:
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return repr(values[i].as_py())[:40]
    return repr(np.asarray(values)[i].item())[:40]


@dataclass(frozen=True)
class Judge:
    """What rows are judged by: a declaration and the table bounds its rules and horizon read."""

    interface: ModelInterface
    bounds: Mapping[BoundKey, float]
    model: str = ""
    """The model's name, for messages."""


@functools.cache
def _term_life() -> Judge:
    interface, bounds = term_life_rules()
    return Judge(interface, bounds, TERM_LIFE)


def judge_of(request: data_service_pb2.ValidateDatasetRequest) -> Judge:
    """The request's declaration (see ValidateDatasetRequest); INVALID_ARGUMENT names every problem."""
    if not request.interface_json:
        if request.model not in ("", TERM_LIFE):
            raise InvalidArgument(
                f"unknown model {request.model!r}: send its declaration (interface_json); "
                f"only {TERM_LIFE!r} is known by name"
            )
        if request.table_bounds:
            raise InvalidArgument("table_bounds need interface_json (the term-life declaration has its own)")
        return _term_life()
    if len(request.interface_json.encode("utf-8")) > MAX_INTERFACE_BYTES:
        raise InvalidArgument(f"interface_json is over {MAX_INTERFACE_BYTES:,} bytes")
    try:
        raw = json.loads(request.interface_json)
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"interface_json is not JSON: {exc}") from None
    interface, issues = parse_interface(raw)
    errors = [i for i in issues if i.severity == "error"]
    if interface is None or errors:
        raise InvalidArgument(
            "interface_json is not a valid declaration",
            tuple(FieldViolation("interface_json" + i.where.removeprefix("$.interface"), i.message) for i in errors),
        )
    try:
        bounds = resolve_bounds(interface, bounds_from_json(dict(request.table_bounds)))
    except ValueError as exc:
        raise InvalidArgument(f"table_bounds: {exc}") from None
    return Judge(interface, bounds, request.model)


def _check_batch(
    report: _Report, judge: Judge, first: int, table: pa.Table
) -> tuple[npt.NDArray[np.int64], Mask] | None:
    """Row rules of one batch (`check_rows`); returns the key's values and where they are valid."""
    check = check_rows(table, judge.interface, judge.bounds)
    masks: dict[str, Mask] = {}
    for b in check.breaks:
        shown = table.column(b.column) if b.rule in SHOWN_RULES and b.column in table.column_names else None
        report.add(b.rule, b.column, first, b.rows, b.message, values=shown)
        masks[b.rule] = masks.get(b.rule, np.zeros(check.rows, dtype=bool)) | b.rows
    for rule, mask in masks.items():
        report.count_rows(rule, mask)
    report.rows += check.rows
    return check.key(judge.interface)


def partition_of(ids: npt.NDArray[np.int64], partitions: int) -> npt.NDArray[np.int64]:
    """The hash partition of each id: a multiplicative hash, so ids in steps of the partition
    count (10, 20, 30 …) spread over every partition instead of all falling into one."""
    mixed = ids.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)  # wraps mod 2^64
    return ((mixed >> np.uint64(32)) % np.uint64(partitions)).astype(np.int64)


def memory_estimate(rows: int) -> int:
    """Bytes the duplicate check holds at most: (id, row) pairs of one partition, sorted."""
    return min(rows, IDS_PER_PASS) * 64


class _Duplicates:
    """(key, row) pairs of one hash partition; duplicates are later rows of a key."""

    def __init__(self, partitions: int, part: int) -> None:
        self.partitions, self.part = partitions, part
        self.ids: list[npt.NDArray[np.int64]] = []
        self.rows: list[npt.NDArray[np.int64]] = []

    def add(self, first: int, ids: npt.NDArray[np.int64], valid: Mask) -> None:
        keep = valid & (partition_of(ids, self.partitions) == self.part) if self.partitions > 1 else valid
        self.ids.append(ids[keep])
        self.rows.append(np.flatnonzero(keep).astype(np.int64) + first)

    def duplicate_rows(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        if not self.ids:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        ids, rows = np.concatenate(self.ids), np.concatenate(self.rows)
        order = np.argsort(ids, kind="stable")  # rows ascend within an id
        sorted_ids = ids[order]
        dup = np.zeros(ids.size, dtype=bool)
        dup[1:] = sorted_ids[1:] == sorted_ids[:-1]
        return rows[order][dup], sorted_ids[dup]


async def _batches(
    catalog: Catalog, entry: DatasetEntry, columns: list[str] | None
) -> AsyncIterator[tuple[int, pa.Table]]:
    """The dataset in row order; CSV spans with type errors are re-read as text."""
    if entry.parquet is not None:
        first = 0
        async for table in parquet_pieces(catalog, entry, 0, entry.rows, columns):
            yield first, table
            first += table.num_rows
        return
    names = entry.column_names
    async for first, expected, data in csv_spans(catalog, entry, 0, entry.rows):

        def parse(as_text: bool, data: bytes = data) -> pa.Table:
            return pacsv.read_csv(
                io.BytesIO(data),
                read_options=pacsv.ReadOptions(column_names=names, use_threads=False, block_size=len(data) + 1),
                convert_options=csv_convert_options(entry.columns, columns, as_text=as_text),
            )

        try:
            table = await anyio.to_thread.run_sync(parse, False)
        except pa.ArrowInvalid:
            try:
                table = await anyio.to_thread.run_sync(parse, True)
            except pa.ArrowInvalid as exc:
                raise FailedPrecondition(
                    f"dataset {entry.dataset_id!r}: malformed CSV in rows {first}..{first + expected - 1}: {exc}"
                ) from None
        if table.num_rows != expected:
            raise FailedPrecondition(
                f"dataset {entry.dataset_id!r}: rows {first}..{first + expected - 1} parsed as {table.num_rows} rows"
            )
        yield first, table


async def validate(
    catalog: Catalog, entry: DatasetEntry, judge: Judge, max_violations: int
) -> data_service_pb2.ValidateDatasetResponse:
    """The full validation report of one dataset version."""
    if max_violations < 0:
        raise InvalidArgument("max_violations must be ≥ 0")
    cap = min(max_violations or DEFAULT_MAX_VIOLATIONS, MAX_VIOLATIONS)
    report = _Report(cap=cap)
    interface = judge.interface
    names = set(entry.column_names)
    missing_columns = [name for name in interface.required_columns if name not in names]
    wanted = [c.name for c in interface.columns if c.name in names]
    key = interface.key if interface.key in names else None
    partitions = max(1, -(-entry.rows // IDS_PER_PASS))
    dups = [_Duplicates(partitions, 0)]
    try:
        async for first, table in _batches(catalog, entry, wanted):
            checked = await anyio.to_thread.run_sync(_check_batch, report, judge, first, table)
            if checked is not None:
                dups[0].add(first, *checked)
        if key is not None:
            for part in range(1, partitions):
                dups.append(_Duplicates(partitions, part))
                async for first, table in _batches(catalog, entry, [key]):
                    id_cells = coerce(table.column(key), "int64")
                    dups[-1].add(first, np.asarray(id_cells.values, dtype=np.int64), id_cells.valid)
    except ObjectChanged:
        raise FailedPrecondition(f"dataset {entry.dataset_id!r} changed during validation; retry") from None
    found = [d.duplicate_rows() for d in dups]
    dup_rows = np.concatenate([r for r, _ in found])
    dup_ids = np.concatenate([i for _, i in found])
    order = np.argsort(dup_rows)
    details = list(report.details)
    dup_rule = duplicate_rule(interface)
    for row, pid in zip(dup_rows[order][:cap].tolist(), dup_ids[order][:cap].tolist(), strict=True):
        details.append(
            data_pb2.Violation(row=row, column=key or "", rule=dup_rule, message=f"{key} {pid} {DUPLICATE_MESSAGE}")
        )
    details.sort(key=lambda v: (v.row, v.column, v.rule))
    counts = dict(report.rule_rows)
    if dup_rows.size:
        counts[dup_rule] = int(dup_rows.size)
    if missing_columns:
        counts["required_column"] = len(missing_columns)
    total = report.total + int(dup_rows.size) + len(missing_columns)
    return data_service_pb2.ValidateDatasetResponse(
        dataset_id=entry.dataset_id,
        version=entry.version,
        valid=total == 0,
        rows_checked=report.rows,
        violation_count=total,
        violations=details[:cap],
        rule_counts=[data_pb2.RuleCount(rule=r, count=c) for r, c in sorted(counts.items()) if c],
        missing_columns=missing_columns,
    )


async def validate_file(path: Path, judge: Judge, max_violations: int) -> data_service_pb2.ValidateDatasetResponse:
    """The validation report of a local .csv or .parquet file, exactly as the data service would
    give it once uploaded (the file is read through a catalog of its own in a temporary folder,
    where its index goes; the file itself is neither copied nor changed)."""
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise InvalidArgument(f"{path.name}: the file name must end in .csv or .parquet")
    if not path.is_file():
        raise InvalidArgument(f"{path}: no such file")
    with tempfile.TemporaryDirectory(prefix="livecalc-validate-") as folder:
        (Path(folder) / f"local{suffix}").symlink_to(path.resolve())
        storage = LocalStorage(Path(folder))
        try:
            catalog = Catalog(storage)
            reply = await validate(catalog, await catalog.get("local"), judge, max_violations)
        finally:
            await storage.close()
    reply.dataset_id, reply.version = path.name, ""
    return reply
