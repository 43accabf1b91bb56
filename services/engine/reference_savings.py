"""``python://savings``: the numpy twin of the shipped savings model (lifelib savings CashValue_ME).

It follows ``models/src/savings.c``'s header comment (docs/model.md "savings")
operation by operation, so the two agree to rounding in libm (1e-9 relative is the contract;
measured far closer), and with lifelib's own inputs it reproduces CashValue_ME's ``result_pv``
per model point and scenario. Vectorised over policies × scenarios, one month at a time (the
policies in groups to bound memory); sums over months run in month order.

Also here: the savings declaration's inputs from a table of policy rows and the shipped
assumption files (`savings_inputs`), for tests, benchmarks and the demo.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Final

import numpy as np
import pyarrow as pa

from services.engine import reference
from services.valuation.arrays import F64, I64, Mask
from services.valuation.errors import ModelInputError, Violation
from services.valuation.interface.declaration import ModelInterface
from services.valuation.interface.parser import interface_of
from services.valuation.interface.records import Records
from services.valuation.interface.tables import Assets, load_assets
from services.valuation.reference_model import savings_assumption_files, savings_declaration
from services.valuation.scenarios import ScenarioParams

if TYPE_CHECKING:
    from services.engine.pipeline import RunInputs

OUTPUTS: Final = (
    "premiums", "death", "surrender", "maturity", "expenses", "commissions", "inv_income", "av_change", "net_cf",
)  # fmt: skip
"""The declared outputs, in order (lifelib's result_pv columns)."""
_MAX_CELLS_PER_GROUP: Final = 1 << 19
"""Policies × scenarios projected at once."""


@dataclass(frozen=True)
class SavingsPolicies:
    """Model points with their product features (lifelib's model_point_table_ext), one entry per row."""

    age_at_entry: I64
    policy_term: I64
    """Years to maturity: the column, or ω − age_at_entry for whole life."""
    policy_count: F64
    sum_assured: F64
    duration_mth: I64
    premium_pp: F64
    av_pp_init: F64
    single: Mask
    """SINGLE premium (else LEVEL)."""
    surr_charge_col: I64
    """Column of the surrender charge table, −1 without a charge."""
    load_prem_rate: F64

    @property
    def projection_months(self) -> I64:
        """M = 12·policy_term − duration_mth: maturity at t = M."""
        months: I64 = 12 * self.policy_term - self.duration_mth
        return months

    def take(self, rows: slice) -> SavingsPolicies:
        return SavingsPolicies(**{name: getattr(self, name)[rows] for name in self.__dataclass_fields__})


@dataclass(frozen=True)
class SavingsBasis:
    """The tables and scalars of a run."""

    mortality: F64
    """annual q [age][select year]"""
    mortality_min_age: int
    lapse: F64
    surr_charge: F64
    """[policy year][charge type]"""
    curve: F64
    inv_return_mean: float
    inv_return_vol: float
    maint_fee_rate: float
    coi_loading: float
    expense_acq: float
    expense_maint: float
    inflation: float
    commission_rate: float

    @property
    def last_age(self) -> int:
        """ω: the mortality table's last age, where whole life ends."""
        return self.mortality_min_age + int(self.mortality.shape[0]) - 1


@dataclass(frozen=True)
class SavingsPVs:
    """Per-policy present values under each scenario, each (policies, scenarios)."""

    premiums: F64
    death: F64
    surrender: F64
    maturity: F64
    expenses: F64
    commissions: F64
    inv_income: F64
    av_change: F64
    net_cf: F64


# ---------------------------------------------------------------------------
# Assumptions


def inv_return_mth(basis: SavingsBasis, std_norm: F64) -> F64:
    """r_s(t) = exp((μ − σ²/2)·(1/12) + (σ·√(1/12))·Z_s(t)) − 1 (lifelib's inv_return_table)."""
    mu, sigma = basis.inv_return_mean, basis.inv_return_vol
    drift = (mu - 0.5 * (sigma * sigma)) * (1.0 / 12.0)
    rate: F64 = np.exp(drift + sigma * np.sqrt(1.0 / 12.0) * std_norm) - 1.0
    return rate


def mort_rate_mth(basis: SavingsBasis) -> F64:
    """q_mth = 1 − (1 − q)^(1/12) by attained age and select year."""
    q: F64 = 1.0 - (1.0 - basis.mortality) ** (1.0 / 12.0)
    return q


def coi_rate(basis: SavingsBasis, q_mth: F64) -> F64:
    """Cost of insurance per unit of net amount at risk: coi_loading·q_mth."""
    rate: F64 = basis.coi_loading * q_mth
    return rate


def lapse_rate_mth(basis: SavingsBasis) -> F64:
    """1 − (1 − lapse[y])^(1/12) by policy year (the last carried forward)."""
    rate: F64 = 1.0 - (1.0 - basis.lapse) ** (1.0 / 12.0)
    return rate


def disc_factors(basis: SavingsBasis, months: int) -> F64:
    """DF(t) = (1 + ((1 + z[⌊t/12⌋])^(1/12) − 1))^(−t) for t = 0 … months (lifelib's, exactly)."""
    t = np.arange(months + 1)
    rate_mth = (1.0 + basis.curve[np.minimum(t // 12, basis.curve.size - 1)]) ** (1.0 / 12.0) - 1.0
    df: F64 = (1.0 + rate_mth) ** (-t.astype(np.float64))
    return df


def maint_expense(basis: SavingsBasis, months: int) -> F64:
    """Maintenance expense per policy in force in month t: expense_maint/12·(1 + inflation)^(t/12)."""
    t = np.arange(months, dtype=np.float64)
    cf: F64 = basis.expense_maint / 12.0 * (1.0 + basis.inflation) ** (t / 12.0)
    return cf


def check_covers(policies: SavingsPolicies, basis: SavingsBasis) -> None:
    """`ModelInputError` for rows the tables cannot value (the C model's statuses 3 and 4)."""
    bad: list[Violation] = []
    months = policies.projection_months
    live = months > 0
    checks = (
        ("policy_term", policies.policy_term < 1, "needs a term of at least a year"),
        ("duration_mth", (policies.duration_mth < 0) | (months < 0), "must be in [0, 12·policy_term]"),
        (
            "age_at_entry",
            live & (policies.age_at_entry + policies.duration_mth // 12 < basis.mortality_min_age),
            "needs attained ages below the mortality table",
        ),
        (
            "policy_term",
            live & (policies.age_at_entry + policies.policy_term - 1 > basis.last_age),
            "needs attained ages beyond the mortality table",
        ),
        ("policy_term", live & (months // 12 >= basis.curve.size), "needs more years than the discount curve has"),
        (
            "surr_charge_id",
            live & (policies.surr_charge_col >= basis.surr_charge.shape[1]),
            "is not a column of the surrender charge table",
        ),
    )
    for column, rows, message in checks:
        bad += [Violation(column, message, int(r)) for r in np.flatnonzero(rows)[:5]]
    if bad:
        raise ModelInputError("policies", bad)


# ---------------------------------------------------------------------------
# The projection


def savings(policies: SavingsPolicies, basis: SavingsBasis, std_norm: F64) -> SavingsPVs:
    """Per-policy PVs of the nine outputs under each scenario of ``std_norm`` (Z_s(t), shape
    (scenarios, ≥ max M)); the formulas are savings.c's header comment."""
    check_covers(policies, basis)
    months = int(policies.projection_months.max(initial=0))
    std_norm = np.asarray(std_norm, dtype=np.float64)
    if std_norm.ndim != 2 or std_norm.shape[1] < months:
        raise ModelInputError(
            "scenarios", [Violation("std_norm", f"need shape (scenarios, ≥ {months}), got {std_norm.shape}")]
        )
    returns = inv_return_mth(basis, std_norm[:, :months])
    n_pol, n_scen = len(policies.policy_count), std_norm.shape[0]
    out = {name: np.zeros((n_pol, n_scen)) for name in OUTPUTS}
    group = max(1, _MAX_CELLS_PER_GROUP // max(1, n_scen))
    for start in range(0, n_pol, group):
        rows = slice(start, min(start + group, n_pol))
        for name, values in _project_group(policies.take(rows), basis, returns).items():
            out[name][rows] = values
    return SavingsPVs(**out)


def savings_cash_flows(policies: SavingsPolicies, basis: SavingsBasis, std_norm: F64) -> dict[str, F64]:
    """Each output's undiscounted cash flow by month, summed over the policies: name → f64
    [scenarios][months + 1], month t the one whose DF(t) the present values discount it with
    (maturities, and their account value change, at t = M), and net_cf(t) as the PV's formula."""
    check_covers(policies, basis)
    months = int(policies.projection_months.max(initial=0))
    returns = inv_return_mth(basis, np.asarray(std_norm, dtype=np.float64)[:, :months])
    n_pol, n_scen = len(policies.policy_count), returns.shape[0]
    flows = {name: np.zeros((n_scen, months + 1)) for name in OUTPUTS if name != "net_cf"}
    group = max(1, _MAX_CELLS_PER_GROUP // max(1, n_scen))
    for start in range(0, n_pol, group):
        _project_group(policies.take(slice(start, min(start + group, n_pol))), basis, returns, flows)
    f = flows
    f["net_cf"] = (
        f["premiums"] + f["inv_income"] - (f["death"] + f["surrender"] + f["maturity"])
        - f["expenses"] - f["commissions"] - f["av_change"]
    )  # fmt: skip
    return flows


def _project_group(
    p: SavingsPolicies, basis: SavingsBasis, returns: F64, flows: dict[str, F64] | None = None
) -> dict[str, F64]:
    """One group of policies under every scenario: a month loop over (policies, scenarios) arrays
    (adding each month's cash flows, summed over the group, to ``flows[name][:, t]`` when given)."""
    n_pol, n_scen = len(p.policy_count), returns.shape[0]
    maturity_month = p.projection_months
    months = int(maturity_month.max(initial=0))
    q_mth = mort_rate_mth(basis)
    coi = coi_rate(basis, q_mth)
    l_mth = lapse_rate_mth(basis)
    df = disc_factors(basis, months)
    maint = maint_expense(basis, months)
    n_ages, n_sel = basis.mortality.shape
    age_row = p.age_at_entry - basis.mortality_min_age
    fee_rate = basis.maint_fee_rate / 12.0
    sa = p.sum_assured[:, None]
    has_charge = p.surr_charge_col >= 0
    charge_col = np.maximum(p.surr_charge_col, 0)
    pols_if = np.where(p.duration_mth > 0, p.policy_count, 0.0)
    av = np.repeat(p.av_pp_init[:, None], n_scen, axis=1)
    det = {name: np.zeros(n_pol) for name in ("premiums", "expenses", "commissions")}
    pv = {name: np.zeros((n_pol, n_scen)) for name in ("death", "surrender", "maturity", "inv_income", "av_change")}
    for t in range(months + 1):
        maturing = maturity_month == t  # d = 12·term: the policies in force mature, nothing else happens
        if maturing.any():
            paid = av[maturing] * pols_if[maturing, None]
            pv["maturity"][maturing] += paid * df[t]
            pv["av_change"][maturing] += -paid * df[t]
            if flows is not None:
                flows["maturity"][:, t] += paid.sum(axis=0)
                flows["av_change"][:, t] -= paid.sum(axis=0)
            pols_if = np.where(maturing, 0.0, pols_if)
        if t == months:
            break
        live = maturity_month > t
        d = p.duration_mth + t
        y = d // 12
        nb = np.where(d == 0, p.policy_count, 0.0)
        pols = pols_if + nb  # 0 once matured
        prem_pp = np.where(p.single & (d != 0), 0.0, p.premium_pp)
        cell = np.clip(age_row + y, 0, n_ages - 1), np.minimum(y, n_sel - 1)  # past maturity: any cell, pols 0
        q, cr = q_mth[cell], coi[cell]
        deaths = pols * q
        lapses = (pols - deaths) * l_mth[np.minimum(y, l_mth.size - 1)]
        pols_next = pols - lapses - deaths
        exits = (deaths + lapses)[:, None]
        sc = np.where(has_charge, basis.surr_charge[np.minimum(y, basis.surr_charge.shape[0] - 1), charge_col], 0.0)
        prem_to_av = ((1.0 - p.load_prem_rate) * prem_pp)[:, None]
        prem_cf = prem_pp * pols
        det["premiums"] += prem_cf * df[t]
        det["expenses"] += (basis.expense_acq * nb + pols * maint[t]) * df[t]
        det["commissions"] += basis.commission_rate * prem_cf * df[t]
        fb = av + prem_to_av
        bi = fb - fee_rate * fb - cr[:, None] * np.maximum(sa - fb, 0.0)
        ii = returns[None, :, t] * bi
        mid = bi + 0.5 * ii
        nxt = bi + ii
        dth, lps, pn = deaths[:, None], lapses[:, None], pols_next[:, None]
        pv["death"] += np.maximum(sa, mid) * dth * df[t]
        pv["surrender"] += (mid * lps - sc[:, None] * mid * lps) * df[t]
        pv["inv_income"] += (ii * pn + 0.5 * ii * exits) * df[t]
        pv["av_change"] += (nxt * pn - av * pols_if[:, None]) * df[t]
        if flows is not None:
            month = {
                "premiums": prem_cf.sum(),
                "expenses": (basis.expense_acq * nb + pols * maint[t]).sum(),
                "commissions": (basis.commission_rate * prem_cf).sum(),
                "death": (np.maximum(sa, mid) * dth).sum(axis=0),
                "surrender": (mid * lps - sc[:, None] * mid * lps).sum(axis=0),
                "inv_income": (ii * pn + 0.5 * ii * exits).sum(axis=0),
                "av_change": (nxt * pn - av * pols_if[:, None]).sum(axis=0),
            }
            for name, cf in month.items():
                flows[name][:, t] += cf
        av = np.where(live[:, None], nxt, av)  # a matured policy's account stays put (and finite)
        pols_if = pols_next
    premiums, expenses, commissions = (det[k][:, None] for k in ("premiums", "expenses", "commissions"))
    net = (
        premiums + pv["inv_income"] - (pv["death"] + pv["surrender"] + pv["maturity"])
        - expenses - commissions - pv["av_change"]
    )  # fmt: skip
    full = (n_pol, n_scen)
    return {
        **pv,
        "premiums": np.broadcast_to(premiums, full).copy(),
        "expenses": np.broadcast_to(expenses, full).copy(),
        "commissions": np.broadcast_to(commissions, full).copy(),
        "net_cf": net,
    }


# ---------------------------------------------------------------------------
# The twin as a pipeline node


def savings_arguments(
    records: Records, assets: Assets, interface: ModelInterface
) -> tuple[SavingsPolicies, SavingsBasis]:
    """The twin's arguments from a run of the savings declaration (category codes as the header's)."""
    c = records.columns
    tables = {t.name: t for t in assets.tables}
    params = {p.name: float(v) for p, v in zip(interface.parameters, assets.parameters, strict=True)}
    mortality = tables["mortality"]
    last_age = mortality.origin[0] + mortality.values.shape[0] - 1
    age = c["age_at_entry"].astype(np.int64)
    whole_life = c["is_wl"] == 1
    first_type = tables["surr_charge"].origin[1]
    policies = SavingsPolicies(
        age_at_entry=age,
        policy_term=np.where(whole_life, last_age - age, c["policy_term"].astype(np.int64)),
        policy_count=np.asarray(c["policy_count"], dtype=np.float64),
        sum_assured=np.asarray(c["sum_assured"], dtype=np.float64),
        duration_mth=c["duration_mth"].astype(np.int64),
        premium_pp=np.asarray(c["premium_pp"], dtype=np.float64),
        av_pp_init=np.asarray(c["av_pp_init"], dtype=np.float64),
        single=c["premium_type"] == 0,
        surr_charge_col=np.where(c["has_surr_charge"] == 1, c["surr_charge_id"].astype(np.int64) - first_type, -1),
        load_prem_rate=np.asarray(c["load_prem_rate"], dtype=np.float64),
    )
    basis = SavingsBasis(
        mortality=mortality.values,
        mortality_min_age=mortality.origin[0],
        lapse=tables["lapse"].values,
        surr_charge=tables["surr_charge"].values,
        curve=tables["curve"].values,
        **params,
    )
    return policies, basis


def savings_row_values(inputs: RunInputs, std_norm: F64) -> F64:
    """python://savings as row values f64 [rows][9][N]: each policy's PVs in the declaration's order."""
    from services.engine.errors import InvalidModelInput  # noqa: PLC0415 - the engine's error tree

    policies, basis = savings_arguments(inputs.records, inputs.assets, inputs.interface)
    try:
        pvs = savings(policies, basis, std_norm)
    except ModelInputError as exc:
        raise InvalidModelInput(str(exc)) from exc
    return np.stack([getattr(pvs, name) for name in inputs.interface.output_list.names], axis=1)


def savings_partials(inputs: RunInputs, std_norm: F64) -> F64:
    """python://savings as block partials f64 [blocks][9][N] (reference summation order)."""
    return reference.row_value_partials(savings_row_values(inputs, std_norm))


# ---------------------------------------------------------------------------
# Declared inputs


@cache
def savings_interface() -> ModelInterface:
    """The shipped savings declaration, parsed."""
    return interface_of({"interface": savings_declaration()})


def shipped_savings_assets(interface: ModelInterface | None = None) -> Assets:
    """The shipped savings assumptions (lifelib CashValue_ME's) as the declaration's tables and parameters."""
    files = savings_assumption_files()
    return load_assets(interface or savings_interface(), lambda path: files.get(path.removeprefix("assumptions/")))


def savings_inputs(rows: pa.Table, std_norm: F64, *, assets: Assets | None = None, first_row: int = 0) -> RunInputs:
    """A pipeline run of the savings declaration: ``rows`` (checked by its rules) under the draws
    ``std_norm`` [scenario][month] given as scenario data (no generator runs)."""
    from services.engine.pipeline import RunInputs  # noqa: PLC0415 - the pipeline imports this module

    interface = savings_interface()
    assets = assets or shipped_savings_assets(interface)
    std_norm = np.ascontiguousarray(std_norm, dtype=np.float64)
    return RunInputs(
        interface=interface,
        records=Records.from_table(rows, interface, assets.bounds),
        assets=assets,
        scenarios=ScenarioParams(count=int(std_norm.shape[0])),
        scenario_data={"std_norm": std_norm},
        first_row=first_row,
    )
