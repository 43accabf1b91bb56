"""term_life's two lane layouts compute the same bits: with fewer than 11 scenarios the kernel puts
policies in its SIMD lanes (the policy layout), with more it puts scenarios there (the scenario
layout). Scenario s's block partials depend only on scenario s's rates, so a run of the first N
scenarios (policy layout) must equal the first N of a 17-scenario run (scenario layout), and the
frozen build from before the policy layout, bit for bit; and the numpy twin to its tolerance.
The datasets hold what makes a lane's schedule its own: future new business (duration_mth < 0,
premiums computed), rows that mature at t = 0, in-force rows at every month of the policy year,
a partial last block, and lapse rates that make dynamic lapse clamp in some policy years only."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np
import pytest

from services.engine.bench_term_life import scenario_layout_wasm, term_life_once
from services.engine.model_points import synthetic_policies
from services.engine.pipeline import RunInputs, reference_partials
from services.engine.reference_inputs import term_life_inputs
from services.engine.runtime import Runtime
from services.engine.workers import WasmPool
from services.valuation.arrays import F64
from services.valuation.assumptions import Assumptions
from services.valuation.blocks import same_bits
from services.valuation.policies import Policies
from services.valuation.reference_model import shipped_models
from services.valuation.scenarios import ScenarioParams
from tests.engine.wasm_helpers import stochastic_assumptions

MANY = 17
"""Scenarios of the reference run: the scenario layout (two groups of 16 lanes, the second partial)."""
RTOL = 1e-9


def lane_policies(rows: int, seed: int) -> Policies:
    """Synthetic policies with future new business (~20 %, issued up to 5 years on) and rows that
    mature at t = 0 (~3 %, with a premium) among in-force rows at any duration."""
    base = synthetic_policies(rows, seed, in_force=0.5)
    rng = np.random.default_rng(seed + 1)
    dur = base.duration_mth.copy()
    premium = base.premium_pp.copy()
    future = rng.random(rows) < 0.2
    dur[future] = -rng.integers(1, 61, int(future.sum()))
    premium[future] = np.nan
    matured = ~future & (rng.random(rows) < 0.03)
    dur[matured] = 12 * base.policy_term[matured]
    premium[matured] = 100.0
    return dataclasses.replace(base, duration_mth=dur.astype(np.int32), premium_pp=premium)


def lane_assumptions() -> Assumptions:
    """Dynamic lapse on, with a lapse rate of 99.95 % in every third policy year: there
    l_base·hi > 1 and the kernel clamps lb·dl at 1, elsewhere not."""
    assumptions = stochastic_assumptions()
    lapse = np.array(assumptions.lapse, dtype=np.float64)
    lapse[1::3] = 0.9995
    return dataclasses.replace(assumptions, lapse=lapse, dyn_lapse_hi=3.0)


def run_inputs(rows: int, seed: int, scenarios: int) -> RunInputs:
    return term_life_inputs(lane_policies(rows, seed), lane_assumptions(), ScenarioParams(count=scenarios, seed=seed))


def rates_for(inputs: RunInputs, seed: int) -> F64:
    """MANY scenarios of monthly short rates f64 [MANY][months] (wide enough for dl to hit both bounds)."""
    rng = np.random.default_rng(seed)
    return np.ascontiguousarray(rng.normal(0.03, 0.03, (MANY, inputs.records.horizon_months)))


@pytest.fixture(scope="module")
def pool() -> Iterator[WasmPool]:
    with WasmPool(Runtime(), threads=2) as p:
        yield p


def partials(pool: WasmPool, wasm: bytes, inputs: RunInputs, rates: F64) -> F64:
    with pool.lease() as lease:
        lease.load("term_life", wasm)
        return term_life_once(lease, inputs, np.ascontiguousarray(rates))()


@pytest.mark.parametrize(("rows", "seed"), [(2500, 3), (700, 8), (3 * 1024, 21)])
def test_policy_layout_has_the_scenario_layouts_bits(pool: WasmPool, rows: int, seed: int) -> None:
    many = run_inputs(rows, seed, MANY)
    rates = rates_for(many, seed)
    reference = partials(pool, shipped_models()["term_life"], many, rates)
    assert reference.shape == (-(-rows // 1024), 5, MANY)
    for n in (1, 3, 7, 10, 11, 12):  # 10: the policy layout's last count, 11: the scenario layout's first
        few = run_inputs(rows, seed, n)
        got = partials(pool, shipped_models()["term_life"], few, rates[:n])
        assert same_bits(got, reference[:, :, :n]), f"{n} scenarios"


@pytest.mark.parametrize("n", [1, 3])
def test_policy_layout_has_the_bits_of_the_build_before_it(pool: WasmPool, n: int) -> None:
    """The frozen scenario-layout build (commit 565c739, before the policy layout and the lanes of
    computed premiums) values the same inputs to the same bits."""
    few = run_inputs(2500, 5, n)
    rates = rates_for(few, 5)[:n]
    now = partials(pool, shipped_models()["term_life"], few, rates)
    before = partials(pool, scenario_layout_wasm(), few, rates)
    assert same_bits(now, before)


def test_the_clamp_binds_in_some_years_only() -> None:
    """The datasets exercise both factors: some policy years have l_base·hi > 1, most do not."""
    assumptions = lane_assumptions()
    bound = (1.0 - (1.0 - np.asarray(assumptions.lapse)) ** (1.0 / 12.0)) * assumptions.dyn_lapse_hi > 1.0
    assert bound.any() and not bound.all()


def test_policy_layout_agrees_with_the_numpy_twin(pool: WasmPool) -> None:
    few = run_inputs(2500, 3, 1)
    rates = rates_for(few, 3)[:1]
    got = partials(pool, shipped_models()["term_life"], few, rates)
    expected = reference_partials(few, rates)
    scale = np.abs(expected).max(axis=0, keepdims=True)
    assert (np.abs(got - expected) <= RTOL * scale).all()


def premium_key_policies(rows: int, seed: int) -> Policies:
    """New business whose premiums are computed, on few mortality rows (sex, age at entry), so
    that many rows share one: terms from 1 to 25 years (each a different stopping point on the
    shared schedule, several in one five-year stretch), sums assured drawn from a few values (rows
    equal but for their term, sex or issue month), issue months now and up to 5 years on; a few
    keys with one row, some with hundreds (more than a group of lanes, and odd counts), rows with
    a premium given and in-force rows among them."""
    base = synthetic_policies(rows, seed, in_force=0.0)
    rng = np.random.default_rng(seed + 2)
    age = rng.choice(np.array([30, 31, 45], dtype=np.int32), rows)
    female = rng.integers(0, 2, rows).astype(np.int8)
    term = rng.choice(np.array([1, 3, 5, 10, 15, 20, 25], dtype=np.int32), rows)
    sa = rng.choice(np.array([50_000.0, 100_000.0, 123_456.0, 1_000_000.0]), rows)
    dur = -rng.choice(np.array([0, 0, 0, 1, 5, 12, 13, 60]), rows).astype(np.int32)
    lone = rng.choice(rows, 6, replace=False)  # keys of one row: ages no other row has
    age[lone] = np.arange(50, 56, dtype=np.int32)
    premium = np.full(rows, np.nan)
    given = rng.random(rows) < 0.05
    premium[given] = 80.0
    in_force = ~given & (rng.random(rows) < 0.05)
    dur[in_force] = rng.integers(1, 12, int(in_force.sum()))
    premium[in_force] = 90.0
    return dataclasses.replace(
        base, age_at_entry=age, female=female, policy_term=term, sum_assured=sa, duration_mth=dur, premium_pp=premium
    )


@pytest.mark.parametrize(("rows", "seed"), [(2500, 4), (300, 9)])
def test_shared_premium_schedules_have_the_bits_of_one_row_at_a_time(pool: WasmPool, rows: int, seed: int) -> None:
    """Computed premiums project one schedule per mortality row (sex, age at entry) of a block and
    value each row's claims on it: the frozen build, which projected every row alone, gives the
    same bits, in both layouts (the premiums are the same code in each)."""
    policies = premium_key_policies(rows, seed)
    assumptions = lane_assumptions()
    rng = np.random.default_rng(seed)
    for n in (1, 3, MANY):
        few = term_life_inputs(policies, assumptions, ScenarioParams(count=n, seed=seed))
        rates = np.ascontiguousarray(rng.normal(0.03, 0.03, (n, few.records.horizon_months)))
        now = partials(pool, shipped_models()["term_life"], few, rates)
        before = partials(pool, scenario_layout_wasm(), few, rates)
        assert same_bits(now, before), f"{n} scenarios"


def test_premium_keys_cover_shared_and_lone_rows() -> None:
    """The dataset has what the shared schedules must get right: keys with many rows, keys with
    one, rows alike but for their sex or their issue month."""
    p = premium_key_policies(2500, 4)
    computed = np.isnan(p.premium_pp)
    keys = p.female.astype(np.int64) * 1000 + p.age_at_entry
    _, counts = np.unique(keys[computed], return_counts=True)
    assert counts.max() > 64 and (counts == 1).sum() >= 1
    rows = np.stack([p.age_at_entry, p.policy_term, p.sum_assured, p.duration_mth], axis=1)[computed]
    sexes = p.female[computed]
    same_but_sex = {tuple(r) for r, s in zip(rows, sexes, strict=True) if s == 0} & {
        tuple(r) for r, s in zip(rows, sexes, strict=True) if s == 1
    }
    assert same_but_sex
    alike: dict[tuple[int, ...], set[int]] = {}
    for r in rows:
        alike.setdefault(tuple(r[:3]), set()).add(int(r[3]))
    assert any(len(issues) > 1 for issues in alike.values())  # rows alike but for the issue month
