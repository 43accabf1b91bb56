"""ValidateDataset: check every row of a dataset against a model's policy schema.

One streaming pass in row order (CSV spans or Parquet row groups, so memory stays
bounded) checks types, required values and ranges with vectorized masks; duplicate
policy_ids are found by sorting (id, row) pairs. To bound memory on huge datasets the
ids are split into hash partitions of at most IDS_PER_PASS each; partition 0 is checked
during the main pass and any further partition costs one more pass over policy_id only.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Final

import anyio.to_thread
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.csv as pacsv

from livecalc.data.v1 import data_pb2, data_service_pb2
from services.common.errors import FailedPrecondition, InvalidArgument
from services.common.storage.base import ObjectChanged
from services.data.catalog import Catalog, DatasetEntry
from services.data.reading import csv_convert_options, csv_spans, parquet_pieces
from services.valuation.policy_schema import (
    DUPLICATE_MESSAGE,
    DUPLICATE_RULE,
    MODELS,
    PolicyColumn,
    check_rows,
    coerce,
)

DEFAULT_MAX_VIOLATIONS: Final = 100
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


_SHOWN_RULES: Final = frozenset({"type", "range", "enum"})
"""Rules whose violation message shows the offending cell."""


def _check_batch(
    report: _Report, schema: tuple[PolicyColumn, ...], first: int, table: pa.Table
) -> tuple[npt.NDArray[np.int64], Mask] | None:
    """Row rules of one batch (the domain's, `check_rows`); returns policy_id values and where they are valid."""
    check = check_rows(table, schema)
    masks: dict[str, Mask] = {}
    for b in check.breaks:
        shown = table.column(b.column) if b.rule in _SHOWN_RULES and b.column in table.column_names else None
        report.add(b.rule, b.column, first, b.rows, b.message, values=shown)
        masks[b.rule] = masks.get(b.rule, np.zeros(check.rows, dtype=bool)) | b.rows
    for rule, mask in masks.items():
        report.count_rows(rule, mask)
    report.rows += check.rows
    ids = check.columns.get("policy_id")
    if ids is None:
        return None
    return np.asarray(ids.values, dtype=np.int64), ids.valid


def partition_of(ids: npt.NDArray[np.int64], partitions: int) -> npt.NDArray[np.int64]:
    """The hash partition of each id: a multiplicative hash, so ids in steps of the partition
    count (10, 20, 30 …) spread over every partition instead of all falling into one."""
    mixed = ids.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)  # wraps mod 2^64
    return ((mixed >> np.uint64(32)) % np.uint64(partitions)).astype(np.int64)


def memory_estimate(rows: int) -> int:
    """Bytes the duplicate check holds at most: (id, row) pairs of one partition, sorted."""
    return min(rows, IDS_PER_PASS) * 64


class _Duplicates:
    """(policy_id, row) pairs of one hash partition; duplicates are later rows of an id."""

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
    catalog: Catalog, entry: DatasetEntry, model: str, max_violations: int
) -> data_service_pb2.ValidateDatasetResponse:
    """The full validation report of one dataset version."""
    schema = MODELS.get(model or "term_life")
    if schema is None:
        raise InvalidArgument(f"unknown model {model!r}; known: {', '.join(sorted(MODELS))}")
    if max_violations < 0:
        raise InvalidArgument("max_violations must be ≥ 0")
    cap = min(max_violations or DEFAULT_MAX_VIOLATIONS, MAX_VIOLATIONS)
    report = _Report(cap=cap)
    names = set(entry.column_names)
    missing_columns = [c.name for c in schema if c.required and c.name not in names]
    wanted = [c.name for c in schema if c.name in names]
    partitions = max(1, -(-entry.rows // IDS_PER_PASS))
    dups = [_Duplicates(partitions, 0)]
    try:
        async for first, table in _batches(catalog, entry, wanted):
            checked = await anyio.to_thread.run_sync(_check_batch, report, schema, first, table)
            if checked is not None:
                dups[0].add(first, *checked)
        if "policy_id" in names:
            for part in range(1, partitions):
                dups.append(_Duplicates(partitions, part))
                async for first, table in _batches(catalog, entry, ["policy_id"]):
                    id_cells = coerce(table.column("policy_id"), "int64")
                    dups[-1].add(first, np.asarray(id_cells.values, dtype=np.int64), id_cells.valid)
    except ObjectChanged:
        raise FailedPrecondition(f"dataset {entry.dataset_id!r} changed during validation; retry") from None
    dup_rows_all = []
    for d in dups:
        rows, ids = d.duplicate_rows()
        dup_rows_all.append((rows, ids))
    dup_rows = np.concatenate([r for r, _ in dup_rows_all]) if dup_rows_all else np.empty(0, np.int64)
    dup_ids = np.concatenate([i for _, i in dup_rows_all]) if dup_rows_all else np.empty(0, np.int64)
    order = np.argsort(dup_rows)
    details = list(report.details)
    for row, pid in zip(dup_rows[order][:cap].tolist(), dup_ids[order][:cap].tolist(), strict=True):
        details.append(
            data_pb2.Violation(
                row=row,
                column="policy_id",
                rule=DUPLICATE_RULE,
                message=f"policy_id {pid} {DUPLICATE_MESSAGE}",
            )
        )
    details.sort(key=lambda v: (v.row, v.column, v.rule))
    counts = dict(report.rule_rows)
    if dup_rows.size:
        counts[DUPLICATE_RULE] = int(dup_rows.size)
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
