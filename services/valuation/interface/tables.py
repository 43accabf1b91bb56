"""A package's declared assets: its tables (CSV files) and parameters, read and judged.

`asset_issues` reports every problem of every table and parameter at once, each with where it
is (the file, ``file:$.key`` for a key of a JSON file, the declaration's JSON path for a value
written in it); `load_assets` returns what the host lays out — each table as f64 with its shape
and origin, the parameters in declaration order — and the table bounds (``TABLE.AXIS.first``,
``.last``, ``.size``) that rules and horizons read. The CSV format is docs/model-interface.md's
"Tables": for one axis two columns (label, value); for two axes the first column holds the first
axis' labels and the header row the second axis' labels; labels are consecutive integers.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

import numpy as np

from services.valuation.arrays import F64
from services.valuation.interface.declaration import ModelInterface, Parameter, Table
from services.valuation.packages.report import Issue, PackageInvalid, error

Read = Callable[[str], bytes | None]
"""A package file's bytes by its path in the package (None: no such file)."""
BoundKey = tuple[str, str, str]
"""(table, axis, "first" | "last" | "size")."""

CELLS_NAMED: Final = 5
"""Values outside a table's range named one by one; the rest are counted."""
_INT64: Final = (-(2**63), 2**63 - 1)
_UINT64: Final = (0, 2**64 - 1)


@dataclass(frozen=True, eq=False)
class TableData:
    """A table as the host passes it: f64 values (one dimension per axis, row-major, read-only)
    and each axis' first label (the origin)."""

    name: str
    values: F64
    origin: tuple[int, ...]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(n) for n in self.values.shape)


@dataclass(frozen=True, eq=False)
class Assets:
    """A package's tables and parameters, in declaration order, and the table bounds."""

    tables: tuple[TableData, ...]
    parameters: tuple[float | int, ...]
    """float for float64 parameters, int for int64 and uint64 ones."""
    bounds: Mapping[BoundKey, float] = field(default_factory=dict)

    def table(self, name: str) -> TableData:
        return next(t for t in self.tables if t.name == name)


def asset_issues(interface: ModelInterface, read: Read) -> list[Issue]:
    """Every problem of the declared tables and parameters (none: `load_assets` succeeds)."""
    return _Loader(interface, read).load()[1]


def load_assets(interface: ModelInterface, read: Read) -> Assets:
    """The declared tables and parameters; `PackageInvalid` lists every problem at once."""
    assets, issues = _Loader(interface, read).load()
    if assets is None or any(i.severity == "error" for i in issues):
        raise PackageInvalid(issues)
    return assets


# ---------------------------------------------------------------------------


def _number(v: float) -> str:
    return str(int(v)) if float(v).is_integer() and abs(v) < 1e15 else f"{v:g}"


def _shape(sizes: tuple[int | None, ...], axes: tuple[str, ...]) -> str:
    dims = " × ".join("any" if s is None else str(s) for s in sizes)
    return f"{dims} ({' × '.join(axes)})"


class _Loader:
    """Reads the declared assets of one package, collecting issues instead of stopping at the first."""

    def __init__(self, interface: ModelInterface, read: Read) -> None:
        self.interface, self.read = interface, read
        self.issues: list[Issue] = []
        self._json: dict[str, Any] = {}

    def fail(self, where: str, message: str) -> None:
        self.issues.append(error(where, message))

    def load(self) -> tuple[Assets | None, list[Issue]]:
        bounds: dict[BoundKey, float] = dict(self.interface.declared_bounds())
        tables: list[TableData] = []
        for i, spec in enumerate(self.interface.tables):
            table = self.table(spec, f"$.interface.tables[{i}]")
            if table is None:
                continue
            tables.append(table)
            for axis, first, size in zip(spec.axes, table.origin, table.shape, strict=True):
                bounds[(spec.name, axis.name, "first")] = float(first)
                bounds[(spec.name, axis.name, "size")] = float(size)
                bounds[(spec.name, axis.name, "last")] = float(first + size - 1)
        parameters = [
            self.parameter(p, f"$.interface.parameters[{i}]") for i, p in enumerate(self.interface.parameters)
        ]
        if any(i.severity == "error" for i in self.issues):
            return None, self.issues
        values = tuple(p for p in parameters if p is not None)
        return Assets(tuple(tables), values, MappingProxyType(bounds)), self.issues

    # tables

    def table(self, spec: Table, declared_at: str) -> TableData | None:
        data = self.read(spec.file)
        if data is None:
            self.fail(spec.file, f"is missing (table {spec.name}, declared at {declared_at})")
            return None
        rows = self.csv_rows(spec.file, data)
        if rows is None:
            return None
        parsed = self.one_axis(spec, rows) if len(spec.axes) == 1 else self.two_axes(spec, rows)
        if parsed is None:
            return None
        labels, values = parsed
        if not self.labels_fit(spec, labels, values.shape):
            return None
        self.values_fit(spec, labels, values)
        values.setflags(write=False)
        return TableData(spec.name, values, tuple(axis[0] for axis in labels))

    def csv_rows(self, path: str, data: bytes) -> list[tuple[int, list[str]]] | None:
        """(line number, stripped cells) of the non-blank lines."""
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            self.fail(path, f"is not UTF-8 text: {exc}")
            return None
        try:
            reader = csv.reader(io.StringIO(text), strict=True)
            rows = [(reader.line_num, [c.strip() for c in row]) for row in reader]
        except csv.Error as exc:
            self.fail(path, f"is not a CSV file: {exc}")
            return None
        rows = [(n, cells) for n, cells in rows if any(cells)]
        if not rows:
            self.fail(path, "is empty")
            return None
        if len(rows[0][1]) == 1 and any(sep in rows[0][1][0] for sep in (";", "\t")):
            self.fail(path, "is not comma-separated (its first line has ';' or tabs and no commas)")
            return None
        return rows

    def one_axis(self, spec: Table, rows: list[tuple[int, list[str]]]) -> tuple[list[list[int]], F64] | None:
        """Rows "label,value" after an optional header (a first line whose label is not an integer)."""
        if _integer(rows[0][1][0]) is None:
            rows = rows[1:]
        labels: list[int] = []
        values: list[float] = []
        ok = True
        for line, cells in rows:
            if len(cells) != 2:
                self.fail(spec.file, f"line {line} has {len(cells)} fields; a one-axis table has 2 (label, value)")
                ok = False
                continue
            label, value = _integer(cells[0]), _float(cells[1])
            if label is None:
                self.fail(spec.file, f"line {line}: label {cells[0]!r} is not an integer")
                ok = False
            if value is None:
                self.fail(spec.file, f"line {line}: {cells[1]!r} is not a number")
                ok = False
            if label is not None and value is not None:
                labels.append(label)
                values.append(value)
        if not ok:
            return None
        if not labels:
            self.fail(spec.file, "has no data rows")
            return None
        return [labels], np.array(values, dtype=np.float64)

    def two_axes(self, spec: Table, rows: list[tuple[int, list[str]]]) -> tuple[list[list[int]], F64] | None:
        """A header row of the second axis' labels, then rows "label,v0,v1,…"."""
        (header_line, header), body = rows[0], rows[1:]
        ok = True
        columns: list[int] = []
        for cell in header[1:]:
            label = _integer(cell)
            if label is None:
                self.fail(spec.file, f"line {header_line} (the header): {spec.axes[1].name} label {cell!r} "
                                     "is not an integer")  # fmt: skip
                ok = False
            else:
                columns.append(label)
        if len(header) < 2:
            self.fail(spec.file, f"line {header_line} (the header) must hold the {spec.axes[1].name} labels")
            return None
        labels: list[int] = []
        values: list[list[float]] = []
        for line, cells in body:
            if len(cells) != len(header):
                self.fail(spec.file, f"line {line} has {len(cells)} fields; the header has {len(header)}")
                ok = False
                continue
            label = _integer(cells[0])
            if label is None:
                self.fail(spec.file, f"line {line}: {spec.axes[0].name} label {cells[0]!r} is not an integer")
                ok = False
            numbers = [_float(c) for c in cells[1:]]
            for cell, number in zip(cells[1:], numbers, strict=True):
                if number is None:
                    self.fail(spec.file, f"line {line}: {cell!r} is not a number")
                    ok = False
                    break
            if label is not None and all(n is not None for n in numbers):
                labels.append(label)
                values.append([float(n) for n in numbers if n is not None])
        if not ok:
            return None
        if not labels:
            self.fail(spec.file, "has no data rows")
            return None
        return [labels, columns], np.array(values, dtype=np.float64)

    def labels_fit(self, spec: Table, labels: list[list[int]], shape: tuple[int, ...]) -> bool:
        """Labels consecutive from the declared ``first``, as many as a declared ``size``."""
        ok = True
        for axis, found in zip(spec.axes, labels, strict=True):
            gap = next((i for i in range(1, len(found)) if found[i] != found[i - 1] + 1), None)
            if gap is not None:
                self.fail(spec.file, f"{axis.name} labels must be consecutive integers: {found[gap]} follows "
                                     f"{found[gap - 1]}")  # fmt: skip
                ok = False
            elif found[0] != axis.first:
                self.fail(spec.file, f"{axis.name} labels start at {found[0]}; the declaration says first "
                                     f"{axis.first}")  # fmt: skip
                ok = False
        declared = tuple(a.size for a in spec.axes)
        if any(d is not None and d != n for d, n in zip(declared, shape, strict=True)):
            names = tuple(a.name for a in spec.axes)
            self.fail(spec.file, f"wrong table shape: the file is {_shape(tuple(shape), names)}, "
                                 f"the declaration says {_shape(declared, names)}")  # fmt: skip
            ok = False
        return ok

    def values_fit(self, spec: Table, labels: list[list[int]], values: F64) -> None:
        """Every value finite and within the table's range; the first few bad cells named."""
        bad = ~np.isfinite(values) | spec.bounds.breaks(values)
        cells = np.argwhere(bad)
        rule = spec.bounds.describe()
        for index in cells[:CELLS_NAMED]:
            at = ", ".join(f"{a.name} {axis[int(k)]}" for a, axis, k in zip(spec.axes, labels, index, strict=True))
            value = float(values[tuple(index)])
            need = "must be finite" + (f" and {rule.removeprefix('must be ')}" if rule else "")
            self.fail(spec.file, f"value at {at} is {value!r}; values {need}")
        if len(cells) > CELLS_NAMED:
            self.fail(spec.file, f"… and {len(cells) - CELLS_NAMED} more values outside the range")

    # parameters

    def parameter(self, spec: Parameter, declared_at: str) -> float | int | None:
        if spec.value is not None:
            return self.judge(spec, f"{declared_at}.value", spec.value)
        if spec.file is not None and spec.key is not None:
            found = self.json_value(spec, declared_at)
            if found is _MISSING:
                return None
            if found is not _DEFAULT:
                return self.judge(spec, f"{spec.file}:$.{spec.key}", found)
        if spec.default is None:
            return None  # the parser refuses a parameter with neither value, file nor default
        return self.judge(spec, f"{declared_at}.default", spec.default)

    def json_value(self, spec: Parameter, declared_at: str) -> Any:
        """The value at ``spec.key`` of ``spec.file``; _DEFAULT to take the default, _MISSING on failure."""
        assert spec.file is not None and spec.key is not None
        if self.read(spec.file) is None:
            if spec.default is not None:
                return _DEFAULT
            self.fail(spec.file, f"is missing (parameter {spec.name}, declared at {declared_at}, has no default)")
            return _MISSING
        node: Any = self.json_file(spec.file)
        if node is _MISSING:
            return _MISSING  # not JSON: reported once for the file
        for part in spec.key.split("."):
            if not isinstance(node, Mapping) or part not in node:
                if spec.default is not None:
                    return _DEFAULT
                self.fail(f"{spec.file}:$.{spec.key}", f"is missing (parameter {spec.name} has no default)")
                return _MISSING
            node = node[part]
        return node

    def json_file(self, path: str) -> Any:
        if path not in self._json:
            data = self.read(path)
            document: Any = _MISSING
            if data is not None:
                try:
                    document = json.loads(data.decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                    self.fail(path, f"is not valid JSON: {exc}")
            self._json[path] = document
        return self._json[path]

    def judge(self, spec: Parameter, where: str, value: Any) -> float | int | None:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            self.fail(where, f"must be a finite number (parameter {spec.name}), got {value!r:.40}")
            return None
        out: float | int = float(value)
        if spec.type != "float64":
            low, high = _INT64 if spec.type == "int64" else _UINT64
            if not float(value).is_integer() or not low <= int(value) <= high:
                self.fail(where, f"must be a whole number in {spec.type} (parameter {spec.name}), got {value!r}")
                return None
            out = int(value)
        if spec.bounds.breaks(np.array([float(value)])).any():
            self.fail(where, f"{spec.bounds.describe()} (parameter {spec.name}), got {_number(float(value))}")
            return None
        return out


_MISSING: Final[Any] = object()
"""A parameter whose file or key is not there or not readable (reported), as opposed to a present null."""
_DEFAULT: Final[Any] = object()
"""A parameter whose file or key is not there and that has a default."""


def _integer(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def bounds_json(bounds: Mapping[BoundKey, float]) -> dict[str, float]:
    """Table bounds keyed ``"table.axis.first"`` (ValidateDatasetRequest.table_bounds)."""
    return {".".join(key): float(value) for key, value in sorted(bounds.items())}


def bounds_from_json(raw: Mapping[str, float]) -> dict[BoundKey, float]:
    """The inverse of `bounds_json`; ValueError names a key that is not ``table.axis.bound``."""
    out: dict[BoundKey, float] = {}
    for key, value in raw.items():
        parts = key.split(".")
        if len(parts) != 3 or parts[2] not in ("first", "last", "size") or not all(parts):
            raise ValueError(f"table bound {key!r} is not TABLE.AXIS.first, .last or .size")
        out[(parts[0], parts[1], parts[2])] = float(value)
    return out
