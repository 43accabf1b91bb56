"""Numpy reference implementations of the shipped model's nodes: ``python://esg``, ``python://normals``
and ``python://term_life``.

They follow docs/model.md formula by formula and serve as the cross-check of the ``wasm://`` nodes
(agreement to 1e-9 relative, not bitwise: libm differs) and, with one base scenario and
lifelib's sample assumptions, reproduce lifelib basiclife BasicTerm_S.

Vectorization: the scenario generator loops over months, vectorized over scenarios; the
projection loops over months, vectorized over policies × scenarios (policies are processed in
groups to bound memory). Sums over months run in month order, as lifelib's do.

Also here: per-block partials in the reference summation order (``block_partials``); their
fold is ``services.valuation.blocks.fold``, which every engine must reproduce bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from services.valuation.arrays import F64
from services.valuation.assumptions import Assumptions
from services.valuation.blocks import BLOCK_SIZE, fold
from services.valuation.errors import ModelInputError, Violation
from services.valuation.interface.declaration import TERM_LIFE_CASH_FLOWS
from services.valuation.policies import Policies
from services.valuation.scenarios import ScenarioParams

U64 = npt.NDArray[np.uint64]

"""B: policies per block in the reference summation order (docs/model.md "Aggregation")."""

_GOLDEN: Final = np.uint64(0x9E3779B97F4A7C15)
_MIX_M1: Final = np.uint64(0xBF58476D1CE4E5B9)
_MIX_M2: Final = np.uint64(0x94D049BB133111EB)
_LOW32: Final = np.uint64(0xFFFFFFFF)
_TWO_POW_M53: Final = 2.0**-53

_MAX_CELLS_PER_GROUP: Final = 1 << 20
"""Policies × scenarios projected at once (bounds the memory of one group to a few MiB per array)."""


# ---------------------------------------------------------------------------
# python://esg — counter-based normals and the Ornstein–Uhlenbeck shock


def mix(z: U64) -> U64:
    """SplitMix64 finalizer, mod 2^64.

    z ^= z >> 30; z *= 0xBF58476D1CE4E5B9; z ^= z >> 27; z *= 0x94D049BB133111EB; z ^= z >> 31
    """
    z = z ^ (z >> np.uint64(30))
    z = z * _MIX_M1
    z = z ^ (z >> np.uint64(27))
    z = z * _MIX_M2
    return z ^ (z >> np.uint64(31))


def random_bits(seed: int, scenarios: U64, counters: U64) -> U64:
    """bits(seed, s, k) = mix(mix(seed) ^ mix(((s mod 2^32) << 32 | (k mod 2^32)) + 0x9E3779B97F4A7C15)).

    ``scenarios`` and ``counters`` broadcast against each other.
    """
    seed_mixed = mix(np.array([seed], dtype=np.uint64))
    counter = ((scenarios & _LOW32) << np.uint64(32)) | (counters & _LOW32)
    return mix(seed_mixed ^ mix(counter + _GOLDEN))


def uniforms(seed: int, scenarios: U64, counters: U64) -> F64:
    """U(seed, s, k) = ((bits >> 11) + 0.5)·2^−53, in (0, 1)."""
    bits = random_bits(seed, scenarios, counters)
    return ((bits >> np.uint64(11)).astype(np.float64) + 0.5) * _TWO_POW_M53


def normals(seed: int, scenarios: npt.ArrayLike, count: int) -> F64:
    """Z_s(m) for m = 0 … count−1, shape (len(scenarios), count), by Box–Muller on counter pairs.

    Pair j = ⌊m/2⌋: u1 = U(seed, s, 2j), u2 = U(seed, s, 2j+1), ρ = sqrt(−2 ln u1);
    Z_s(2j) = ρ·cos(2π·u2), Z_s(2j+1) = ρ·sin(2π·u2).
    """
    s = np.asarray(scenarios, dtype=np.uint64).reshape(-1, 1)
    pairs = (count + 1) // 2
    j = np.arange(pairs, dtype=np.uint64).reshape(1, -1)
    u1 = uniforms(seed, s, np.uint64(2) * j)
    u2 = uniforms(seed, s, np.uint64(2) * j + np.uint64(1))
    rho = np.sqrt(-2.0 * np.log(u1))
    angle = 2.0 * np.pi * u2
    z = np.empty((s.shape[0], 2 * pairs), dtype=np.float64)
    z[:, 0::2] = rho * np.cos(angle)
    z[:, 1::2] = rho * np.sin(angle)
    return z[:, :count]


def ou_phi(a: float) -> float:
    """φ = exp(−a/12): the monthly autoregression of the Ornstein–Uhlenbeck shock."""
    return float(np.exp(-a / 12.0))


def ou_sigma_mth(a: float, sigma: float) -> float:
    """σ_m = σ·sqrt((1 − φ²)/(2a)): the standard deviation of one month's innovation."""
    phi = ou_phi(a)
    return float(sigma * np.sqrt((1.0 - phi * phi) / (2.0 * a)))


def scenario_indices(params: ScenarioParams, scenarios: npt.ArrayLike | None = None) -> npt.NDArray[np.int64]:
    """The scenario indices to generate: all (0 … N−1) by default, or the subset given, validated."""
    if scenarios is None:
        return np.arange(params.count, dtype=np.int64)
    idx = np.asarray(scenarios, dtype=np.int64).reshape(-1)
    bad = np.flatnonzero((idx < 0) | (idx >= params.count))
    if bad.size:
        raise ModelInputError(
            "scenario selection",
            [Violation("scenarios", f"index {int(idx[i])} is not in 0..{params.count - 1}") for i in bad],
        )
    return idx


def esg(params: ScenarioParams, months: int, scenarios: npt.ArrayLike | None = None) -> F64:
    """r_s(m), the short-rate shock of scenario s at month m, shape (len(scenarios), months).

    r_s(0) = 0; r_s(m+1) = φ·r_s(m) + σ_m·Z_s(m); with include_base, r_0 ≡ 0. A row depends only
    on (seed, a, σ, include_base, s): any subset of scenarios gives identical rows.
    """
    if months < 0:
        raise ModelInputError("scenario request", [Violation("months", f"must be ≥ 0, got {months}")])
    idx = scenario_indices(params, scenarios)
    shocks = np.zeros((idx.size, months), dtype=np.float64)
    if months < 2 or idx.size == 0:
        return shocks
    z = normals(params.seed, idx, months - 1)
    phi, sigma_m = ou_phi(params.a), ou_sigma_mth(params.a, params.sigma)
    for m in range(months - 1):
        shocks[:, m + 1] = phi * shocks[:, m] + sigma_m * z[:, m]
    if params.include_base:
        shocks[idx == 0, :] = 0.0
    return shocks


def standard_normals(params: ScenarioParams, months: int, scenarios: npt.ArrayLike | None = None) -> F64:
    """python://normals: Z_s(m) for m = 0 … months−1, shape (len(scenarios), months).

    The draws ``esg`` turns into rates (the same seed gives the same Z), for a model that applies
    its own dynamics; with include_base, scenario 0 is all zeros. A row depends only on
    (seed, s, include_base); a and σ play no part.
    """
    if months < 0:
        raise ModelInputError("scenario request", [Violation("months", f"must be ≥ 0, got {months}")])
    idx = scenario_indices(params, scenarios)
    z = normals(params.seed, idx, months)
    if params.include_base:
        z[idx == 0, :] = 0.0
    return z


# ---------------------------------------------------------------------------
# python://term_life — per-policy present values under each scenario


@dataclass(frozen=True, eq=False)
class TermLifePVs:
    """Per-policy present values, each of shape (policies, scenarios), and the premium used."""

    premiums: F64
    claims: F64
    expenses: F64
    commissions: F64
    net_cf: F64
    premium_pp: F64


def q_mth_table(assumptions: Assumptions) -> F64:
    """q_mth by [female, age − min age, select duration]: 1 − (1 − min(1, q·sexfactor))^(1/12).

    sexfactor is 1 for males and the female multiplier for females.
    """
    factor = np.array([1.0, assumptions.female_multiplier]).reshape(2, 1, 1)
    q: F64 = 1.0 - (1.0 - np.minimum(1.0, assumptions.mortality[None, :, :] * factor)) ** (1.0 / 12.0)
    return q


def lapse_mth_base(assumptions: Assumptions) -> F64:
    """l_base by policy year: 1 − (1 − lapse[y])^(1/12) (the last year's rate carries forward)."""
    rates: F64 = 1.0 - (1.0 - assumptions.lapse) ** (1.0 / 12.0)
    return rates


def disc_factors_base(assumptions: Assumptions, months: int) -> F64:
    """DF0(t) = (1 + ((1 + z[⌊t/12⌋])^(1/12) − 1))^(−t), lifelib's form, for t = 0 … months−1."""
    t = np.arange(months)
    disc_rate_mth = (1.0 + assumptions.curve[t // 12]) ** (1.0 / 12.0) - 1.0
    factors: F64 = (1.0 + disc_rate_mth) ** (-t.astype(np.float64))
    return factors


def disc_factors(assumptions: Assumptions, shocks: F64) -> F64:
    """DF_s(t) = DF0(t)·exp(−Σ_{m<t} r_s(m)/12), shape (scenarios, months); the shock sum runs in month order."""
    months = shocks.shape[1]
    cum = np.zeros_like(shocks)
    if months > 1:
        np.cumsum(shocks[:, :-1], axis=1, out=cum[:, 1:])  # sequential, so Σ_{m<t} in month order
    factors: F64 = disc_factors_base(assumptions, months)[None, :] * np.exp(-cum / 12.0)
    return factors


def inflation_factor(assumptions: Assumptions, months: int) -> F64:
    """(1 + infl)^(t/12) for t = 0 … months−1."""
    factor: F64 = (1.0 + assumptions.inflation) ** (np.arange(months) / 12.0)
    return factor


def dynamic_lapse_factor(assumptions: Assumptions, shock: F64) -> F64:
    """dl(t, s) = clamp(1 + β·r_s(t), lo, hi)."""
    factor: F64 = np.clip(1.0 + assumptions.dyn_lapse_beta * shock, assumptions.dyn_lapse_lo, assumptions.dyn_lapse_hi)
    return factor


@dataclass(frozen=True, eq=False)
class _PolicyRates:
    """Per-policy rates of one group at month t (vectors over the group's policies)."""

    q_mth: F64
    lapse_base: F64
    first_year: npt.NDArray[np.bool_]
    new_business: npt.NDArray[np.bool_]
    in_force: npt.NDArray[np.bool_]


def _rates_at(t: int, policies: Policies, assumptions: Assumptions, q_table: F64, lapse_table: F64) -> _PolicyRates:
    """q_mth(t), l_base(t) and the month's flags per policy: dm = duration_mth + t, y = ⌊dm/12⌋, x = age + y.

    Before the issue of future new business (dm < 0) nothing is in force: its rates are read at
    y = 0 only to stay finite (they multiply zero policies).
    """
    dm = policies.duration_mth.astype(np.int64) + t
    y = dm // 12
    y_rates = np.maximum(y, 0)
    row = np.clip(policies.age_at_entry + y_rates - assumptions.mortality_min_age, 0, q_table.shape[1] - 1)
    col = np.minimum(y_rates, assumptions.select_period)
    return _PolicyRates(
        q_mth=q_table[policies.female, row, col],
        lapse_base=lapse_table[np.minimum(y_rates, lapse_table.size - 1)],
        first_year=y == 0,
        new_business=dm == 0,
        in_force=t < policies.projection_months,
    )


def net_premium_pp(policies: Policies, assumptions: Assumptions) -> F64:
    """net = Σ_t claims(t)·DF0(t) / Σ_t pols(t)·DF0(t), on the base curve with dl ≡ 1, per policy.

    claims(t) = sum_assured·deaths(t); projected from t = 0 with pols(0) = policy_count
    (meaningful for duration_mth = 0; `premium_pp` passes future new business as issued at t = 0).
    """
    months = int(policies.projection_months.max(initial=0))
    df0 = disc_factors_base(assumptions, months)
    q_table, lapse_table = q_mth_table(assumptions), lapse_mth_base(assumptions)
    pols = policies.policy_count.copy()
    pv_claims = np.zeros(len(policies))
    pv_pols = np.zeros(len(policies))
    for t in range(months):
        r = _rates_at(t, policies, assumptions, q_table, lapse_table)
        pols = np.where(r.in_force, pols, 0.0)
        deaths = pols_death(pols, r.q_mth)
        lapses = pols_lapse(pols, deaths, lapse_mth(r.lapse_base, np.ones(1)))
        pv_claims += claims(policies.sum_assured, deaths) * df0[t]
        pv_pols += pols * df0[t]
        pols = pols_if_next(pols, deaths, lapses)
    with np.errstate(invalid="ignore", divide="ignore"):
        net: F64 = pv_claims / pv_pols
    return net


def premium_pp(policies: Policies, assumptions: Assumptions) -> F64:
    """Monthly premium per policy: the given premium_pp, or for the rows that compute it
    round(100·(1 + loading)·net)/100 with Python's round (half to even, as np.rint).

    Computed on one policy (policy_count 1): the premium per policy does not depend on the count.
    Rows that compute it have duration_mth ≤ 0 (new business now or later); the premium is the
    one at issue, projected in policy time from the issue month (duration_mth 0: months and the
    curve's years counted from issue), so it does not depend on the issue date — as lifelib's
    BasicTerm_ME, whose premium table is BasicTerm_M's new-business premium rate.
    """
    given = policies.premium_pp.copy()
    rows = np.flatnonzero(policies.computes_premium)
    if rows.size:
        unit = policies.take(rows)
        unit = Policies(
            policy_id=unit.policy_id, age_at_entry=unit.age_at_entry, female=unit.female,
            policy_term=unit.policy_term, policy_count=np.ones(rows.size), sum_assured=unit.sum_assured,
            duration_mth=np.zeros(rows.size, dtype=np.int32), premium_pp=unit.premium_pp,
        )  # fmt: skip
        net = net_premium_pp(unit, assumptions)
        given[rows] = np.rint(100.0 * ((1.0 + assumptions.premium_loading) * net)) / 100.0
    return given


def term_life(policies: Policies, assumptions: Assumptions, shocks: F64) -> TermLifePVs:
    """Per-policy PVs of premiums, claims, expenses, commissions and pv_net_cf under each scenario.

    ``shocks`` is the esg output r_s(t), shape (scenarios, ≥ max M). For each policy, month t < M:
    deaths = pols·q_mth, lapses = (pols − deaths)·min(1, l_base·dl), pols ← pols − deaths − lapses;
    premiums = premium_pp·pols, claims = sum_assured·deaths,
    expenses = acq·policy_count·[dm = 0] + pols·maint/12·(1 + infl)^(t/12),
    commissions = comm_rate·premiums·[y = 0]; PV_X = Σ_t X·DF_s(t) in month order;
    pv_net_cf = PV_premiums − PV_claims − PV_expenses − PV_commissions.

    As lifelib's BasicTerm_ME: duration_mth < 0 is future new business, pols = 0 for
    t < −duration_mth and pols = policy_count at t = −duration_mth (dm = 0: acquisition expense,
    policy year 0 begins), after which it projects as new business, with t (the calendar month)
    still indexing DF_s(t), the inflation factor and the shocks. duration_mth = 12·policy_term
    matured at t = 0 (M = 0): every PV is 0.
    """
    shocks = _checked_shocks(policies, assumptions, shocks)
    n_pol, n_scen = len(policies), shocks.shape[0]
    prem_pp = premium_pp(policies, assumptions)
    pvs = {name: np.zeros((n_pol, n_scen)) for name in TERM_LIFE_CASH_FLOWS}
    df = disc_factors(assumptions, shocks)
    dl = dynamic_lapse_factor(assumptions, shocks)
    group = max(1, _MAX_CELLS_PER_GROUP // max(1, n_scen))
    for start in range(0, n_pol, group):
        rows = slice(start, min(start + group, n_pol))
        part = _project_group(policies.take(np.arange(rows.start, rows.stop)), prem_pp[rows], assumptions, df, dl)
        for name, values in part.items():
            pvs[name][rows] = values
    net_cf = pv_net_cf(pvs["premiums"], pvs["claims"], pvs["expenses"], pvs["commissions"])
    prem_pp.setflags(write=False)
    return TermLifePVs(net_cf=net_cf, premium_pp=prem_pp, **pvs)


def term_life_cash_flows(policies: Policies, assumptions: Assumptions, shocks: F64) -> dict[str, F64]:
    """Each output's undiscounted cash flow by month, summed over the policies: name → f64
    [scenarios][months + 1], month t the one whose DF_s(t) the present values discount it with
    (`term_life`'s docstring; month ``months``, the horizon, holds nothing for term life), and
    net_cf(t) = premiums(t) − claims(t) − expenses(t) − commissions(t)."""
    shocks = _checked_shocks(policies, assumptions, shocks)
    n_pol, (n_scen, months) = len(policies), shocks.shape
    prem_pp = premium_pp(policies, assumptions)
    df = disc_factors(assumptions, shocks)
    dl = dynamic_lapse_factor(assumptions, shocks)
    flows = {name: np.zeros((n_scen, months + 1)) for name in TERM_LIFE_CASH_FLOWS}
    group = max(1, _MAX_CELLS_PER_GROUP // max(1, n_scen))
    for start in range(0, n_pol, group):
        rows = np.arange(start, min(start + group, n_pol))
        _project_group(policies.take(rows), prem_pp[rows], assumptions, df, dl, flows=flows)
    flows["net_cf"] = flows["premiums"] - flows["claims"] - flows["expenses"] - flows["commissions"]
    return flows


def _checked_shocks(policies: Policies, assumptions: Assumptions, shocks: F64) -> F64:
    """``shocks`` cut to the policies' months, after checking the tables cover the policies."""
    assumptions.check_covers(policies)
    months = int(policies.projection_months.max(initial=0))
    shocks = np.asarray(shocks, dtype=np.float64)
    if shocks.ndim != 2 or shocks.shape[1] < months:
        raise ModelInputError(
            "scenarios", [Violation("shocks", f"need shape (scenarios, ≥ {months}), got {shocks.shape}")]
        )
    return shocks[:, :months]


def _project_group(
    policies: Policies, prem_pp: F64, assumptions: Assumptions, df: F64, dl: F64, *, flows: dict[str, F64] | None = None
) -> dict[str, F64]:
    """Project one group of policies under all scenarios: month loop over (policies, scenarios) arrays
    (adding each month's cash flows, summed over the group, to ``flows[name][:, t]`` when given)."""
    a = assumptions
    n_pol, n_scen = len(policies), df.shape[0]
    months = int(policies.projection_months.max(initial=0))
    q_table, lapse_table = q_mth_table(a), lapse_mth_base(a)
    infl = inflation_factor(a, months)
    count, sum_assured = policies.policy_count[:, None], policies.sum_assured[:, None]
    future = policies.duration_mth < 0  # future new business: nothing in force before its issue month
    pols = np.repeat(np.where(future[:, None], 0.0, count), n_scen, axis=1)
    pv = {name: np.zeros((n_pol, n_scen)) for name in TERM_LIFE_CASH_FLOWS}
    for t in range(months):
        r = _rates_at(t, policies, a, q_table, lapse_table)
        issued = future & r.new_business  # t = −duration_mth: the policies are written
        if issued.any():
            pols[issued] = count[issued]
        pols[~r.in_force] = 0.0  # matured: no cash flow from here on
        deaths = pols_death(pols, r.q_mth[:, None])
        lapses = pols_lapse(pols, deaths, lapse_mth(r.lapse_base[:, None], dl[None, :, t]))
        prem = premiums(prem_pp[:, None], pols)
        cash_flows = {
            "premiums": prem,
            "claims": claims(sum_assured, deaths),
            "expenses": expenses(a, count, r.new_business[:, None], pols, infl[t]),
            "commissions": commissions(a, prem, r.first_year[:, None]),
        }
        for name, cf in cash_flows.items():
            pv[name] += cf * df[None, :, t]
            if flows is not None:
                flows[name][:, t] += cf.sum(axis=0)
        pols = pols_if_next(pols, deaths, lapses)
    return pv


def lapse_mth(l_base: F64, dl: F64) -> F64:
    """l_mth(t, s) = min(1, l_base(t)·dl(t, s))."""
    rate: F64 = np.minimum(1.0, l_base * dl)
    return rate


def pols_death(pols: F64, q_mth: F64) -> F64:
    """deaths(t) = pols(t)·q_mth(t)."""
    deaths: F64 = pols * q_mth
    return deaths


def pols_lapse(pols: F64, deaths: F64, l_mth: F64) -> F64:
    """lapses(t) = (pols(t) − deaths(t))·l_mth(t, s)."""
    lapses: F64 = (pols - deaths) * l_mth
    return lapses


def pols_if_next(pols: F64, deaths: F64, lapses: F64) -> F64:
    """pols(t+1) = pols(t) − deaths(t) − lapses(t) (policies in force at t = M mature)."""
    nxt: F64 = pols - deaths - lapses
    return nxt


def premiums(prem_pp: F64, pols: F64) -> F64:
    """premiums(t) = premium_pp·pols(t)."""
    cf: F64 = prem_pp * pols
    return cf


def claims(sum_assured: F64, deaths: F64) -> F64:
    """claims(t) = sum_assured·deaths(t)."""
    cf: F64 = sum_assured * deaths
    return cf


def expenses(a: Assumptions, policy_count: F64, new_business: npt.NDArray[np.bool_], pols: F64, infl: float) -> F64:
    """expenses(t) = acq·policy_count·[dm = 0] + pols(t)·maint/12·(1 + infl)^(t/12); ``infl`` is the factor."""
    acquisition = np.where(new_business, a.expense_acq * policy_count, 0.0)
    cf: F64 = acquisition + pols * a.expense_maint / 12.0 * infl
    return cf


def commissions(a: Assumptions, premiums: F64, first_year: npt.NDArray[np.bool_]) -> F64:
    """commissions(t) = comm_rate·premiums(t)·[y = 0]."""
    cf: F64 = np.where(first_year, a.commission_rate * premiums, 0.0)
    return cf


def pv_net_cf(pv_premiums: F64, pv_claims: F64, pv_expenses: F64, pv_commissions: F64) -> F64:
    """pv_net_cf = PV_premiums − PV_claims − PV_expenses − PV_commissions."""
    net: F64 = pv_premiums - pv_claims - pv_expenses - pv_commissions
    return net


# ---------------------------------------------------------------------------
# The reference summation order


def row_value_partials(row_values: F64, block_size: int = BLOCK_SIZE) -> F64:
    """Block partials f64 [blocks][outputs][N] of row values f64 [rows][outputs][N] (`block_partials`
    of each output)."""
    outputs = range(row_values.shape[1])
    return np.stack([block_partials(row_values[:, k, :], block_size) for k in outputs], axis=1)


def block_partials(values: F64, block_size: int = BLOCK_SIZE) -> F64:
    """Per-block sums over policies, shape (blocks, scenarios), for per-policy ``values`` (policies, scenarios).

    partial[b] = (((0 + v[bB]) + v[bB+1]) + …) + v[bB+B−1]: a sequential fold in row order
    starting from +0.0 (np.sum's pairwise order would not do).
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"values must be (policies, scenarios), got shape {values.shape}")
    if block_size < 1:
        raise ValueError(f"block_size must be ≥ 1, got {block_size}")
    n_blocks = -(-values.shape[0] // block_size)
    partials = np.zeros((n_blocks, values.shape[1]), dtype=np.float64)
    for b in range(n_blocks):
        acc = partials[b]
        for row in values[b * block_size : (b + 1) * block_size]:
            acc += row
    return partials


def portfolio(values: F64, block_size: int = BLOCK_SIZE) -> F64:
    """Portfolio value per scenario in the reference order: the fold of block_partials(values)."""
    return fold(block_partials(values, block_size))
