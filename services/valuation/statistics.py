"""Statistics and the result hash of a valuation's scenario vector (docs/model.md "Statistics", "Result hash").

Pure numpy: the gateway's merge, the engine's local runs and the reference tests share this
one definition.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Final

import numpy as np
import numpy.typing as npt

from services.common.errors import InvalidArgument

PERCENTILES: Final = (0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5)
"""Reported percentiles p (in %), by linear interpolation at position p/100·(N−1) of the sorted values."""

CTE_LEVELS: Final = (70.0, 90.0, 95.0, 99.0)
"""Reported CTE levels α (in %): the mean of the ⌈(1 − α/100)·N⌉ lowest values."""


@dataclass(frozen=True)
class Statistics:
    """Summary of N scenario values; ``percentiles`` and ``cte`` pair each level (in %) with its value."""

    count: int
    mean: float
    std: float
    stderr: float
    min: float
    max: float
    percentiles: tuple[tuple[float, float], ...]
    cte: tuple[tuple[float, float], ...]

    def percentile(self, p: float) -> float:
        """The reported percentile at level p (one of PERCENTILES)."""
        return dict(self.percentiles)[p]

    def cte_at(self, alpha: float) -> float:
        """The reported CTE at level α (one of CTE_LEVELS)."""
        return dict(self.cte)[alpha]


def _as_values(values: npt.ArrayLike) -> npt.NDArray[np.float64]:
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size < 1:
        raise InvalidArgument(f"need a non-empty vector of scenario values, got shape {v.shape}")
    return v


def std(values: npt.ArrayLike) -> float:
    """Sample standard deviation, ddof = 1; 0 when N = 1."""
    v = _as_values(values)
    return float(np.std(v, ddof=1)) if v.size > 1 else 0.0


def stderr(values: npt.ArrayLike) -> float:
    """Standard error of the mean: std/√N."""
    v = _as_values(values)
    return std(v) / math.sqrt(v.size)


def percentile(values: npt.ArrayLike, p: float) -> float:
    """Linear interpolation at position p/100·(N−1) of the sorted values (numpy's default method)."""
    return float(np.percentile(_as_values(values), p))


def cte_count(n: int, alpha: float) -> int:
    """k = ⌈(1 − α/100)·N⌉, at least 1: how many lowest values CTE_α averages.

    The product is formed from the exact fraction (100 − α)·N/100 so that, e.g., α = 70 and
    N = 10 gives k = 3 (the float 0.3·10 would give 3.0000000000000004 and k = 4).
    """
    exact = (Fraction(100) - Fraction(alpha)) * n / 100
    return max(1, math.ceil(exact))


def cte(values: npt.ArrayLike, alpha: float) -> float:
    """CTE_α: the mean of the k = ⌈(1 − α/100)·N⌉ lowest values (the insurer's adverse tail), k ≥ 1."""
    v = np.sort(_as_values(values))
    return float(np.mean(v[: cte_count(v.size, alpha)]))


def statistics(values: npt.ArrayLike) -> Statistics:
    """Mean, std (ddof 1), stderr, min, max, PERCENTILES and CTE_LEVELS of the scenario values."""
    v = _as_values(values)
    ordered = np.sort(v)
    pct = np.percentile(ordered, PERCENTILES)
    return Statistics(
        count=int(v.size),
        mean=float(np.mean(v)),
        std=std(v),
        stderr=stderr(v),
        min=float(ordered[0]),
        max=float(ordered[-1]),
        percentiles=tuple((p, float(x)) for p, x in zip(PERCENTILES, pct, strict=True)),
        cte=tuple((a, float(np.mean(ordered[: cte_count(v.size, a)]))) for a in CTE_LEVELS),
    )


def result_hash(values: npt.ArrayLike) -> str:
    """SHA-256 (hex) of the values as little-endian float64, in scenario order."""
    v = np.ascontiguousarray(np.asarray(values, dtype=np.float64).reshape(-1), dtype="<f8")
    return hashlib.sha256(v.tobytes()).hexdigest()


def relative_difference(estimate: float, reference: float) -> float:
    """(estimate − reference) / |reference|: how far a preview's mean is from the full run's
    (JobResult.preview_relative_difference, the client's comparison).

    A zero reference has no finite ratio to anything else: 0 when the estimate is 0 too, else
    ±inf with the sign of the difference (the estimate's)."""
    if reference == 0:
        return 0.0 if estimate == 0 else math.copysign(math.inf, estimate)
    return (estimate - reference) / abs(reference)
