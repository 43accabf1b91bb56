"""Seeded synthetic model points for tests and benchmarks (lifelib basiclife's ranges).

Ages 20–59 at entry, terms of 10, 15 or 20 years, sum assured 10,000–1,000,000; with
``in_force`` > 0 that share of policies is already in force (duration_mth > 0, premium given).
"""

from __future__ import annotations

import numpy as np

from services.valuation.policies import Policies


def synthetic_policies(n: int, seed: int = 1, *, in_force: float = 0.0) -> Policies:
    """``n`` policies drawn with numpy's PCG64 from ``seed``; new business computes its premium."""
    rng = np.random.default_rng(seed)
    term = rng.choice(np.array([10, 15, 20], dtype=np.int32), size=n)
    inforce = rng.random(n) < in_force
    duration = np.where(inforce, (rng.random(n) * 12 * term).astype(np.int32), 0)
    premium = np.where(duration > 0, np.round(rng.uniform(10.0, 500.0, n), 2), np.nan)
    return Policies(
        policy_id=np.arange(1, n + 1, dtype=np.int64),
        age_at_entry=rng.integers(20, 60, size=n, dtype=np.int32),
        female=rng.integers(0, 2, size=n, dtype=np.int8),
        policy_term=term,
        policy_count=rng.integers(1, 101, size=n).astype(np.float64),
        sum_assured=np.round(rng.uniform(10_000, 1_000_000, n), -3),
        duration_mth=duration.astype(np.int32),
        premium_pp=premium,
    )
