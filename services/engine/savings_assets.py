"""lifelib savings CashValue_ME's assumptions as the savings model's asset files, and its model
points as rows of the savings declaration.

The savings model (``services/valuation/reference_model/savings.interface.json``) ships its
assumptions under ``savings_assumptions/`` (``assumptions/`` in its package); ``main()``
regenerates them from the installed lifelib (``python -m services.engine.savings_assets``) and a
test fails when they are stale. UTF-8, ``\\n`` line ends, floats written with ``repr``:

``mortality.csv``
    ``age,0,1,…,5``: annual q by attained age and select year, lifelib's ``mort_table`` from its
    first age to ``mort_table_last_age()`` (the first age whose rates are all 1, 115), which is
    where whole-life policies end; the rows beyond it are all 1 and never read.
``lapse.csv``
    ``year,rate``: lifelib's ``lapse_rate`` max(0.1 − 0.02·y, 0.02) for y = 0 … 5 in floats, the
    last carried forward.
``surr_charge.csv``
    ``policy_year,1,2,3``: lifelib's ``surr_charge_table`` (columns type_1 … type_3 labelled 1 … 3,
    the codes of ``surr_charge_id``), by policy year 0 … 10, the last carried forward.
``curve.csv``
    ``year,rate``: lifelib's ``disc_rate_ann``, annual zero-spot rates.
``basis.json``
    the scalars CashValue_ME writes in its formulas: investment return μ 0.02 and σ 0.03
    (``inv_return_table``), maintenance fee 1 % a year of the account value (``maint_fee_rate``
    0.01/12 a month), cost of insurance 1.1 × monthly mortality (``coi_rate``), acquisition 5000
    per new policy, maintenance 500 a year per policy, inflation 1 %, commissions 5 % of premiums.

Model points: CashValue_ME joins its ``model_point_table`` with ``product_spec_table`` on
``spec_id`` (``model_point_table_ext``); `model_point_rows` does the same into the declared
columns, product features per row (the declaration's tables are numeric, so the product table
travels with the policies; dataset columns not declared, such as ``spec_id`` and ``sex``, are
ignored).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Final

import numpy as np
import pyarrow as pa

from services.valuation.assumption_files import asset_csv
from services.valuation.reference_model import savings_assumptions_dir

BASIS: Final = {
    "inv_return": {"mean": 0.02, "vol": 0.03},
    "charges": {"maint_fee_rate": 0.01, "coi_loading": 1.1},
    "expenses": {"acquisition": 5000.0, "maintenance": 500.0, "inflation": 0.01, "commission_rate": 0.05},
}
"""CashValue_ME's scalar assumptions, as its formulas state them."""
LAPSE_YEARS: Final = 6
"""max(0.1 − 0.02·y, 0.02) is 0.02 from y = 5 on (y = 4 gives 0.020000000000000004)."""
SURR_CHARGE_TYPES: Final = ("type_1", "type_2", "type_3")
"""lifelib's surrender charge ids; type_k is column k of ``surr_charge.csv`` and category code k."""


def lifelib_savings_dir(model: str = "CashValue_ME") -> Path:
    """The installed lifelib's ``libraries/savings/<model>`` folder (needs the lifelib package)."""
    import lifelib  # noqa: PLC0415  # lazily: lifelib is a development dependency

    return Path(lifelib.__file__).parent / "libraries" / "savings" / model


def _read_excel(name: str) -> Any:
    import pandas as pd  # type: ignore[import-untyped]  # noqa: PLC0415  # lazily: a development dependency

    return pd.read_excel(lifelib_savings_dir() / f"{name}.xlsx", index_col=0)


def last_age(mort: Any) -> int:
    """lifelib's ``mort_table_last_age``: the first age whose rates are all 1, else the last age."""
    for age in mort.index:
        if (mort.loc[age] == 1).all():
            return int(age)
    return int(mort.index[-1])


def savings_asset_files() -> dict[str, bytes]:
    """The savings model's asset files from the installed lifelib (name → bytes); see the module
    docstring. Needs lifelib, pandas and openpyxl."""
    mort = _read_excel("mort_table")
    mort = mort[sorted(mort.columns, key=int)]
    ages = [int(a) for a in mort.index]
    if ages != list(range(ages[0], ages[0] + len(ages))):
        raise ValueError("lifelib's mort_table ages are not consecutive")
    mort = mort.loc[: last_age(mort)]
    surr = _read_excel("surr_charge_table")
    if list(surr.columns) != list(SURR_CHARGE_TYPES) or list(surr.index) != list(range(len(surr))):
        raise ValueError(f"lifelib's surr_charge_table is not type_1..type_3 by duration 0..: {list(surr.columns)}")
    disc = _read_excel("disc_rate_ann")
    if [int(y) for y in disc.index] != list(range(len(disc))):
        raise ValueError("lifelib's disc_rate_ann years do not run 0, 1, …")
    lapse = [max(0.1 - 0.02 * y, 0.02) for y in range(LAPSE_YEARS)]
    return {
        "basis.json": (json.dumps(BASIS, indent=2) + "\n").encode("utf-8"),
        "curve.csv": asset_csv(["year", "rate"], ([y, float(r)] for y, r in enumerate(disc.iloc[:, 0]))),
        "lapse.csv": asset_csv(["year", "rate"], ([y, r] for y, r in enumerate(lapse))),
        "mortality.csv": asset_csv(
            ["age", *(str(c) for c in mort.columns)],
            ([int(age), *(float(v) for v in row)] for age, row in zip(mort.index, mort.to_numpy(), strict=True)),
        ),
        "surr_charge.csv": asset_csv(
            ["policy_year", *(str(k + 1) for k in range(len(SURR_CHARGE_TYPES)))],
            ([int(y), *(float(v) for v in row)] for y, row in zip(surr.index, surr.to_numpy(), strict=True)),
        ),
    }


def model_point_rows(model_points: Any, product_spec: Any) -> pa.Table:
    """lifelib model points (a DataFrame indexed by point id, CashValue_ME's columns) joined with a
    product table (indexed by spec_id: premium_type, has_surr_charge, surr_charge_id,
    load_prem_rate, is_wl) as a table of the savings declaration's columns."""
    joined = model_points.join(product_spec, on="spec_id")
    if joined["premium_type"].isna().any():
        raise ValueError("model points name a spec_id the product table lacks")
    surr_id = joined["surr_charge_id"].where(joined["surr_charge_id"].notna(), "none")
    return pa.table({
        "policy_id": joined.index.to_numpy(dtype=np.int64),
        "spec_id": joined["spec_id"].astype(str).to_numpy(),
        "age_at_entry": joined["age_at_entry"].to_numpy(dtype=np.int64),
        "policy_term": joined["policy_term"].to_numpy(dtype=np.int64),
        "policy_count": joined["policy_count"].to_numpy(dtype=np.float64),
        "sum_assured": joined["sum_assured"].to_numpy(dtype=np.float64),
        "duration_mth": joined["duration_mth"].to_numpy(dtype=np.int64),
        "premium_pp": joined["premium_pp"].to_numpy(dtype=np.float64),
        "av_pp_init": joined["av_pp_init"].to_numpy(dtype=np.float64),
        "premium_type": joined["premium_type"].astype(str).to_numpy(),
        "has_surr_charge": np.where(joined["has_surr_charge"].to_numpy(dtype=bool), "true", "false"),
        "surr_charge_id": surr_id.astype(str).to_numpy(),
        "load_prem_rate": joined["load_prem_rate"].to_numpy(dtype=np.float64),
        "is_wl": np.where(joined["is_wl"].to_numpy(dtype=bool), "true", "false"),
    })  # fmt: skip


def lifelib_sample_rows() -> pa.Table:
    """CashValue_ME's 4 sample model points (``model_point_samples.xlsx``) as savings rows."""
    return model_point_rows(_read_excel("model_point_samples"), _read_excel("product_spec_table"))


def lifelib_std_norm() -> Any:
    """CashValue_ME's ``std_norm_rand`` as f64 [scenario][month] (scen_id 1 … 10 → rows 0 … 9, t 0 … 1800)."""
    import pandas as pd  # noqa: PLC0415  # lazily: a development dependency

    draws = pd.readasset_csv(lifelib_savings_dir() / "std_norm_rand.csv", index_col=[0, 1]).iloc[:, 0]
    return draws.unstack("t").sort_index().to_numpy(dtype=np.float64)


def write_files(files: dict[str, bytes], directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in files.items():
        path = directory / name
        path.write_bytes(data)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    """Regenerate the savings model's asset files from lifelib: ``python -m services.engine.savings_assets``."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--out", type=Path, help="folder to write the files into (default: the shipped ones)")
    args = parser.parse_args(argv)
    with savings_assumptions_dir() as shipped:
        for path in write_files(savings_asset_files(), args.out or shipped):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
