"""A package's declared tables and parameters: read as the host lays them out, every problem at once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from services.valuation.interface.declaration import ModelInterface
from services.valuation.interface.parser import parse_interface
from services.valuation.interface.tables import (
    Read,
    asset_issues,
    bounds_from_json,
    bounds_json,
    load_assets,
)
from services.valuation.packages.reference import init_directory
from services.valuation.packages.report import PackageInvalid
from services.valuation.reference_model import shipped_assumption_files, term_life_declaration


def interface(raw: dict[str, Any]) -> ModelInterface:
    parsed, issues = parse_interface(raw)
    assert parsed is not None, issues
    return parsed


def declared(tables: list[dict[str, Any]], parameters: list[dict[str, Any]] | None = None) -> ModelInterface:
    return interface(
        {
            "abi": 2,
            "policy": {"columns": [{"name": "x", "type": "int32", "required": True}], "horizon_months": "x"},
            "tables": tables,
            "parameters": parameters or [],
            "outputs": [{"name": "pv", "primary": True}],
        }
    )


def files(mapping: dict[str, str | bytes]) -> Read:
    data = {k: v.encode() if isinstance(v, str) else v for k, v in mapping.items()}
    return data.get


def directory(root: Path) -> Read:
    def read(path: str) -> bytes | None:
        file = root / path
        return file.read_bytes() if file.is_file() else None

    return read


def test_the_shipped_term_life_assets_load() -> None:
    shipped = shipped_assumption_files()
    assets = load_assets(interface(term_life_declaration()), lambda p: shipped.get(p.removeprefix("assumptions/")))
    mortality, lapse, curve = assets.tables
    assert (mortality.name, mortality.shape, mortality.origin) == ("mortality", (103, 6), (18, 0))
    assert mortality.values.dtype == np.float64 and not mortality.values.flags.writeable
    assert mortality.values[0, 0] == pytest.approx(0.0002310671048780701)
    assert (lapse.shape, lapse.origin, lapse.values[0]) == ((6,), (0,), 0.1)
    assert curve.shape == (151,) and assets.table("curve") is curve
    names = [p.name for p in interface(term_life_declaration()).parameters]
    values = dict(zip(names, assets.parameters, strict=True))
    assert values["expense_acq"] == 300.0 and values["dyn_lapse_beta"] == 0.0 and values["female_multiplier"] == 1.0
    assert assets.bounds[("mortality", "age", "last")] == 120.0
    assert assets.bounds[("curve", "year", "size")] == 151.0 and assets.bounds[("lapse", "policy_year", "first")] == 0.0


def test_a_package_directory_with_three_problems_reports_all_three(tmp_path: Path) -> None:
    root = tmp_path / "pkg"
    init_directory(root)
    config = json.loads((root / "livecalc.config.json").read_text())
    mortality_axes = config["interface"]["tables"][0]["axes"]
    mortality_axes[0]["size"], mortality_axes[1]["size"] = 103, 6
    # mortality: the last select year dropped (103 × 5, the declaration says 103 × 6)
    mortality = root / "assumptions" / "mortality.csv"
    mortality.write_text("".join(line.rsplit(",", 1)[0] + "\n" for line in mortality.read_text().splitlines()))
    # lapse: one line without its rate column
    lapse = root / "assumptions" / "lapse.csv"
    lines = lapse.read_text().splitlines()
    lines[3] = lines[3].split(",")[0]
    lapse.write_text("\n".join(lines) + "\n")
    # expenses.json: a key a parameter reads, gone
    expenses = json.loads((root / "assumptions" / "expenses.json").read_text())
    del expenses["maintenance"]
    (root / "assumptions" / "expenses.json").write_text(json.dumps(expenses))

    issues = asset_issues(interface(config["interface"]), directory(root))
    found = {(i.where, i.message) for i in issues}
    assert (
        "assumptions/mortality.csv",
        "wrong table shape: the file is 103 × 5 (age × select_year), the declaration says 103 × 6 (age × select_year)",
    ) in found
    assert ("assumptions/lapse.csv", "line 4 has 1 fields; a one-axis table has 2 (label, value)") in found
    assert ("assumptions/expenses.json:$.maintenance", "is missing (parameter expense_maint has no default)") in found
    assert len(issues) == 3, issues
    with pytest.raises(PackageInvalid) as info:
        load_assets(interface(config["interface"]), directory(root))
    assert len(info.value.issues) == 3 and "3 errors" in str(info.value)


def test_labels_must_be_consecutive_and_start_where_declared() -> None:
    i = declared(
        [
            {"name": "a", "file": "a.csv", "axes": [{"name": "year", "first": 0}]},
            {"name": "b", "file": "b.csv", "axes": [{"name": "year", "first": 1}]},
            {"name": "c", "file": "c.csv", "axes": [{"name": "age", "first": 20}, {"name": "dur", "first": 0}]},
            {"name": "d", "file": "d.csv", "axes": [{"name": "year", "first": 0}]},
        ]
    )
    issues = asset_issues(
        i,
        files(
            {
                "a.csv": "year,rate\n0,0.1\n1,0.2\n3,0.3\n",
                "b.csv": "0,0.1\n1,0.2\n",  # no header: the first line is data
                "c.csv": "age,0,2\n20,0.1,0.2\n",
                "d.csv": "year;rate\n0;0.1\n",
            }
        ),
    )
    assert [(x.where, x.message) for x in issues] == [
        ("a.csv", "year labels must be consecutive integers: 3 follows 1"),
        ("b.csv", "year labels start at 0; the declaration says first 1"),
        ("c.csv", "dur labels must be consecutive integers: 2 follows 0"),
        ("d.csv", "is not comma-separated (its first line has ';' or tabs and no commas)"),
    ]


def test_values_must_be_finite_and_in_range_each_bad_cell_named() -> None:
    i = declared(
        [
            {
                "name": "q",
                "file": "q.csv",
                "axes": [{"name": "age", "first": 0}, {"name": "dur", "first": 0}],
                "min": 0,
                "max": 1,
            },
            {"name": "r", "file": "r.csv", "axes": [{"name": "year"}], "greater_than": -1},
            {"name": "s", "file": "s.csv", "axes": [{"name": "year"}]},
        ]
    )
    issues = asset_issues(
        i,
        files(
            {
                "q.csv": "age,0,1\n0,0.5,1.5\n1,nan,0.2\n",
                "r.csv": "year,rate\n" + "".join(f"{k},-2\n" for k in range(8)),
                "s.csv": "year,rate\n0,x\n1,\n",
            }
        ),
    )
    messages = [(x.where, x.message) for x in issues]
    assert ("q.csv", "value at age 0, dur 1 is 1.5; values must be finite and ≥ 0 and ≤ 1") in messages
    assert ("q.csv", "value at age 1, dur 0 is nan; values must be finite and ≥ 0 and ≤ 1") in messages
    assert [m for w, m in messages if w == "r.csv"][-1] == "… and 3 more values outside the range"
    assert sum(w == "r.csv" for w, _ in messages) == 6  # five named, the rest counted
    assert ("s.csv", "line 2: 'x' is not a number") in messages and ("s.csv", "line 3: '' is not a number") in messages


def test_missing_and_unreadable_files_are_named() -> None:
    i = declared(
        [{"name": "a", "file": "a.csv", "axes": [{"name": "year"}]}],
        [
            {"name": "p", "file": "p.json", "key": "x"},
            {"name": "q", "file": "q.json", "key": "x", "default": 2.5},
            {"name": "r", "file": "bad.json", "key": "x"},
        ],
    )
    issues = asset_issues(i, files({"bad.json": "{not json", "empty.csv": ""}))
    found = {(x.where, x.message.split(":")[0]) for x in issues}
    assert found == {
        ("a.csv", "is missing (table a, declared at $.interface.tables[0])"),
        ("p.json", "is missing (parameter p, declared at $.interface.parameters[0], has no default)"),
        ("bad.json", "is not valid JSON"),
    }


def test_parameters_take_value_file_or_default_and_whole_numbers_stay_integers() -> None:
    i = declared(
        [],
        [
            {"name": "a", "value": 3.5},
            {"name": "b", "file": "p.json", "key": "deep.n", "type": "int64"},
            {"name": "c", "file": "p.json", "key": "absent", "default": 7, "type": "uint64"},
            {"name": "d", "file": "p.json", "key": "rate", "min": 0, "max": 1},
        ],
    )
    assets = load_assets(i, files({"p.json": json.dumps({"deep": {"n": 12}, "rate": 0.25})}))
    assert assets.parameters == (3.5, 12, 7, 0.25)
    assert [type(p) for p in assets.parameters] == [float, int, int, float]


def test_parameter_values_out_of_range_or_not_whole_are_refused_where_they_are() -> None:
    i = declared(
        [],
        [
            {"name": "a", "file": "p.json", "key": "n", "type": "int64"},
            {"name": "b", "file": "p.json", "key": "neg", "type": "uint64"},
            {"name": "c", "file": "p.json", "key": "rate", "max": 1},
            {"name": "d", "file": "p.json", "key": "text"},
            {"name": "e", "value": -1, "min": 0},
        ],
    )
    issues = asset_issues(i, files({"p.json": json.dumps({"n": 2.5, "neg": -3, "rate": 1.5, "text": "x"})}))
    assert [(x.where, x.message) for x in issues] == [
        ("p.json:$.n", "must be a whole number in int64 (parameter a), got 2.5"),
        ("p.json:$.neg", "must be a whole number in uint64 (parameter b), got -3"),
        ("p.json:$.rate", "must be ≤ 1 (parameter c), got 1.5"),
        ("p.json:$.text", "must be a finite number (parameter d), got 'x'"),
        ("$.interface.parameters[4].value", "must be ≥ 0 (parameter e), got -1"),
    ]


def test_bounds_travel_as_dotted_keys() -> None:
    bounds = {("mortality", "age", "first"): 18.0, ("curve", "year", "size"): 151.0}
    assert bounds_json(bounds) == {"curve.year.size": 151.0, "mortality.age.first": 18.0}
    assert bounds_from_json(bounds_json(bounds)) == bounds
    with pytest.raises(ValueError, match=r"TABLE\.AXIS"):
        bounds_from_json({"mortality.age": 1.0})
