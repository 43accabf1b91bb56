"""Policy records judged by a declaration: coercion, every rule by name, the typed layout."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from services.valuation.errors import ModelInputError
from services.valuation.interface.declaration import ModelInterface
from services.valuation.interface.parser import parse_interface
from services.valuation.interface.records import (
    Records,
    check_rows,
    coerce_category,
    resolve_bounds,
    rule_bounds,
    term_life_rules,
)

SAVINGS: dict[str, Any] = {
    "abi": 2,
    "policy": {
        "key": "contract_id",
        "columns": [
            {"name": "contract_id", "type": "int64", "required": True},
            {
                "name": "product",
                "type": "category",
                "values": ["unit_linked", "with_profits", "annuity"],
                "required": True,
            },
            {"name": "age", "type": "int32", "required": True, "min": 18, "max": 99},
            {"name": "term", "type": "int32", "required": True, "min": 1},
            {"name": "elapsed", "type": "int32", "default": 0},
            {"name": "fund", "type": "float64", "required": True, "min": 0},
            {"name": "guarantee", "type": "float64", "min": 0},
            {"name": "channel", "type": "category", "values": ["direct", "broker"], "default": "direct"},
        ],
        "rules": [
            {
                "rule": "guarantee_cap",
                "column": "guarantee",
                "when": "product == 1",
                "check": "guarantee <= fund",
                "message": "must be ≤ fund for with-profits",
            },
            {
                "rule": "coverage",
                "column": "age",
                "check": "age + term <= rates.year.last + 1",
                "message": "plus term must stay within the rate table",
            },
        ],
        "horizon_months": "12 * term - elapsed",
    },
    "tables": [{"name": "rates", "file": "assumptions/rates.csv", "axes": [{"name": "year", "first": 0}]}],
    "outputs": [{"name": "pv", "primary": True}],
}
BOUNDS = {("rates", "year", "last"): 80.0}


def savings() -> ModelInterface:
    interface, issues = parse_interface(SAVINGS)
    assert interface is not None, issues
    return interface


def table(**columns: list[Any]) -> pa.Table:
    return pa.table({name: pa.array(values) for name, values in columns.items()})


GOOD: dict[str, list[Any]] = {
    "contract_id": [1, 2, 3],
    "product": ["Unit_Linked ", "with_profits", "ANNUITY"],
    "age": [30, 40, 50],
    "term": [10, 20, 5],
    "elapsed": [0, 24, None],
    "fund": [1000.0, 2000.0, 0.0],
    "guarantee": [None, 1500.0, 99.0],
}


def test_a_valid_table_is_laid_out_in_declaration_order_with_defaults() -> None:
    records = Records.from_table(table(**GOOD), savings(), BOUNDS)
    assert list(records.columns) == [c.name for c in savings().columns]
    dtypes = {name: str(a.dtype) for name, a in records.columns.items()}
    assert dtypes == {
        "contract_id": "int64",
        "product": "int32",
        "age": "int32",
        "term": "int32",
        "elapsed": "int32",
        "fund": "float64",
        "guarantee": "float64",
        "channel": "int32",
    }
    assert records.columns["product"].tolist() == [0, 1, 2]  # trimmed, any case
    assert records.columns["elapsed"].tolist() == [0, 24, 0]  # the default of an empty cell
    assert records.columns["channel"].tolist() == [0, 0, 0]  # an absent column: its default code
    assert np.isnan(records.columns["guarantee"][0])  # optional float64 without a default: NaN
    assert records.horizons.tolist() == [120, 216, 60] and records.horizon_months == 216
    assert records.n_rows == len(records) == 3
    assert not records.columns["age"].flags.writeable and not records.horizons.flags.writeable
    sample = records.take([2, 0])
    assert sample.columns["contract_id"].tolist() == [3, 1] and sample.horizons.tolist() == [60, 120]
    assert records.take(slice(1, 3)).horizon_months == 216
    assert records.take([]).horizon_months == 0


def test_category_cells_are_texts_or_codes() -> None:
    values = ("M", "F")
    coerced = coerce_category(pa.array([" m", "F", "f ", "1", "0", "X", "", None, "2"]), values)
    assert coerced.values[:5].tolist() == [0, 1, 1, 1, 0]
    assert coerced.bad.tolist() == [False] * 5 + [True, False, False, True]
    assert coerced.missing.tolist() == [False] * 6 + [True, True, False]
    codes = coerce_category(pa.array([0, 1, 2, None, -1]), values)
    assert codes.values.tolist()[:2] == [0, 1] and codes.bad.tolist() == [False, False, True, False, True]
    floats = coerce_category(pa.array([1.0, 0.5, np.nan]), values)
    assert floats.bad.tolist() == [False, True, True]
    flags = coerce_category(pa.array([True, False]), values)
    assert flags.values.tolist() == [1, 0] and not flags.bad.any()


def test_every_broken_rule_is_reported_by_name_with_the_cell() -> None:
    rows = table(
        contract_id=["1", "2", "3", "4", "5", "6", "7", "2", "9", "10"],
        product=[
            "unit_linked",
            "bank",
            "with_profits",
            "unit_linked",
            "unit_linked",
            "5",
            "annuity",
            "annuity",
            "annuity",
            "annuity",
        ],
        age=["30", "30", "30", "17", "thirty", "30", "75", "30", "", "4000000000"],
        term=["10", "10", "10", "10", "10", "10", "10", "10", "10", "10"],
        elapsed=["0", "0", "0", "0", "0", "0", "0", "0", "200", "0"],
        fund=["100", "100", "100", "100", "100", "inf", "100", "100", "100", "100"],
        guarantee=["", "", "150", "", "", "", "", "-1", "", ""],
    )
    with pytest.raises(ModelInputError) as info:
        Records.from_table(rows, savings(), BOUNDS, row_of=lambda r: 1000 + r)
    found = [(v.row, v.column, v.rule, v.message) for v in info.value.violations]
    assert found == [
        (1001, "product", "enum", "must be one of 'unit_linked', 'with_profits', 'annuity' (got 'bank')"),
        (1002, "guarantee", "guarantee_cap", "must be ≤ fund for with-profits"),
        (1003, "age", "range", "must be ≥ 18 and ≤ 99 (got '17')"),
        (1004, "age", "type", "must be int (got 'thirty')"),
        (1005, "fund", "range", "must be finite and ≥ 0 (got 'inf')"),
        (1005, "product", "enum", "must be one of 'unit_linked', 'with_profits', 'annuity' (got '5')"),
        (1006, "age", "coverage", "plus term must stay within the rate table"),
        (1007, "contract_id", "duplicate_contract_id", "repeats an earlier row"),
        (1007, "guarantee", "range", "must be finite and ≥ 0 (got '-1')"),
        (1008, "age", "required", "is required"),
        (1008, "horizon_months", "horizon", "(12 * term - elapsed) must be ≥ 0"),
        (1009, "age", "type", "must be a 32-bit integer (got '4000000000')"),
    ]


def test_a_rule_judges_only_cells_present_and_of_their_type() -> None:
    rows = table(
        contract_id=[1, 2, 3],
        product=["with_profits", "bank", "with_profits"],
        age=[30, 30, 30],
        term=[10, 10, 10],
        fund=[100.0, 100.0, float("nan")],
        guarantee=[None, 500.0, 500.0],
    )
    check = check_rows(rows, savings(), BOUNDS)
    by_rule = {(b.rule, b.column): b.rows.tolist() for b in check.breaks}
    # row 0: no guarantee (NaN) for a with-profits contract: NaN ≤ fund is false, so the rule breaks;
    # row 1: the product is not a category value, so guarantee_cap does not judge it;
    # row 2: the fund is NaN, reported once by its range, not again by the rule
    assert by_rule == {
        ("guarantee_cap", "guarantee"): [True, False, False],
        ("enum", "product"): [False, True, False],
        ("range", "fund"): [False, False, True],
    }


def test_a_missing_required_column_is_reported_alone() -> None:
    columns = {k: v for k, v in GOOD.items() if k not in ("fund", "age")}
    with pytest.raises(ModelInputError) as info:
        Records.from_table(table(**columns), savings(), BOUNDS)
    assert [(v.column, v.rule, v.row) for v in info.value.violations] == [
        ("age", "required", None),
        ("fund", "required", None),
    ]
    check = check_rows(table(**columns), savings(), BOUNDS)
    assert check.missing_columns == ("age", "fund")


def test_bounds_the_rules_read_must_be_given_unless_declared() -> None:
    assert rule_bounds(savings()) == {("rates", "year", "last")}
    with pytest.raises(ValueError, match=r"rates\.year\.last"):
        resolve_bounds(savings(), {("rates", "year", "first"): 0.0})
    assert resolve_bounds(savings(), {**BOUNDS, ("other", "x", "size"): 3.0}) == BOUNDS


def test_term_life_keeps_its_rule_names_and_messages() -> None:
    interface, bounds = term_life_rules()
    rows = table(
        policy_id=[1, 2, 3, 1],
        age_at_entry=[30, 121, 30, 10],
        sex=["M", "F", "X", "m"],
        policy_term=[10, 1, 10, 10],
        sum_assured=[1e5, 1e5, 0.0, 1e5],
        duration_mth=[0, 0, 12, 0],
        premium_pp=[None, None, None, None],
    )
    with pytest.raises(ModelInputError) as info:
        Records.from_table(rows, interface, bounds)
    found = {(v.row, v.column, v.rule) for v in info.value.violations}
    assert {row for row, _, _ in found} == {1, 2, 3}
    assert found >= {
        (1, "age_at_entry", "range"),
        (1, "policy_term", "range"),  # age + term > 121
        (2, "sex", "enum"),
        (2, "sum_assured", "range"),
        (2, "premium_pp", "premium_required"),
        (3, "policy_id", "duplicate_policy_id"),
        (3, "age_at_entry", "coverage"),  # below the mortality table's first age
    }
    messages = {v.column: v.message for v in info.value.violations if v.row == 2}
    assert messages["sex"] == "must be 'M' or 'F' (got 'X')"
    assert messages["premium_pp"].startswith("is required when duration_mth > 0")
    good = Records.from_table(rows.slice(0, 1), interface, bounds)
    assert good.columns["sex"].tolist() == [0] and good.columns["policy_count"].tolist() == [1.0]
    assert good.horizon_months == 120


def test_int64_values_stay_exact_beyond_float_precision() -> None:
    big = 2**62 + 1
    declared, _ = parse_interface(
        {
            "abi": 2,
            "policy": {
                "key": "k",
                "columns": [
                    {"name": "k", "type": "int64", "required": True},
                    {"name": "o", "type": "int64", "default": 5},
                ],
                "horizon_months": "1",
            },
            "outputs": [{"name": "pv", "primary": True}],
        }
    )
    assert declared is not None
    records = Records.from_table(table(k=[big, 3], o=[big + 2, None]), declared, {})
    assert records.columns["k"].tolist() == [big, 3] and records.columns["o"].tolist() == [big + 2, 5]
    text = Records.from_table(table(k=[str(big), "3"]), declared, {})
    assert text.columns["k"].tolist() == [big, 3]
