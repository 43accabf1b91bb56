"""Deriving a package from another by changing declared tables and parameters (a sensitivity).

A job's variant (gateway job.proto `Variant`) is the base package with some of its declared
assumptions changed: a table scaled (every value × factor), shifted (every value + amount) or
replaced by new CSV text, a float64 parameter scaled, shifted or given a new value. `derive`
applies the changes in order to the package's files and config and checks each changed asset
as a package upload checks it (the declared shape, labels and bounds: interface/tables.py), so
a variant that leaves a mortality rate above 1 is refused before anything runs — unless the
override asks for its values to be clamped to the declared min and max (mortality × 1.15 with
every rate capped at 1).

Changed values are written back exactly: a table's CSV is rewritten with ``repr`` of each
float64 (the shortest text that reads back as the same bits), a parameter where the declaration
says its value lives — the JSON file and key it names, else the declaration's own ``value``. A
package built by hand with the same values therefore computes the same bits. The derived
package keeps the base's name, version and ``createdAt``, so the same changes to the same
base always give the same package hash.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import numpy as np

from services.valuation.arrays import F64
from services.valuation.interface.declaration import AM, Bounds, ModelInterface, Parameter, Table
from services.valuation.interface.parser import interface_of
from services.valuation.interface.tables import TableData, asset_issues, load_assets
from services.valuation.packages.archive import write_archive
from services.valuation.packages.manifest import CONFIG, MANIFEST, make_manifest
from services.valuation.packages.package import Package, check_contents
from services.valuation.packages.report import Issue, PackageInvalid, error

Target = Literal["table", "parameter"]
Change = Literal["scale", "shift", "value", "table_csv"]
#: What each target may be changed by.
CHANGES: Final[Mapping[Target, tuple[Change, ...]]] = {
    "table": ("scale", "shift", "table_csv"),
    "parameter": ("scale", "shift", "value"),
}


@dataclass(frozen=True)
class Override:
    """One change: ``target`` (a declared table or parameter) ``name`` changed by ``change``:
    × ``amount`` (scale), + ``amount`` (shift), = ``amount`` (value), or the table replaced by
    ``csv`` (table_csv)."""

    target: Target
    name: str
    change: Change
    amount: float = 0.0
    csv: str = ""
    #: With scale or shift: values past a declared min or max are set to it (not refused).
    clamp: bool = False

    def describe(self) -> str:
        """``table mortality × 1.15`` style text."""
        what = f"{self.target} {self.name}"
        if self.change == "table_csv":
            return f"{what} replaced"
        sign = {"scale": "×", "shift": "+", "value": "="}[self.change]
        return f"{what} {sign} {self.amount!r}" + (", clamped" if self.clamp else "")


def _clamped(values: F64, bounds: Bounds) -> F64:
    """``values`` with those below a declared min or above a declared max set to it (open
    bounds, greater_than and less_than, have no nearest value: they are left to the checks)."""
    low = -np.inf if bounds.min is None else bounds.min
    high = np.inf if bounds.max is None else bounds.max
    return np.clip(values, low, high)


def _scaled(value: float, override: Override) -> float:
    if override.change == "scale":
        return value * override.amount
    if override.change == "shift":
        return value + override.amount
    return override.amount


def table_csv_bytes(spec: Table, data: TableData, values: F64) -> bytes:
    """The table's CSV (docs/model-interface.md "Tables") with ``values`` (data's shape), each
    written as ``repr`` of its float64 so that it reads back as the same bits."""
    lines: list[str] = []
    if len(spec.axes) == 1:
        first = data.origin[0]
        lines.append(f"{spec.axes[0].name},{spec.name}")
        lines += [f"{first + i},{float(v)!r}" for i, v in enumerate(values)]
    else:
        row0, col0 = data.origin
        lines.append(",".join([spec.axes[0].name, *(str(col0 + j) for j in range(values.shape[1]))]))
        lines += [",".join([str(row0 + i), *(repr(float(v)) for v in row)]) for i, row in enumerate(values)]
    return ("\n".join(lines) + "\n").encode("utf-8")


def _set_key(document: Any, key: str, value: float) -> bool:
    """Set the dotted ``key`` of a JSON object to ``value`` (objects on the way created); False
    when something other than an object is in the way."""
    node = document
    *path, leaf = key.split(".")
    for part in path:
        if not isinstance(node, dict):
            return False
        node = node.setdefault(part, {})
    if not isinstance(node, dict):
        return False
    node[leaf] = value
    return True


class _Deriver:
    """Applies overrides one by one to a copy of a package's config and files."""

    def __init__(self, package: Package) -> None:
        self.config: dict[str, Any] = json.loads(json.dumps(package.config))  # a deep copy
        self.files: dict[str, bytes] = dict(package.files)
        self.issues: list[Issue] = []

    def interface(self) -> ModelInterface:
        return interface_of(self.config)

    def apply(self, where: str, override: Override) -> None:
        if override.change not in CHANGES[override.target]:
            allowed = ", ".join(CHANGES[override.target])
            self.issues.append(error(where, f"a {override.target} takes {allowed}, not {override.change}"))
            return
        if override.change != "table_csv" and not math.isfinite(override.amount):
            self.issues.append(error(where, f"{override.change} must be a finite number, got {override.amount!r}"))
            return
        if "interface" not in self.config:
            self.issues.append(
                error(where, "the package declares no tables or parameters (its config has no interface)")
            )
            return
        interface = self.interface()
        if override.target == "table":
            table = next((t for t in interface.tables if t.name == override.name), None)
            if table is None:
                names = ", ".join(t.name for t in interface.tables) or "none"
                self.issues.append(error(where, f"no table {override.name!r} is declared (tables: {names})"))
                return
            self.table(where, interface, table, override)
        else:
            parameter = next((p for p in interface.parameters if p.name == override.name), None)
            if parameter is None:
                names = ", ".join(p.name for p in interface.parameters) or "none"
                self.issues.append(error(where, f"no parameter {override.name!r} is declared (parameters: {names})"))
                return
            self.parameter(where, interface, parameter, override)

    def table(self, where: str, interface: ModelInterface, spec: Table, override: Override) -> None:
        if spec.file.startswith(AM):
            self.issues.append(error(where, f"table {spec.name} comes from {spec.file}, not the package"))
            return
        alone = dataclasses.replace(interface, tables=(spec,), parameters=())
        if override.change == "table_csv":
            self.files[spec.file] = override.csv.encode("utf-8")
        else:
            data = load_assets(alone, self.files.get).tables[0]
            values = data.values * override.amount if override.change == "scale" else data.values + override.amount
            if override.clamp:
                values = _clamped(values, spec.bounds)
            self.files[spec.file] = table_csv_bytes(spec, data, values)
        found = [i for i in asset_issues(alone, self.files.get) if i.severity == "error"]
        if found and override.change != "table_csv":
            # one line for the change, not one per cell: the cause is the factor, not the file
            more = ", and more" if len(found) > 1 else ""
            hint = "" if override.clamp else " (clamp sets values past a declared min or max to it)"
            self.issues.append(
                error(
                    where,
                    f"{override.describe()} leaves the table outside its declaration: {found[0].message}{more}{hint}",
                )
            )
        else:
            self.issues += [error(where, f"table {spec.name} ({i.where}): {i.message}") for i in found]

    def parameter(self, where: str, interface: ModelInterface, spec: Parameter, override: Override) -> None:
        if spec.type != "float64":
            self.issues.append(error(where, f"parameter {spec.name} is {spec.type}; only float64 parameters change"))
            return
        if spec.file is not None and spec.file.startswith(AM):
            self.issues.append(error(where, f"parameter {spec.name} comes from {spec.file}, not the package"))
            return
        alone = dataclasses.replace(interface, tables=(), parameters=(spec,))
        current = float(load_assets(alone, self.files.get).parameters[0])
        value = _scaled(current, override)
        if override.clamp and override.change != "value":
            value = float(_clamped(np.array([value]), spec.bounds)[0])
        if spec.value is None and spec.file is not None and spec.key is not None:
            raw = self.files.get(spec.file)
            document = json.loads(raw.decode("utf-8")) if raw is not None else {}
            if not _set_key(document, spec.key, value):
                self.issues.append(error(where, f"{spec.file}:$.{spec.key} cannot be set: a value is in the way"))
                return
            self.files[spec.file] = (json.dumps(document, indent=2) + "\n").encode("utf-8")
        else:  # the declaration holds it (its value, or its default: a value now takes its place)
            declared = next(p for p in self.config["interface"]["parameters"] if p.get("name") == spec.name)
            declared["value"] = value
        interface = self.interface()
        after = dataclasses.replace(
            interface, tables=(), parameters=tuple(p for p in interface.parameters if p.name == spec.name)
        )
        self.issues += [error(where, i.message) for i in asset_issues(after, self.files.get)]


def derive(package: Package, overrides: Sequence[Override]) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The config and asset files of ``package`` with ``overrides`` applied in order;
    `PackageInvalid` lists every problem, each ``where`` being ``overrides[i]``."""
    deriver = _Deriver(package)
    for i, override in enumerate(overrides):
        before = len(deriver.issues)
        deriver.apply(f"overrides[{i}]", override)
        if len(deriver.issues) > before:
            break  # later changes would read what this one broke
    if not deriver.issues:
        deriver.issues += [i for i in check_contents(deriver.config, deriver.files) if i.severity == "error"]
    if deriver.issues:
        raise PackageInvalid(deriver.issues)
    return deriver.config, deriver.files


def derived_archive(package: Package, overrides: Sequence[Override]) -> bytes:
    """The archive of ``package`` with ``overrides`` applied (`derive`): the base's ``createdAt``
    kept, so the same overrides of the same package always give the same bytes and hash."""
    config, files = derive(package, overrides)
    manifest = make_manifest(files, config, package.manifest.created_at)
    config_bytes = (json.dumps(config, indent=2) + "\n").encode("utf-8")
    return write_archive({**files, CONFIG: config_bytes, MANIFEST: manifest.to_bytes()})
