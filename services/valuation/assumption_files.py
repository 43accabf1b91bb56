"""The assumption asset files of a model package (``assumptions/*``) ↔ `Assumptions`.

The format is part of the model package contract that the gateway (validating uploads), the
CLI (validate, inspect) and the engine (loading packages) all read, so it is defined here, once.
docs/packages.md and ``services/engine/assumption_assets.py``'s docstring describe the files.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from services.valuation.arrays import F64
from services.valuation.assumptions import Assumptions
from services.valuation.errors import ModelInputError, Violation

ASSET_FILES: Final = ("mortality.csv", "lapse.csv", "curve.csv", "expenses.json", "options.json")
"""The asset file names, relative to the package's ``assumptions/`` folder (options.json optional)."""


@dataclass(frozen=True)
class _Table:
    header: list[str]
    rows: list[list[str]] = field(default_factory=list)


def _read_csv(name: str, data: bytes) -> _Table:
    reader = csv.reader(io.StringIO(data.decode("utf-8")))
    lines = [row for row in reader if row and any(cell.strip() for cell in row)]
    if not lines:
        raise ModelInputError("assumption files", [Violation(name, "is empty")])
    return _Table([c.strip() for c in lines[0]], [[c.strip() for c in row] for row in lines[1:]])


def _csv_floats(name: str, table: _Table, first_key: int | None) -> tuple[list[int], F64]:
    """Parse rows "key,v0,v1,…"; keys must be consecutive integers (from ``first_key`` if given)."""
    keys: list[int] = []
    values: list[list[float]] = []
    width = len(table.header)
    for i, row in enumerate(table.rows, start=2):
        if len(row) != width:
            raise ModelInputError(
                "assumption files",
                [Violation(name, f"line {i} has {len(row)} fields, expected {width}")],
            )
        try:
            keys.append(int(row[0]))
            values.append([float(c) for c in row[1:]])
        except ValueError as exc:
            raise ModelInputError("assumption files", [Violation(name, f"line {i}: {exc}")]) from None
    if not keys:
        raise ModelInputError("assumption files", [Violation(name, "has no data rows")])
    start = keys[0] if first_key is None else first_key
    if keys != list(range(start, start + len(keys))):
        raise ModelInputError(
            "assumption files",
            [Violation(name, f"keys must be consecutive from {start}")],
        )
    return keys, np.array(values, dtype=np.float64)


def asset_csv(header: list[str], rows: Iterable[list[Any]]) -> bytes:
    """An assumption asset as CSV text: a header line, then one line per row, floats written
    with repr so they read back exactly."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow([repr(float(v)) if isinstance(v, float | np.floating) else v for v in row])
    return out.getvalue().encode("utf-8")


def assumption_files(assumptions: Assumptions) -> dict[str, bytes]:
    """The assumptions as asset files (name under ``assumptions/`` → bytes); see the module docstring."""
    a = assumptions
    ages = range(a.mortality_min_age, a.mortality_max_age + 1)
    mortality = asset_csv(
        ["age", *(str(d) for d in range(a.select_period + 1))],
        ([age, *(float(q) for q in row)] for age, row in zip(ages, a.mortality, strict=True)),
    )
    lapse = asset_csv(["year", "rate"], ([y, float(r)] for y, r in enumerate(a.lapse)))
    curve = asset_csv(["year", "rate"], ([k, float(z)] for k, z in enumerate(a.curve)))
    expenses = {
        "acquisition": a.expense_acq,
        "maintenance": a.expense_maint,
        "inflation": a.inflation,
        "commission_rate": a.commission_rate,
        "premium_loading": a.premium_loading,
    }
    options = {
        "female_multiplier": a.female_multiplier,
        "dynamic_lapse": {
            "beta": a.dyn_lapse_beta,
            "lo": a.dyn_lapse_lo,
            "hi": a.dyn_lapse_hi,
        },
    }
    return {
        "mortality.csv": mortality,
        "lapse.csv": lapse,
        "curve.csv": curve,
        "expenses.json": (json.dumps(expenses, indent=2) + "\n").encode("utf-8"),
        "options.json": (json.dumps(options, indent=2) + "\n").encode("utf-8"),
    }


def assumptions_from_files(files: Mapping[str, bytes]) -> Assumptions:
    """Parse asset files (name under ``assumptions/`` → bytes); ``options.json`` is optional."""
    missing = [n for n in ASSET_FILES[:4] if n not in files]
    if missing:
        raise ModelInputError("assumption files", [Violation(n, "is missing") for n in missing])
    mort_table = _read_csv("mortality.csv", files["mortality.csv"])
    if mort_table.header[0] != "age" or mort_table.header[1:] != [str(d) for d in range(len(mort_table.header) - 1)]:
        raise ModelInputError(
            "assumption files",
            [Violation("mortality.csv", "header must be age,0,1,…,S")],
        )
    ages, mortality = _csv_floats("mortality.csv", mort_table, None)
    for name in ("lapse.csv", "curve.csv"):
        if _read_csv(name, files[name]).header != ["year", "rate"]:
            raise ModelInputError("assumption files", [Violation(name, "header must be year,rate")])
    _, lapse = _csv_floats("lapse.csv", _read_csv("lapse.csv", files["lapse.csv"]), 0)
    _, curve = _csv_floats("curve.csv", _read_csv("curve.csv", files["curve.csv"]), 0)
    expenses = _read_json("expenses.json", files["expenses.json"])
    options = _read_json("options.json", files["options.json"]) if "options.json" in files else {}
    dyn = options.get("dynamic_lapse", {})
    try:
        return Assumptions(
            mortality=mortality,
            mortality_min_age=ages[0],
            lapse=lapse[:, 0],
            curve=curve[:, 0],
            expense_acq=float(expenses["acquisition"]),
            expense_maint=float(expenses["maintenance"]),
            inflation=float(expenses["inflation"]),
            commission_rate=float(expenses["commission_rate"]),
            premium_loading=float(expenses["premium_loading"]),
            female_multiplier=float(options.get("female_multiplier", 1.0)),
            dyn_lapse_beta=float(dyn.get("beta", 0.0)),
            dyn_lapse_lo=float(dyn.get("lo", 0.5)),
            dyn_lapse_hi=float(dyn.get("hi", 2.0)),
        )
    except KeyError as exc:
        raise ModelInputError("assumption files", [Violation("expenses.json", f"missing key {exc}")]) from None
    except (TypeError, ValueError, AttributeError) as exc:
        if isinstance(exc, ModelInputError):
            raise
        raise ModelInputError("assumption files", [Violation("expenses.json/options.json", str(exc))]) from None


def _read_json(name: str, data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelInputError("assumption files", [Violation(name, f"is not valid JSON: {exc}")]) from None
    if not isinstance(value, dict):
        raise ModelInputError("assumption files", [Violation(name, "must hold a JSON object")])
    return value
