"""The SDK template's endowment written again in plain numpy, from its description, not its C:
the cross-check of what an author's model computes (agreement to 1e-9 relative; libm and the
order of sums differ, so not bitwise).

Per policy and scenario (src/model.c's opening comment states the same): monthly mortality
q_mth = 1 − (1 − q)^(1/12) by attained age and sex, monthly lapse w = 1 − (1 − lapse_rate)^(1/12),
pols(0) = policy_count; in month t < M = 12·term − duration: premiums premium_pp·pols·DF(t),
expenses expense_pp/12·pols·DF(t), deaths pols·q_mth, claims sum_assured·deaths·DF(t+1) (and,
when the package declares it, claim_expense·deaths·DF(t+1) more expenses), lapses
(pols − deaths)·w; maturities sum_assured·pols(M)·DF(M); net_cf = premiums − claims −
maturities − expenses. DF_s(t) = (1 + valuation_rate)^(−t/12)·exp(−Σ_{m<t} r_s(m)/12) with
r_s the shipped generator's short-rate shocks (services.engine.reference.esg).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from services.engine import reference
from services.engine.pipeline import RunInputs
from services.valuation.arrays import F64
from services.valuation.interface.declaration import ModelInterface
from services.valuation.interface.records import Records, package_rules
from services.valuation.interface.tables import Assets, load_assets
from services.valuation.scenarios import ScenarioParams

OUTPUTS = ("premiums", "claims", "maturities", "expenses", "net_cf")


@dataclass(frozen=True)
class Package:
    """A package directory read as the engine reads it: config, declaration, assets, scenarios."""

    root: Path
    config: dict[str, Any]
    interface: ModelInterface
    bounds: dict[tuple[str, str, str], float]
    assets: Assets
    scenarios: ScenarioParams

    @classmethod
    def read(cls, root: Path) -> Package:
        config = json.loads((root / "livecalc.config.json").read_text(encoding="utf-8"))

        def read(path: str) -> bytes | None:
            return (root / path).read_bytes() if (root / path).is_file() else None

        interface, bounds = package_rules(config, read)
        s = config["scenarios"]
        scenarios = ScenarioParams(count=s["count"], seed=s["seed"], a=s["a"], sigma=s["sigma"],
                                   include_base=s["include_base"])  # fmt: skip
        return cls(root, config, interface, dict(bounds), load_assets(interface, read), scenarios)

    def parameter(self, name: str, default: float = 0.0) -> float:
        names = [p.name for p in self.interface.parameters]
        return float(self.assets.parameters[names.index(name)]) if name in names else default

    def records(self, csv: Path) -> Records:
        table: pa.Table = pacsv.read_csv(csv)
        return Records.from_table(table, self.interface, self.bounds)

    def run_inputs(self, records: Records) -> RunInputs:
        return RunInputs(self.interface, records, self.assets, self.scenarios)

    def binaries(self) -> dict[str, bytes]:
        return {p.stem: p.read_bytes() for p in sorted((self.root / "wasm").glob("*.wasm"))}


def discount_factors(valuation_rate: float, shocks: F64) -> F64:
    """DF_s(t), f64 [N][T + 1] for shocks r_s(m) f64 [N][T]."""
    n, months = shocks.shape
    cum = np.concatenate([np.zeros((n, 1)), np.cumsum(shocks, axis=1)], axis=1)
    t = np.arange(months + 1, dtype=np.float64)
    return np.asarray((1.0 + valuation_rate) ** (-t / 12.0) * np.exp(-cum / 12.0), dtype=np.float64)


def endowment_pvs(package: Package, records: Records) -> dict[str, F64]:
    """Each output's present value per policy and scenario, f64 [rows][N]."""
    c = records.columns
    age, sex, term, dur = (np.asarray(c[k], np.int64) for k in ("age_at_entry", "sex", "policy_term", "duration_mth"))
    sum_assured, premium, count = (np.asarray(c[k], np.float64) for k in ("sum_assured", "premium_pp", "policy_count"))
    months = 12 * term - dur
    horizon = int(months.max(initial=0))
    mortality = package.assets.table("mortality")
    q_mth = 1.0 - (1.0 - mortality.values) ** (1.0 / 12.0)
    lapse_mth = 1.0 - (1.0 - package.parameter("lapse_rate")) ** (1.0 / 12.0)
    expense_mth = package.parameter("expense_pp") / 12.0
    claim_expense = package.parameter("claim_expense")
    df = discount_factors(package.parameter("valuation_rate"), reference.esg(package.scenarios, horizon))
    rows, n = len(age), package.scenarios.count
    pols = np.repeat(count[:, None], n, axis=1)
    pv = {name: np.zeros((rows, n)) for name in OUTPUTS}
    for t in range(horizon):
        live = (t < months)[:, None]
        attained = np.clip(age + (dur + t) // 12 - mortality.origin[0], 0, mortality.values.shape[0] - 1)
        deaths = pols * q_mth[attained, sex][:, None]
        pv["premiums"] += np.where(live, premium[:, None] * pols * df[None, :, t], 0.0)
        pv["expenses"] += np.where(live, expense_mth * pols * df[None, :, t], 0.0)
        pv["claims"] += np.where(live, sum_assured[:, None] * deaths * df[None, :, t + 1], 0.0)
        pv["expenses"] += np.where(live, claim_expense * deaths * df[None, :, t + 1], 0.0)
        pols = np.where(live, pols - deaths - (pols - deaths) * lapse_mth, pols)
    pv["maturities"] = sum_assured[:, None] * pols * df[:, months].T
    pv["net_cf"] = pv["premiums"] - pv["claims"] - pv["maturities"] - pv["expenses"]
    return pv
