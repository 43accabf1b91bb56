"""Synthetic term-life policies (MODEL.md "Inputs"), any number of rows in bounded memory.

Rows are produced in blocks of BLOCK_ROWS from one seeded numpy PCG64 stream and
written as they are made (CSV, or Parquet with one row group per block), so memory does
not depend on the row count. The same (rows, seed) gives the same rows in either format.

Every row is valid for the reference model: entry ages 20..60, terms 5..30 years (so
age + term ≤ 90 ≤ 121), sum assured 10,000..1,000,000 in steps of 1,000, sex M/F,
policy_count 1. About 85% are new business (duration_mth 0, premium left empty so the
model computes it); the rest are in force with a duration below the term and a premium.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Final

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


def generate(path: Path, rows: int, seed: int) -> int:
    """Write `rows` policies to `path` (.csv or .parquet); returns the bytes written."""
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
            with pacsv.CSVWriter(tmp, SCHEMA, write_options=options) as writer:
                for batch in policy_blocks(rows, seed):
                    writer.write_batch(batch)
        else:
            with pq.ParquetWriter(tmp, SCHEMA, compression="snappy") as pwriter:
                for batch in policy_blocks(rows, seed):
                    pwriter.write_batch(batch, row_group_size=BLOCK_ROWS)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path.stat().st_size
