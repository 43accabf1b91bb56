"""The frozen ABI v1 baseline, for `livecalc bench engine` only: it compares ABI v2's term_life
with the v1 build it replaced, in the same run, on the same inputs and the same `WasmPool`.

Nothing in the mesh runs ABI v1 any more (docs/model-interface.md is the contract); this module
exists only so the benchmark can measure what the move to v2 cost. It is a copy, frozen at
commit 9135919, of v1's context packing (``services/engine/abi.py``), its term_life layout
(``services/engine/layout.py``) and its call sequence (``services/engine/wasm_nodes.py``), and
it drives the v1 binaries of that commit, shipped as benchmark data (``bench_data/esg_v1.wasm``,
``bench_data/term_life_v1.wasm``). Do not change it to follow the live ABI: a baseline that moves
measures nothing.

v1 in one paragraph: a term-life-specific 192-byte context (``lc_tl_ctx``: sizes, the u32 offsets
of seven policy columns, three tables, the scenario rates, a host-allocated workspace and the
partials, then nine f64 parameters); ``tl_lanes()``, ``tl_prepare(ctx)`` on one thread, then over
K threads ``tl_prepare_scenarios(ctx, g0, g1)`` on groups of ``tl_lanes`` scenarios,
``tl_premiums(ctx, r0, r1)`` on 1,024-row ranges and ``tl_run_blocks(ctx, b0, b1)``; the esg
(``esg_run(ctx, s0, s1)``) with a 48-byte ``lc_esg_ctx``. v1 knows no future new business
(``duration_mth`` < 0).

The sandbox loads these binaries as it loads any module: their exports ``tl_*`` and ``esg_run``
are not in the v2 signature table (`services.valuation.model_abi.SIGNATURES`), so only
``lc_abi_version`` (the same signature in both ABIs) and ``__stack_pointer`` are checked.
"""

from __future__ import annotations

import struct
from dataclasses import astuple, dataclass
from importlib import resources
from typing import Final

import numpy as np

from services.engine.errors import PipelineError
from services.engine.layout import LayoutBuilder, Region
from services.engine.workers import Executor, RunControl
from services.valuation.arrays import F64
from services.valuation.assumptions import Assumptions
from services.valuation.blocks import BLOCK_SIZE
from services.valuation.interface.declaration import TERM_LIFE_OUTPUTS
from services.valuation.policies import Policies
from services.valuation.scenarios import ScenarioParams

ABI_VERSION_V1: Final = 1
"""What a v1 context's first field holds (a v1 model refuses anything else with status 1)."""

N_PV: Final = len(TERM_LIFE_OUTPUTS)
"""Present values per block partial: v1 wrote term life's five in its declaration's order
(`TERM_LIFE_OUTPUTS`), which is why its partials can be compared with v2's bit for bit."""

_ESG: Final = struct.Struct("<IIIIQddII")
_TERM_LIFE: Final = struct.Struct("<" + "I" * 30 + "d" * 9)
ESG_CTX_SIZE: Final = _ESG.size
TERM_LIFE_CTX_SIZE: Final = _TERM_LIFE.size
assert ESG_CTX_SIZE == 48 and TERM_LIFE_CTX_SIZE == 192  # v1's _Static_asserts

MODELS: Final = {"esg": "esg_v1.wasm", "term_life": "term_life_v1.wasm"}
"""v1 model name → its binary in ``services/engine/bench_data`` (commit 9135919's builds)."""


def v1_models() -> dict[str, bytes]:
    """The v1 binaries, name (``esg``, ``term_life``) → bytes."""
    data = resources.files("services.engine") / "bench_data"
    return {name: (data / file).read_bytes() for name, file in MODELS.items()}


@dataclass(frozen=True)
class EsgContext:
    """v1 `lc_esg_ctx`: fills rates[s][m], f64, scenario-major, n_months per row."""

    n_scen: int
    n_months: int
    include_base: int
    seed: int
    a: float
    sigma: float
    rates: int

    def pack(self) -> bytes:
        return _ESG.pack(ABI_VERSION_V1, self.n_scen, self.n_months, self.include_base, self.seed, self.a,
                         self.sigma, self.rates, 0)  # fmt: skip


@dataclass(frozen=True)
class TermLifeContext:
    """v1 `lc_tl_ctx`: sizes, offsets of policy columns, assumptions, scenario rates, workspace and outputs."""

    n_rows: int
    n_scen: int
    n_months: int
    n_ages: int
    n_sel: int
    min_age: int
    n_lapse: int
    n_curve: int
    rates_stride: int
    age_at_entry: int
    female: int
    policy_term: int
    duration_mth: int
    policy_count: int
    sum_assured: int
    premium_pp: int
    premium_eff: int
    mortality: int
    lapse: int
    curve: int
    rates: int
    q_mth: int
    l_base: int
    df0: int
    maint_infl: int
    disc: int
    dlap: int
    partials: int
    female_multiplier: float
    expense_acq: float
    expense_maint: float
    inflation: float
    commission_rate: float
    premium_loading: float
    dyn_lapse_beta: float
    dyn_lapse_lo: float
    dyn_lapse_hi: float

    def pack(self) -> bytes:
        values = astuple(self)
        ints, floats = values[:28], values[28:]
        return _TERM_LIFE.pack(ABI_VERSION_V1, *ints, 0, *floats)


def term_life_regions(
    alloc: LayoutBuilder,
    name: str,
    *,
    rows: int,
    n_scen: int,
    months: int,
    mortality: tuple[int, int],
    n_lapse: int,
    n_curve: int,
    lanes: int,
) -> dict[str, Region]:
    """v1 term_life's context, policy columns, tables, workspace (``lanes`` scenarios interleaved
    per group) and block partials f64 [blocks][5][n_scen], in v1's allocation order."""
    groups = -(-n_scen // lanes)
    blocks = -(-rows // BLOCK_SIZE)
    r: dict[str, Region] = {"ctx": alloc.add(f"{name}.ctx", TERM_LIFE_CTX_SIZE)}
    for col in ("age_at_entry", "female", "policy_term", "duration_mth"):
        r[col] = alloc.add_array(f"{name}.{col}", (rows,), np.int32)
    for col in ("policy_count", "sum_assured", "premium_pp", "premium_eff"):
        r[col] = alloc.add_array(f"{name}.{col}", (rows,), np.float64)
    r["mortality"] = alloc.add_array(f"{name}.mortality", mortality, np.float64)
    r["lapse"] = alloc.add_array(f"{name}.lapse", (n_lapse,), np.float64)
    r["curve"] = alloc.add_array(f"{name}.curve", (n_curve,), np.float64)
    r["q_mth"] = alloc.add_array(f"{name}.q_mth", (2, *mortality), np.float64)
    r["l_base"] = alloc.add_array(f"{name}.l_base", (n_lapse,), np.float64)
    r["df0"] = alloc.add_array(f"{name}.df0", (months,), np.float64)
    r["maint_infl"] = alloc.add_array(f"{name}.maint_infl", (months,), np.float64)
    r["disc"] = alloc.add_array(f"{name}.disc", (groups, months, lanes), np.float64)
    r["dlap"] = alloc.add_array(f"{name}.dlap", (groups, months, lanes), np.float64)
    r["partials"] = alloc.add_array(f"{name}.partials", (blocks, N_PV, n_scen), np.float64)
    return r


def _ranges(total: int, step: int) -> list[tuple[int, int]]:
    return [(a, min(a + step, total)) for a in range(0, total, max(1, step))]


def run_esg_v1(
    ex: Executor, model: str, alloc: LayoutBuilder, params: ScenarioParams, months: int, *, control: RunControl
) -> Region:
    """v1 esg: r_s(m) for every scenario, f64 [N][months], into a new region (returned)."""
    n = params.count
    rates = alloc.add_array(f"{model}.rates", (n, months), np.float64)
    ctx = alloc.add(f"{model}.ctx", ESG_CTX_SIZE)
    ex.memory.ensure(alloc.end)
    packed = EsgContext(n, months, int(params.include_base), params.seed, params.a, params.sigma, rates.offset)
    ex.memory.write(ctx.offset, packed.pack())
    step = max(1, -(-n // (4 * ex.threads)))
    ex.map(model, "esg_run", ctx.offset, _ranges(n, step), control)
    return rates


def run_term_life_v1(
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
) -> F64:
    """v1 term_life: block partials f64 [blocks][5][n_scen] (a copy) of ``policies`` under the
    scenarios in ``rates`` (f64 [n_scen][rates_stride])."""
    assumptions.check_covers(policies)
    n_rows, months = len(policies), policies.horizon_months
    if rates_stride < months:
        raise PipelineError(f"scenario rates have {rates_stride} months; the policies need {months}")
    if (policies.duration_mth < 0).any():
        raise PipelineError("ABI v1's term_life has no future new business (duration_mth < 0)")
    lanes = ex.call_value(model, "tl_lanes", (), control)
    groups = -(-n_scen // lanes)
    blocks = -(-n_rows // BLOCK_SIZE)
    a = assumptions
    mort = a.mortality
    r = term_life_regions(
        alloc, model, rows=n_rows, n_scen=n_scen, months=months, mortality=(int(mort.shape[0]), int(mort.shape[1])),
        n_lapse=a.lapse.size, n_curve=a.curve.size, lanes=lanes,
    )  # fmt: skip
    mem = ex.memory
    mem.ensure(alloc.end)
    for col in ("age_at_entry", "policy_term", "duration_mth"):
        mem.view(r[col], np.int32)[:] = getattr(policies, col)
    mem.view(r["female"], np.int32)[:] = policies.female
    for col in ("policy_count", "sum_assured", "premium_pp"):
        mem.view(r[col], np.float64)[:] = getattr(policies, col)
    mem.view(r["mortality"], np.float64)[:] = mort.reshape(-1)
    mem.view(r["lapse"], np.float64)[:] = a.lapse
    mem.view(r["curve"], np.float64)[:] = a.curve
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
    return np.array(mem.view(r["partials"], np.float64, (blocks, N_PV, n_scen)))
