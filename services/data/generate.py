"""Synthetic policies, any number of rows in bounded memory: term life (docs/datasets.md "term_life") and
savings (lifelib's CashValue_ME, ``savings.interface.json``).

Rows are produced in blocks of BLOCK_ROWS from one seeded numpy PCG64 stream and
written as they are made (CSV, or Parquet with one row group per block), so memory does
not depend on the row count. The same (rows, seed) gives the same rows in either format.

Every row is valid for the reference model: entry ages 20..60, terms 5..30 years (so
age + term ≤ 90 ≤ 121), sum assured 10,000..1,000,000 in steps of 1,000, sex M/F,
policy_count 1. About 85% are new business (duration_mth 0, premium left empty so the
model computes it); the rest are in force with a duration below the term and a premium.

Savings rows (``model="savings"``) follow lifelib's ``generate_100K_model_points`` notebook: the
four products of its ``product_spec_table`` (`SAVINGS_PRODUCTS`: A and B single premium for 10,
15 or 20 years, C and D level premium whole life; B and D with surrender charges), entry ages
20..59, sum assured 10,000..1,000,000 in steps of 1,000, single premium = sum assured, level
premium ⌈sum_assured / (80 − age) / 12 / 100⌉·100 a month, policy_count 1..100. About 70% are
new business (duration_mth 0, no account value); the rest are in force, with a duration below
the term (whole life: below 20 years) and the account value their premiums net of the load
would have built at 2% a year. Every row keeps the declaration's rules.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from services.common.errors import InvalidArgument

BLOCK_ROWS: Final = 65_536
SCHEMA: Final = pa.schema(
    [
        pa.field("policy_id", pa.int64(), nullable=False),
        pa.field("age_at_entry", pa.int64(), nullable=False),
        pa.field("sex", pa.string(), nullable=False),
        pa.field("policy_term", pa.int64(), nullable=False),
        pa.field("policy_count", pa.float64(), nullable=False),
        pa.field("sum_assured", pa.float64(), nullable=False),
        pa.field("duration_mth", pa.int64(), nullable=False),
        pa.field("premium_pp", pa.float64(), nullable=True),
    ]
)


def policy_blocks(rows: int, seed: int, block_rows: int = BLOCK_ROWS) -> Iterator[pa.RecordBatch]:
    """The policies as record batches of at most `block_rows` rows."""
    rng = np.random.Generator(np.random.PCG64(seed))
    sexes = np.array(["M", "F"])
    for start in range(0, rows, block_rows):
        n = min(block_rows, rows - start)
        age = rng.integers(20, 61, n)
        term = rng.integers(5, 31, n)
        sum_assured = rng.integers(10, 1001, n).astype(np.float64) * 1000.0
        in_force = rng.random(n) < 0.15
        duration = np.where(in_force, (rng.random(n) * 12 * term).astype(np.int64), 0)
        # a plausible level premium for in-force policies; computed by the model otherwise
        rate = 0.0002 * np.exp(0.06 * (age + term / 2 - 20))
        premium = np.round(sum_assured * rate / 12 * 1.5, 2)
        yield pa.RecordBatch.from_arrays(
            [
                pa.array(np.arange(start + 1, start + n + 1, dtype=np.int64)),
                pa.array(age),
                pa.array(sexes[rng.integers(0, 2, n)]),
                pa.array(term),
                pa.array(np.ones(n)),
                pa.array(sum_assured),
                pa.array(duration),
                pa.array(premium, mask=~in_force),
            ],
            schema=SCHEMA,
        )


class SavingsProduct(NamedTuple):
    """A row of lifelib CashValue_ME's product_spec_table, as the declaration's product columns."""

    spec_id: str
    premium_type: str
    has_surr_charge: str
    surr_charge_id: str
    load_prem_rate: float
    is_wl: str


SAVINGS_PRODUCTS: Final = (
    SavingsProduct("A", "SINGLE", "false", "none", 0.10, "false"),
    SavingsProduct("B", "SINGLE", "true", "type_1", 0.00, "false"),
    SavingsProduct("C", "LEVEL", "false", "none", 0.10, "true"),
    SavingsProduct("D", "LEVEL", "true", "type_3", 0.05, "true"),
)
WHOLE_LIFE_TERM: Final = 9999
"""policy_term of a whole-life row, as lifelib writes it (the model ignores it: it runs to the
mortality table's last age)."""
SAVINGS_SCHEMA: Final = pa.schema(
    [
        pa.field("policy_id", pa.int64(), nullable=False),
        pa.field("spec_id", pa.string(), nullable=False),
        pa.field("age_at_entry", pa.int64(), nullable=False),
        pa.field("policy_term", pa.int64(), nullable=False),
        pa.field("policy_count", pa.float64(), nullable=False),
        pa.field("sum_assured", pa.float64(), nullable=False),
        pa.field("duration_mth", pa.int64(), nullable=False),
        pa.field("premium_pp", pa.float64(), nullable=False),
        pa.field("av_pp_init", pa.float64(), nullable=False),
        pa.field("premium_type", pa.string(), nullable=False),
        pa.field("has_surr_charge", pa.string(), nullable=False),
        pa.field("surr_charge_id", pa.string(), nullable=False),
        pa.field("load_prem_rate", pa.float64(), nullable=False),
        pa.field("is_wl", pa.string(), nullable=False),
    ]
)


def savings_blocks(rows: int, seed: int, block_rows: int = BLOCK_ROWS) -> Iterator[pa.RecordBatch]:
    """Savings model points as record batches of at most `block_rows` rows."""
    rng = np.random.Generator(np.random.PCG64(seed))
    spec = {f: np.array([getattr(p, f) for p in SAVINGS_PRODUCTS]) for f in SavingsProduct._fields}
    for start in range(0, rows, block_rows):
        n = min(block_rows, rows - start)
        product = rng.integers(0, len(SAVINGS_PRODUCTS), n)
        whole_life = spec["is_wl"][product] == "true"
        level = spec["premium_type"][product] == "LEVEL"
        load = spec["load_prem_rate"][product].astype(np.float64)
        age = rng.integers(20, 60, n)
        term = rng.integers(0, 3, n) * 5 + 10
        sum_assured = rng.integers(10, 1001, n).astype(np.float64) * 1000.0
        policy_count = rng.integers(1, 101, n).astype(np.float64)
        premium = np.where(level, np.ceil(sum_assured / (80 - age) / 12 / 100) * 100, sum_assured)
        in_force = rng.random(n) < 0.3
        years_in_force = np.where(whole_life, 20, term)  # in force for less than the term (whole life: 20 years)
        duration = np.where(in_force, (rng.random(n) * 12 * years_in_force).astype(np.int64) + 1, 0)
        duration = np.minimum(duration, 12 * years_in_force - 1)
        # the account value the premiums net of the load built at 2% a year (a plausible t = 0 value)
        growth = 1.02 ** (duration / 12)
        paid = np.where(level, premium * duration * (1.02 ** (duration / 24)), premium * growth)
        av = np.where(in_force, np.round(paid * (1 - load), 2), 0.0)
        yield pa.RecordBatch.from_arrays(
            [
                pa.array(np.arange(start + 1, start + n + 1, dtype=np.int64)),
                pa.array(spec["spec_id"][product]),
                pa.array(age),
                pa.array(np.where(whole_life, WHOLE_LIFE_TERM, term)),
                pa.array(policy_count),
                pa.array(sum_assured),
                pa.array(duration),
                pa.array(premium),
                pa.array(av),
                pa.array(spec["premium_type"][product]),
                pa.array(spec["has_surr_charge"][product]),
                pa.array(spec["surr_charge_id"][product]),
                pa.array(load),
                pa.array(spec["is_wl"][product]),
            ],
            schema=SAVINGS_SCHEMA,
        )


GENERATORS: Final[dict[str, tuple[pa.Schema, Callable[[int, int], Iterator[pa.RecordBatch]]]]] = {
    "term_life": (SCHEMA, policy_blocks),
    "savings": (SAVINGS_SCHEMA, savings_blocks),
}
"""``--model``: the schema and the row generator of each product's sample policies."""


def generate(path: Path, rows: int, seed: int, model: str = "term_life") -> int:
    """Write `rows` policies of `model` (`GENERATORS`) to `path` (.csv or .parquet); returns the bytes written."""
    if model not in GENERATORS:
        raise InvalidArgument(f"--model must be one of {', '.join(GENERATORS)}, got {model!r}")
    schema, blocks = GENERATORS[model]
    if rows < 0:
        raise InvalidArgument(f"--rows must be ≥ 0, got {rows}")
    if not 0 <= seed < 1 << 64:
        raise InvalidArgument("--seed must be in 0..2^64-1")
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise InvalidArgument(f"--out must end in .csv or .parquet, got {path.name!r}")
    tmp = path.with_name(f".{path.name}.partial")
    try:
        if suffix == ".csv":
            options = pacsv.WriteOptions(quoting_style="needed")
            with pacsv.CSVWriter(tmp, schema, write_options=options) as writer:
                for batch in blocks(rows, seed):
                    writer.write_batch(batch)
        else:
            with pq.ParquetWriter(tmp, schema, compression="snappy") as pwriter:
                for batch in blocks(rows, seed):
                    pwriter.write_batch(batch, row_group_size=BLOCK_ROWS)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path.stat().st_size
