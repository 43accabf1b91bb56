"""The model ABI's context structs, packed as the C header declares them
(`services/valuation/reference_model/models/src/include/livecalc_model.h`; little-endian, u32
byte offsets into the memory). docs/model-abi.md is the prose.
"""

from __future__ import annotations

import struct
from dataclasses import astuple, dataclass
from typing import Final

from services.valuation.model_abi import ABI_VERSION, ENTRY_POINTS

N_PV: Final = 5
PV_COMPONENTS: Final = ("premiums", "claims", "expenses", "commissions", "net_cf")
"""Order of the five present values in a block partial."""

ESG_EXPORTS: Final = frozenset(ENTRY_POINTS["esg"])
TERM_LIFE_EXPORTS: Final = frozenset(ENTRY_POINTS["term_life"])

_ESG: Final = struct.Struct("<IIIIQddII")
_TERM_LIFE: Final = struct.Struct("<" + "I" * 30 + "d" * 9)
ESG_CTX_SIZE: Final = _ESG.size
TERM_LIFE_CTX_SIZE: Final = _TERM_LIFE.size


@dataclass(frozen=True)
class EsgContext:
    """`lc_esg_ctx`: fills rates[s][m], f64, scenario-major, n_months per row."""

    n_scen: int
    n_months: int
    include_base: int
    seed: int
    a: float
    sigma: float
    rates: int

    def pack(self) -> bytes:
        return _ESG.pack(ABI_VERSION, self.n_scen, self.n_months, self.include_base, self.seed, self.a, self.sigma,
                         self.rates, 0)  # fmt: skip


@dataclass(frozen=True)
class TermLifeContext:
    """`lc_tl_ctx`: sizes, offsets of policy columns, assumptions, scenario rates, workspace and outputs."""

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
        return _TERM_LIFE.pack(ABI_VERSION, *ints, 0, *floats)
