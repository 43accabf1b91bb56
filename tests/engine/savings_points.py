"""Generated savings model points in lifelib CashValue_ME's own format (a model point table and a
product table keyed by spec_id), and the savings runs the tests make of them.

Six products: lifelib's A–D (SINGLE/LEVEL, with and without a surrender charge, term and whole
life) and two more (E: LEVEL term with charge type_2; F: SINGLE whole life with type_3); ages,
terms, sums assured and premiums spread; about 45 % in force (duration_mth up to the term, with an
account value), the rest new business; a few with no premium or no policies; row 0 matures at
t = 0 and row 1 in its first month.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd  # type: ignore[import-untyped]
import pyarrow as pa

from services.engine.pipeline import PipelineRunner
from services.engine.reference_savings import savings_inputs
from services.engine.savings_assets import model_point_rows
from services.valuation.arrays import F64
from services.valuation.blocks import BLOCK_SIZE
from services.valuation.packages.reference import SAVINGS_PIPELINE

LAST_AGE = 115
"""ω of the shipped mortality table (lifelib's mort_table_last_age)."""

PRODUCTS = pd.DataFrame(
    {
        "premium_type": ["SINGLE", "SINGLE", "LEVEL", "LEVEL", "LEVEL", "SINGLE"],
        "has_surr_charge": [False, True, False, True, True, True],
        "surr_charge_id": [np.nan, "type_1", np.nan, "type_3", "type_2", "type_3"],
        "load_prem_rate": [0.10, 0.0, 0.10, 0.05, 0.03, 0.02],
        "is_wl": [False, False, True, True, False, True],
    },
    index=pd.Index(list("ABCDEF"), name="spec_id"),
)


def generated_model_points(n: int, seed: int) -> Any:
    """``n`` model points (index point_id 1 … n, CashValue_ME's columns) of the six `PRODUCTS`."""
    rng = np.random.default_rng(seed)
    spec = rng.choice(np.array(PRODUCTS.index), n)
    whole_life = PRODUCTS.loc[spec, "is_wl"].to_numpy(dtype=bool)
    single = (PRODUCTS.loc[spec, "premium_type"] == "SINGLE").to_numpy()
    age = np.where(whole_life, rng.integers(45, 86, n), rng.integers(20, 71, n))
    term = np.where(whole_life, 9999, np.minimum(rng.integers(5, 26, n), LAST_AGE + 1 - age))  # WL: lifelib's 9999
    years = np.where(whole_life, LAST_AGE - age, term)
    in_force = rng.random(n) < 0.45
    duration = np.where(in_force, rng.integers(1, 12 * years + 1), 0)
    duration[0], duration[1] = 12 * years[0], 12 * years[1] - 1
    sum_assured = np.round(rng.uniform(1e4, 1e6, n), -3)
    level = sum_assured / (12 * np.minimum(years, 40)) * rng.uniform(0.5, 1.5, n)
    premium = np.where(single, np.round(sum_assured * rng.uniform(0.3, 1.2, n), -2), np.round(level))
    premium[rng.random(n) < 0.03] = 0.0
    paid_in = np.where(single, premium * rng.uniform(0.8, 1.4, n), premium * duration * rng.uniform(0.4, 1.0, n))
    count = rng.integers(1, 101, n).astype(np.float64)
    count[rng.random(n) < 0.03] = 0.0
    return pd.DataFrame(
        {
            "spec_id": spec,
            "age_at_entry": age,
            "sex": "M",
            "policy_term": term,
            "policy_count": count,
            "sum_assured": sum_assured,
            "duration_mth": duration,
            "premium_pp": premium,
            "av_pp_init": np.where(duration > 0, np.round(paid_in, 2), 0.0),
            "accum_prem_init_pp": 0.0,
        },
        index=pd.Index(np.arange(1, n + 1), name="point_id"),
    )


def generated_rows(n: int, seed: int) -> pa.Table:
    """`generated_model_points` joined with `PRODUCTS`: rows of the savings declaration."""
    return model_point_rows(generated_model_points(n, seed), PRODUCTS)


def draws(scenarios: int, months: int, seed: int) -> F64:
    """Standard normal draws Z [scenario][month]."""
    z: F64 = np.random.default_rng(seed).standard_normal((scenarios, months))
    return z


def pipeline(projection: str = "wasm", generator: str = "wasm") -> list[dict[str, Any]]:
    """The savings package's pipeline (normals → savings) with the nodes' schemes chosen."""
    nodes = [dict(node) for node in SAVINGS_PIPELINE]
    nodes[0]["engine"] = f"{generator}://normals"
    nodes[1]["engine"] = f"{projection}://savings"
    return nodes


def padded(rows: pa.Table) -> pa.Table:
    """Each row alone in a block: row i at 1024·i, followed by 1023 rows worth exactly nothing (no
    policies, maturing at t = 0 with no account value). Block i's partial, +0.0 + v_i + 0 + … + 0,
    is then row i's value exactly."""
    n = rows.num_rows
    at = np.arange(n) * BLOCK_SIZE
    filler: dict[str, Any] = {
        "policy_id": np.arange(n * BLOCK_SIZE, dtype=np.int64) + 10**12,
        "age_at_entry": 30,
        "policy_term": 1,
        "policy_count": 0.0,
        "sum_assured": 0.0,
        "duration_mth": 12,
        "premium_pp": 0.0,
        "av_pp_init": 0.0,
        "premium_type": "SINGLE",
        "has_surr_charge": "false",
        "surr_charge_id": "none",
        "load_prem_rate": 0.0,
        "is_wl": "false",
    }
    columns = {}
    for name, value in filler.items():
        given = rows.column(name).to_numpy(zero_copy_only=False)
        if isinstance(value, np.ndarray):
            column = value.copy()
        else:
            column = np.full(n * BLOCK_SIZE, value, dtype=object if isinstance(value, str) else given.dtype)
        column[at] = given
        columns[name] = column
    return pa.table(columns)


def per_policy(runner: PipelineRunner, rows: pa.Table, std_norm: F64, projection: str = "wasm") -> F64:
    """Each row's nine values under each scenario, [output][row][scenario], read exactly from the
    block partials of one run of `padded` rows."""
    result = runner.run(pipeline(projection), savings_inputs(padded(rows), std_norm))
    values: F64 = np.ascontiguousarray(result.partials.transpose(1, 0, 2))
    return values
