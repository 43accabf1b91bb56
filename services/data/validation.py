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
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from livecalc.data.v1 import data_pb2, data_service_pb2
from services.common.errors import FailedPrecondition, InvalidArgument
from services.common.storage.base import ObjectChanged
from services.data.catalog import Catalog, DatasetEntry
from services.data.reading import csv_convert_options, csv_spans, parquet_pieces, type_mismatches
from services.data.schema import MODELS, PolicyColumn

DEFAULT_MAX_VIOLATIONS: Final = 100
MAX_VIOLATIONS: Final = 10_000
IDS_PER_PASS: Final = 4_000_000
MAX_AGE: Final = 120

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


@dataclass
class _Columns:
    """One batch's schema columns coerced to their types, with per-column masks."""

    values: dict[str, npt.NDArray[np.float64] | npt.NDArray[np.int64] | npt.NDArray[np.object_]]
    missing: dict[str, Mask]


def _coerce(col: pa.ChunkedArray, spec: PolicyColumn) -> tuple[object, Mask, Mask]:
    """(values, missing mask, type-error mask) of one column as the schema's type."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    n = len(arr)
    if spec.type == data_pb2.COLUMN_TYPE_STRING:
        text = pc.utf8_trim_whitespace(pc.cast(arr, pa.string()))
        missing = np.asarray(pc.fill_null(pc.equal(text, ""), True).to_numpy(zero_copy_only=False), dtype=bool)
        return np.asarray(text.to_numpy(zero_copy_only=False), dtype=object), missing, np.zeros(n, dtype=bool)
    bad = np.zeros(n, dtype=bool)
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        text = pc.utf8_trim_whitespace(arr.cast(pa.string()))
        bad = type_mismatches(text, spec.type)
        empty = np.asarray(pc.fill_null(pc.equal(text, ""), True).to_numpy(zero_copy_only=False), dtype=bool)
        arr = pc.if_else(pa.array(bad | empty), pa.scalar(None, pa.string()), text)
    elif not (pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type) or pa.types.is_null(arr.type)):
        bad = np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
        arr = pa.nulls(n, pa.string())
    missing = np.asarray(arr.is_null().to_numpy(zero_copy_only=False), dtype=bool) & ~bad
    floats = np.asarray(pc.cast(arr, pa.float64()).fill_null(np.nan).to_numpy(zero_copy_only=False), dtype=np.float64)
    if spec.type == data_pb2.COLUMN_TYPE_INT64:
        if pa.types.is_integer(arr.type):
            ints = np.asarray(arr.fill_null(0).cast(pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)
            return ints, missing, bad
        whole = ~missing & ~bad & ~(np.isfinite(floats) & (floats == np.floor(floats)) & (np.abs(floats) < 2.0**63))
        bad |= whole
        return np.where(missing | bad, 0, floats).astype(np.int64), missing, bad
    return floats, missing, bad


def _check_batch(
    report: _Report, schema: tuple[PolicyColumn, ...], first: int, table: pa.Table
) -> tuple[npt.NDArray[np.int64], Mask] | None:
    """Row rules of one batch; returns the policy_id values and where they are valid integers."""
    n = table.num_rows
    present = {s.name: s for s in schema if s.name in table.column_names}
    values: dict[str, object] = {}
    missing: dict[str, Mask] = {}
    rule_masks: dict[str, Mask] = {}
    bads: dict[str, Mask] = {}

    def flag(rule: str, column: str, mask: Mask, message: str, shown: object = None) -> None:
        report.add(rule, column, first, mask, message, values=shown)
        rule_masks[rule] = rule_masks.get(rule, np.zeros(n, dtype=bool)) | mask

    for name, spec in present.items():
        raw = table.column(name)
        vals, miss, bad = _coerce(raw, spec)
        bads[name] = bad
        values[name], missing[name] = vals, miss
        kind = data_pb2.ColumnType.Name(spec.type).removeprefix("COLUMN_TYPE_").lower()
        flag("type", name, bad, f"must be {kind}", raw)
        if spec.required:
            flag("required", name, miss, "is required")
    ok = {name: ~missing[name] for name in present}

    def num(name: str) -> npt.NDArray[np.float64]:
        return np.asarray(values[name], dtype=np.float64)

    if "age_at_entry" in values:
        age = num("age_at_entry")
        flag(
            "range", "age_at_entry", ok["age_at_entry"] & ((age < 0) | (age > MAX_AGE)), f"must be in 0..{MAX_AGE}", age
        )
    if "sex" in values:
        sex = np.asarray(values["sex"], dtype=object)
        valid = np.isin(np.char.upper(sex.astype(str)), ["M", "F"])
        flag("enum", "sex", ok["sex"] & ~valid, "must be 'M' or 'F'", table.column("sex"))
    if "policy_term" in values:
        term = num("policy_term")
        flag("range", "policy_term", ok["policy_term"] & (term < 1), "must be ≥ 1 year", term)
        if "age_at_entry" in values:
            both = ok["policy_term"] & ok["age_at_entry"] & (term >= 1)
            flag(
                "range",
                "policy_term",
                both & (num("age_at_entry") + term > MAX_AGE + 1),
                f"plus age_at_entry must be ≤ {MAX_AGE + 1}",
                term,
            )
    if "policy_count" in values:
        count = num("policy_count")
        flag(
            "range",
            "policy_count",
            ok["policy_count"] & ~(np.isfinite(count) & (count >= 0)),
            "must be finite and ≥ 0",
            count,
        )
    if "sum_assured" in values:
        sa = num("sum_assured")
        flag("range", "sum_assured", ok["sum_assured"] & ~(np.isfinite(sa) & (sa > 0)), "must be finite and > 0", sa)
    duration = num("duration_mth") if "duration_mth" in values else np.zeros(n)
    if "duration_mth" in values:
        has = ok["duration_mth"]
        flag("range", "duration_mth", has & (duration < 0), "must be ≥ 0", duration)
        if "policy_term" in values:
            term = num("policy_term")
            both = has & ok["policy_term"] & (duration >= 0) & (term >= 1)
            flag("range", "duration_mth", both & (duration >= 12 * term), "must be < 12·policy_term", duration)
    premium = num("premium_pp") if "premium_pp" in values else np.full(n, np.nan)
    if "premium_pp" in values:
        flag("range", "premium_pp", np.isinf(premium), "must be finite (or empty)", premium)
    needed = ~(premium > 0) & (duration > 0)
    flag(
        "premium_required",
        "premium_pp",
        needed,
        "is required when duration_mth > 0 (computed only for new business)",
    )
    for rule, mask in rule_masks.items():
        report.count_rows(rule, mask)
    report.rows += n
    if "policy_id" not in values:
        return None
    valid = ok["policy_id"] & ~bads["policy_id"]
    return np.asarray(values["policy_id"], dtype=np.int64), valid


class _Duplicates:
    """(policy_id, row) pairs of one hash partition; duplicates are later rows of an id."""

    def __init__(self, partitions: int, part: int) -> None:
        self.partitions, self.part = partitions, part
        self.ids: list[npt.NDArray[np.int64]] = []
        self.rows: list[npt.NDArray[np.int64]] = []

    def add(self, first: int, ids: npt.NDArray[np.int64], valid: Mask) -> None:
        keep = valid & ((ids % self.partitions) == self.part) if self.partitions > 1 else valid
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
    id_spec = next(
        (c for c in schema if c.name == "policy_id"), PolicyColumn("policy_id", data_pb2.COLUMN_TYPE_INT64, True)
    )
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
                    ids, miss, bad = _coerce(table.column("policy_id"), id_spec)
                    dups[-1].add(first, np.asarray(ids, dtype=np.int64), ~miss & ~bad)
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
                rule="duplicate_policy_id",
                message=f"policy_id {pid} repeats an earlier row",
            )
        )
    details.sort(key=lambda v: (v.row, v.column, v.rule))
    counts = dict(report.rule_rows)
    if dup_rows.size:
        counts["duplicate_policy_id"] = int(dup_rows.size)
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
