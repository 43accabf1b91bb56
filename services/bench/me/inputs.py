"""``bench me``'s inputs: BasicTerm_ME's assumptions, the package that values one base scenario, the tiled points.

The package is the reference one (esg → term_life) with BasicTerm_ME's own tables and scalars as
its assumption files and one scenario, the base one: lifelib's flat discount curve, no shocks.
The dataset is BasicTerm_ME's model points (lifelib's premium per policy given) repeated
``multiplier`` times with policy ids renumbered 1…rows, so every row stays unique, written as
Parquet in row groups as the data service reads them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Final

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from services.bench.me.lifelib_oracle import LifelibME
from services.data.generate import BLOCK_ROWS, SCHEMA
from services.valuation.assumption_files import assumption_files
from services.valuation.assumptions import Assumptions

LAPSE_YEARS: Final = 6
"""BasicTerm_ME's lapse max(0.1 − 0.02·y, 0.02) for y = 0…5; from year 5 on 0.02, carried forward."""
ROWS_PER_WRITE: Final = 1 << 20
"""Copies of the points are written about this many rows at a time (memory stays bounded at any multiplier)."""


def me_assumptions(me: LifelibME) -> Assumptions:
    """BasicTerm_ME's mortality (by attained age and select year), discount curve, lapse and
    scalars (acquisition, maintenance, inflation, loading; commissions 100 % of year-0 premiums;
    no sex multiplier, no dynamic lapse)."""
    acq, maint, inflation, loading = me.scalars
    return Assumptions(
        mortality=me.mortality,
        mortality_min_age=me.mortality_min_age,
        lapse=np.array([max(0.1 - 0.02 * y, 0.02) for y in range(LAPSE_YEARS)]),
        expense_acq=acq,
        expense_maint=maint,
        inflation=inflation,
        commission_rate=1.0,
        premium_loading=loading,
        curve=me.curve,
    )


def build_package(dest: Path, assumptions: Assumptions) -> bytes:
    """The reference package with ``assumptions`` and one base scenario, as archive bytes."""
    from services.valuation.packages.manifest import CONFIG  # noqa: PLC0415
    from services.valuation.packages.package import build_directory  # noqa: PLC0415
    from services.valuation.packages.reference import config_bytes, init_directory  # noqa: PLC0415

    init_directory(dest)
    for name, data in assumption_files(assumptions).items():
        (dest / "assumptions" / name).write_bytes(data)
    config = json.loads((dest / CONFIG).read_text(encoding="utf-8"))
    config["name"] = "basic-term-me"
    config["scenarios"] = {**config["scenarios"], "count": 1, "include_base": True}
    (dest / CONFIG).write_bytes(config_bytes(config))
    archive, _ = build_directory(dest, source_date_epoch=0)
    return archive


def points_table(me: LifelibME, points: int) -> pa.Table:
    """The first ``points`` model points as the term-life dataset schema (policy ids lifelib's)."""
    columns = {
        "policy_id": me.policy_id[:points],
        **{name: values[:points] for name, values in me.points.items()},
        "premium_pp": me.premium_pp[:points],
    }
    return pa.Table.from_arrays([pa.array(columns[f.name], type=f.type) for f in SCHEMA], schema=SCHEMA)


def write_tiled(path: Path, base: pa.Table, multiplier: int) -> int:
    """``base`` repeated ``multiplier`` times to ``path`` (Parquet), policy ids 1…rows; returns the rows."""
    n = int(base.num_rows)
    copies = max(1, min(multiplier, ROWS_PER_WRITE // max(n, 1)))
    chunk = pa.concat_tables([base] * copies)
    ids = SCHEMA.get_field_index("policy_id")
    tmp = path.with_name(f".{path.name}.partial")
    try:
        with pq.ParquetWriter(tmp, SCHEMA, compression="snappy") as writer:
            done = 0
            while done < multiplier:
                take = min(copies, multiplier - done)
                part = chunk if take == copies else pa.concat_tables([base] * take)
                first = done * n + 1
                renumbered = pa.array(np.arange(first, first + part.num_rows, dtype=np.int64))
                writer.write_table(part.set_column(ids, SCHEMA.field(ids), renumbered), row_group_size=BLOCK_ROWS)
                done += take
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return n * multiplier
