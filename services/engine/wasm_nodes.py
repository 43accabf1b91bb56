"""Drivers of the shipped models' entry points: lay out a node's buffers, write its context,
and run its entry points over K threads (`Executor`: the WASM pool, or the native baseline).

- esg (exports `esg_run`): rates r_s(m), f64 [N][months], split over scenario ranges.
- term_life (exports `tl_*`): tables, scenario tables, premiums, then block partials
  f64 [blocks][5][N], one call per ``blocks_per_call`` blocks pulled by the threads.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from services.engine.abi import N_PV, EsgContext, TermLifeContext
from services.engine.errors import PipelineError
from services.engine.layout import LayoutBuilder, Region, TableShapes, esg_context, esg_rates, term_life_regions
from services.engine.workers import Executor, RunControl
from services.valuation.arrays import F64
from services.valuation.assumptions import Assumptions
from services.valuation.blocks import BLOCK_SIZE
from services.valuation.policies import Policies
from services.valuation.scenarios import ScenarioParams


def _ranges(total: int, step: int) -> list[tuple[int, int]]:
    return [(a, min(a + step, total)) for a in range(0, total, max(1, step))]


def run_esg(
    ex: Executor,
    model: str,
    alloc: LayoutBuilder,
    params: ScenarioParams,
    months: int,
    *,
    control: RunControl,
    out: Region | None = None,
    name: str = "esg",
) -> Region:
    """Generate r_s(m) for every scenario into ``out`` (allocated when None); returns the region."""
    n = params.count
    rates = out or esg_rates(alloc, f"{name}.rates", n, months)
    ctx = esg_context(alloc, name)
    ex.memory.ensure(alloc.end)
    packed = EsgContext(n, months, int(params.include_base), params.seed, params.a, params.sigma, rates.offset)
    ex.memory.write(ctx.offset, packed.pack())
    step = max(1, -(-n // (4 * ex.threads)))
    ex.map(model, "esg_run", ctx.offset, _ranges(n, step), control)
    return rates


@dataclass(frozen=True)
class TermLifeResult:
    """Block partials f64 [blocks][5][N] and the premiums used: copies, which stay right after
    the run's lease ends and the memory is zeroed for the next run."""

    partials: F64
    premium_pp: F64
    partials_region: Region


def run_term_life(
    ex: Executor,
    model: str,
    alloc: LayoutBuilder,
    policies: Policies,
    assumptions: Assumptions,
    *,
    rates: Region,
    n_scen: int,
    rates_stride: int,
    control: RunControl,
    blocks_per_call: int = 1,
    name: str = "term_life",
) -> TermLifeResult:
    """Project ``policies`` under the scenarios in ``rates`` (f64 [n_scen][rates_stride])."""
    assumptions.check_covers(policies)
    n_rows, months = len(policies), policies.horizon_months
    if rates_stride < months:
        raise PipelineError(f"scenario rates have {rates_stride} months; the policies need {months}")
    lanes = ex.call_value(model, "tl_lanes", (), control)
    groups = -(-n_scen // lanes)
    blocks = -(-n_rows // BLOCK_SIZE)
    mort = assumptions.mortality
    tables = TableShapes((int(mort.shape[0]), int(mort.shape[1])), assumptions.lapse.size, assumptions.curve.size)
    r = term_life_regions(alloc, name, rows=n_rows, n_scen=n_scen, months=months, tables=tables, lanes=lanes)
    mem = ex.memory
    mem.ensure(alloc.end)
    for col in ("age_at_entry", "policy_term", "duration_mth"):
        mem.view(r[col], np.int32)[:] = getattr(policies, col)
    mem.view(r["female"], np.int32)[:] = policies.female
    for col in ("policy_count", "sum_assured", "premium_pp"):
        mem.view(r[col], np.float64)[:] = getattr(policies, col)
    mem.view(r["mortality"], np.float64)[:] = mort.reshape(-1)
    mem.view(r["lapse"], np.float64)[:] = assumptions.lapse
    mem.view(r["curve"], np.float64)[:] = assumptions.curve
    a = assumptions
    ctx = TermLifeContext(
        n_rows=n_rows, n_scen=n_scen, n_months=months, n_ages=mort.shape[0], n_sel=mort.shape[1],
        min_age=a.mortality_min_age, n_lapse=a.lapse.size, n_curve=a.curve.size, rates_stride=rates_stride,
        age_at_entry=r["age_at_entry"].offset, female=r["female"].offset, policy_term=r["policy_term"].offset,
        duration_mth=r["duration_mth"].offset, policy_count=r["policy_count"].offset,
        sum_assured=r["sum_assured"].offset, premium_pp=r["premium_pp"].offset, premium_eff=r["premium_eff"].offset,
        mortality=r["mortality"].offset, lapse=r["lapse"].offset, curve=r["curve"].offset, rates=rates.offset,
        q_mth=r["q_mth"].offset, l_base=r["l_base"].offset, df0=r["df0"].offset, maint_infl=r["maint_infl"].offset,
        disc=r["disc"].offset, dlap=r["dlap"].offset, partials=r["partials"].offset,
        female_multiplier=a.female_multiplier, expense_acq=a.expense_acq, expense_maint=a.expense_maint,
        inflation=a.inflation, commission_rate=a.commission_rate, premium_loading=a.premium_loading,
        dyn_lapse_beta=a.dyn_lapse_beta, dyn_lapse_lo=a.dyn_lapse_lo, dyn_lapse_hi=a.dyn_lapse_hi,
    )  # fmt: skip
    c = r["ctx"].offset
    mem.write(c, ctx.pack())
    ex.call(model, "tl_prepare", (c,), control)
    ex.map(model, "tl_prepare_scenarios", c, _ranges(groups, max(1, -(-groups // (4 * ex.threads)))), control)
    ex.map(model, "tl_premiums", c, _ranges(n_rows, BLOCK_SIZE), control)
    ex.map(model, "tl_run_blocks", c, _ranges(blocks, blocks_per_call), control)
    partials = np.array(mem.view(r["partials"], np.float64, (blocks, N_PV, n_scen)))
    premiums = np.array(mem.view(r["premium_eff"], np.float64))
    return TermLifeResult(partials=partials, premium_pp=premiums, partials_region=r["partials"])
