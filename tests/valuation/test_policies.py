"""The policy record's rules: one definition for the engine's inputs and the data service's validation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pytest

from services.common.errors import LivecalcError
from services.engine.assumption_assets import lifelib_sample_assumptions
from services.valuation.errors import ModelInputError
from services.valuation.policies import Policies
from services.valuation.policy_schema import MIN_DURATION_MTH, check_rows, coerce, duplicate_rows

GOOD = {
    "policy_id": [10, 11, 12],
    "age_at_entry": [30, 45, 60],
    "sex": ["M", "f", "F"],
    "policy_term": [10, 20, 5],
    "sum_assured": [1e5, 2e5, 3e5],
}


def test_policies_from_columns_with_defaults() -> None:
    p = Policies.from_columns(GOOD)
    assert len(p) == 3
    assert p.female.tolist() == [0, 1, 1]
    assert p.policy_count.tolist() == [1.0, 1.0, 1.0]
    assert p.duration_mth.tolist() == [0, 0, 0]
    assert np.isnan(p.premium_pp).all() and p.computes_premium.all()
    assert (p.policy_id.dtype, p.age_at_entry.dtype, p.female.dtype) == (
        np.dtype("int64"),
        np.dtype("int32"),
        np.dtype("int8"),
    )
    with pytest.raises(ValueError, match="read-only"):
        p.sum_assured[0] = 1.0


def test_policies_from_a_pyarrow_table() -> None:
    table = pa.table(
        {**GOOD, "duration_mth": [0, 13, 0], "premium_pp": pa.array([None, 12.5, -1.0]), "policy_count": [2.0, 1, 0]}
    )
    p = Policies.from_columns(table)
    assert p.duration_mth.tolist() == [0, 13, 0]
    assert p.computes_premium.tolist() == [True, False, True]
    assert p.policy_count.tolist() == [2.0, 1.0, 0.0]


def test_policy_errors_name_every_broken_row() -> None:
    bad = {
        "policy_id": [1, 2, 2, 4, 5, 6, 7],
        "age_at_entry": [30, 121, 40, 50.5, 100, 30, 30],
        "sex": ["M", "F", "X", "M", "F", "M", "M"],
        "policy_term": [10, 1, 5, 5, 22, 0, 10],
        "sum_assured": [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0],
        "duration_mth": [0, 0, 0, 0, 0, 0, 121],
        "premium_pp": [np.nan, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan],
    }
    with pytest.raises(ModelInputError) as info:
        Policies.from_columns(bad)
    found = {(v.row, v.column) for v in info.value.violations}
    assert found == {
        (1, "age_at_entry"),  # 121 > 120
        (1, "policy_term"),  # 121 + 1 > 121
        (2, "policy_id"),  # duplicate
        (2, "sex"),
        (3, "age_at_entry"),  # not whole
        (4, "policy_term"),  # 100 + 22 > 121
        (5, "policy_term"),  # < 1
        (6, "sum_assured"),
        (6, "duration_mth"),  # 121 > 12·term
        (6, "premium_pp"),  # in force without a premium
    }
    assert "row 2: sex: must be 'M' or 'F' (got 'X')" in str(info.value)


def test_missing_columns_are_named() -> None:
    with pytest.raises(ModelInputError, match="sum_assured: required column is missing"):
        Policies.from_columns({k: v for k, v in GOOD.items() if k != "sum_assured"})


def test_a_model_input_error_is_invalid_argument_in_the_error_tree() -> None:
    with pytest.raises(ModelInputError) as info:
        Policies.from_columns({**GOOD, "age_at_entry": [30, 45, -1]})
    assert isinstance(info.value, LivecalcError)
    assert info.value.code.name == "INVALID_ARGUMENT"
    assert [(v.row, v.column, v.rule) for v in info.value.violations] == [(2, "age_at_entry", "range")]


def test_empty_optional_cells_take_their_defaults_as_validation_allows() -> None:
    """Was drift: ValidateDataset accepted an empty policy_count, the engine refused it."""
    table = pa.table(
        {
            **GOOD,
            "policy_count": pa.array([None, 2.0, None]),
            "duration_mth": pa.array([None, 0, 3]),
            "premium_pp": pa.array([None, None, 10.0]),
        }
    )
    assert not check_rows(table).breaks
    p = Policies.from_columns(table)
    assert p.policy_count.tolist() == [1.0, 2.0, 1.0]
    assert p.duration_mth.tolist() == [0, 0, 3]


def test_integer_ids_from_text_stay_exact_beyond_2_pow_53() -> None:
    big = 2**62 + 1
    cells = coerce(pa.array([str(big), "7", "", "x", str(2**64)]), "int64")
    assert cells.values[:2].tolist() == [big, 7]
    assert cells.missing.tolist() == [False, False, True, False, False]
    assert cells.bad.tolist() == [False, False, False, True, True]
    p = Policies.from_columns({**GOOD, "policy_id": pa.array([str(big), "2", "3"])})
    assert int(p.policy_id[0]) == big


def test_duplicates_flag_later_rows_only_among_valid_ids() -> None:
    ids = np.array([5, 3, 5, 3, 0, 5])
    valid = np.array([True, True, True, True, False, True])
    assert duplicate_rows(ids, valid).tolist() == [False, False, True, True, False, True]


def test_rows_are_judged_with_rule_names_and_messages_validation_reports() -> None:
    table = pa.table(
        {
            "policy_id": [1, 2, 3],
            "age_at_entry": pa.array(["30", "abc", ""]),
            "sex": ["M", "Q", "F"],
            "policy_term": [10, 10, 10],
            "sum_assured": [1.0, -1.0, 1.0],
        }
    )
    check = check_rows(table)
    got = {(b.rule, b.column, tuple(np.flatnonzero(b.rows).tolist()), b.message) for b in check.breaks}
    assert got == {
        ("type", "age_at_entry", (1,), "must be int"),
        ("required", "age_at_entry", (2,), "is required"),
        ("enum", "sex", (1,), "must be 'M' or 'F'"),
        ("range", "sum_assured", (1,), "must be finite and > 0"),
    }


def test_future_new_business_and_policies_maturing_at_t0_are_accepted() -> None:
    """As lifelib's BasicTerm_ME: duration_mth < 0 is issued at t = −duration_mth (its premium
    may be computed, as for new business); duration_mth = 12·policy_term matures at t = 0."""
    rows = {**GOOD, "duration_mth": [-15, 240, MIN_DURATION_MTH], "premium_pp": [np.nan, 30.0, -1.0]}
    assert not check_rows(pa.table({**rows, "premium_pp": pa.array([None, 30.0, -1.0])})).breaks
    p = Policies.from_columns(rows)
    assert p.duration_mth.tolist() == [-15, 240, MIN_DURATION_MTH]
    assert p.computes_premium.tolist() == [True, False, True]
    assert p.projection_months.tolist() == [135, 0, 60 - MIN_DURATION_MTH]
    assert MIN_DURATION_MTH == -1452


def test_durations_out_of_range_and_a_matured_row_without_premium_are_refused() -> None:
    bad = {**GOOD, "duration_mth": [121, MIN_DURATION_MTH - 1, 60], "premium_pp": [10.0, 10.0, np.nan]}
    with pytest.raises(ModelInputError) as info:
        Policies.from_columns(bad)
    got = {(v.row, v.column, v.rule) for v in info.value.violations}
    assert got == {(0, "duration_mth", "range"), (1, "duration_mth", "range"), (2, "premium_pp", "premium_required")}
    text = str(info.value)
    assert "row 0: duration_mth: must be ≤ 12·policy_term (got 121)" in text
    assert f"row 1: duration_mth: must be ≥ {MIN_DURATION_MTH} (got {MIN_DURATION_MTH - 1})" in text
    assert "row 2: premium_pp: is required when duration_mth > 0" in text
    # beyond int32: refused, never wrapped
    with pytest.raises(ModelInputError, match="duration_mth: must be ≥"):
        Policies.from_columns({**GOOD, "duration_mth": [0, -(2**40), 0]})


def test_tables_cover_future_new_business_from_its_issue() -> None:
    """Ages age_at_entry … age_at_entry + term − 1 and curve years 0 … ⌊(12·term − duration_mth − 1)/12⌋."""
    a = lifelib_sample_assumptions()
    ok = Policies.from_columns(
        {**GOOD, "age_at_entry": [18, 45, 60], "duration_mth": [-30, 240, -12], "premium_pp": [1.0, 1.0, 1.0]}
    )
    a.check_covers(ok)  # age 18 issued at t = 30: ages from 18, not 18 + ⌊−30/12⌋ = 15
    short = dataclasses.replace(a, curve=a.curve[:5])
    five = {**GOOD, "policy_term": [5, 5, 5], "premium_pp": [1.0, 1.0, 1.0]}
    short.check_covers(Policies.from_columns({**five, "duration_mth": [0, 60, 30]}))
    with pytest.raises(ModelInputError) as info:
        short.check_covers(Policies.from_columns({**five, "duration_mth": [-1, -12, 0]}))
    assert [(v.row, v.column) for v in info.value.violations] == [(0, "duration_mth"), (1, "duration_mth")]
    assert "row 1: duration_mth: issued too late for the discount curve (5 years; needs year 5)" in str(info.value)
    with pytest.raises(ModelInputError, match="row 0: age_at_entry: attained ages below the mortality table's 18"):
        a.check_covers(Policies.from_columns({**GOOD, "age_at_entry": [17, 45, 60], "duration_mth": [-30, 0, 0]}))
