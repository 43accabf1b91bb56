"""The uncertainty of a preview's mean: policy sampling and scenarios (job.proto PreviewUncertainty).

A preview values a uniform sample (without replacement) of n of the dataset's R policies and
scales by R/n, so its mean over the N scenarios is P̂ = (R/n)·Σ_{i∈sample} v̄_i, with v̄_i policy
i's mean over the scenarios. Two errors separate P̂ from what it stands for:

- **policy sampling**: against a full run on the same scenarios (F = Σ_{all i} v̄_i) only the
  sample differs: Var(P̂ − F) = R²·(1 − n/R)·σ²/n, σ² the variance of v̄_i over the dataset
  (ddof 1; the finite population correction 1 − n/R makes it 0 for a sample of every policy);
- **scenarios**: F itself estimates the portfolio's expected value over the scenario
  distribution with the standard error std/√N of the portfolio values over scenarios, which the
  preview's own scaled values estimate. The two parts are uncorrelated (given the scenarios,
  the sample is unbiased for F), so their variances add.

Engines do not report per-policy values (the model ABI sums policies in blocks), but the
sample's order is uniformly random, so consecutive sample positions form *random groups*
(engine.proto SampleSelection). With G groups of m_g policies and group sums b_g,

    s² = Σ_g (b_g − m_g·ȳ)² / m_g / (G − 1),   ȳ = Σ_g b_g / n,

is unbiased for the sample variance of the v̄_i (each group is a simple random sample of the
sample: E(b_g − m_g·ȳ)² = m_g·(1 − m_g/n)·s², and Σ_g (1 − m_g/n) = G − 1), hence for σ². Under
normal group sums it has G − 1 degrees of freedom, so the sampling interval takes Student's t
quantile with G − 1 degrees of freedom; both parts together take the Welch–Satterthwaite
degrees of freedom. With one policy per group this is the ordinary sample variance of v̄_i.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Final

import numpy as np
import numpy.typing as npt

from services.common.errors import InvalidArgument

#: Confidence level of the reported intervals.
CONFIDENCE: Final = 0.95


@dataclass(frozen=True)
class PreviewUncertainty:
    """Standard errors, degrees of freedom and interval half-widths of a preview's mean."""

    confidence: float
    sampling_standard_error: float
    scenario_standard_error: float
    standard_error: float
    #: The interval mean ± half_width holds the portfolio's expected value (both parts).
    half_width: float
    #: The interval mean ± sampling_half_width holds a full run's mean on the same scenarios.
    sampling_half_width: float
    groups: int
    sampling_degrees_of_freedom: float
    degrees_of_freedom: float


def group_variance(group_sums: npt.ArrayLike, group_rows: npt.ArrayLike) -> float:
    """s², the random-group estimate of the per-policy variance (ddof 1) from G ≥ 2 group sums
    and their policy counts (see the module docstring)."""
    b = np.asarray(group_sums, dtype=np.float64)
    m = np.asarray(group_rows, dtype=np.float64)
    if b.ndim != 1 or b.shape != m.shape or b.size < 2 or not np.all(m >= 1):
        raise InvalidArgument(f"need ≥ 2 groups of ≥ 1 policy: sums {b.shape}, rows {m.tolist()[:8]}")
    y = float(b.sum() / m.sum())
    return float(np.sum((b - m * y) ** 2 / m) / (b.size - 1))


def sampling_standard_error(group_sums: npt.ArrayLike, group_rows: npt.ArrayLike, population: int) -> float:
    """Standard error of (population/n)·Σ v̄_i over the sample (n = Σ group_rows) from policy
    sampling without replacement: population·√((1 − n/population)·s²/n)."""
    n = int(np.sum(group_rows))
    if not 1 <= n <= population:
        raise InvalidArgument(f"a sample of {n} policies from {population}")
    return population * math.sqrt(max(0.0, 1.0 - n / population) * group_variance(group_sums, group_rows) / n)


def welch_satterthwaite(parts: list[tuple[float, float]]) -> float:
    """Degrees of freedom of √(Σ se²) from (se, degrees of freedom) parts; parts with se 0 count
    for nothing (inf when every part is 0)."""
    total = sum(se * se for se, _ in parts)
    spread = sum(se**4 / df for se, df in parts if se > 0)
    return math.inf if spread == 0 else total * total / spread


def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t with ``df`` > 0 degrees of freedom (the normal's for inf):
    Newton's method on the tail probability, kept within a bracket by bisection."""
    if not 0.0 < p < 1.0 or not df > 0:
        raise InvalidArgument(f"t quantile at p = {p} with {df} degrees of freedom")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    if p == 0.5:
        return 0.0
    z = NormalDist().inv_cdf(p)
    if math.isinf(df) or df > 1e7:
        return z
    tail = 1.0 - p
    lo, hi = 0.0, max(2.0 * z, 1.0)
    while _t_tail(hi, df) > tail:
        lo, hi = hi, 2.0 * hi
    log_density = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    x = min(max(z + (z**3 + z) / (4 * df), lo), hi)  # Cornish–Fisher's first term, in the bracket
    for _ in range(100):
        excess = _t_tail(x, df) - tail  # > 0: x is below the quantile
        if excess > 0:
            lo = x
        else:
            hi = x
        density = math.exp(log_density - (df + 1) / 2 * math.log1p(x * x / df))
        step = excess / density
        nxt = x + step
        if not lo < nxt < hi:
            nxt = 0.5 * (lo + hi)
        if abs(nxt - x) <= 1e-14 * max(1.0, x):
            return nxt
        x = nxt
    return x


def _t_tail(t: float, df: float) -> float:
    """P(T > t) for t ≥ 0: I_{df/(df+t²)}(df/2, 1/2) / 2."""
    return 0.5 * _beta_regularized(df / 2.0, 0.5, df / (df + t * t))


def _beta_regularized(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b) (continued fraction, Lentz's method)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_fraction(a, b, x) / a
    return 1.0 - front * _beta_fraction(b, a, 1.0 - x) / b


def _beta_fraction(a: float, b: float, x: float) -> float:
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000):
        for num in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-16:
            break
    return h


def preview_uncertainty(
    group_sums: npt.ArrayLike,
    group_rows: npt.ArrayLike,
    *,
    population: int,
    scenario_standard_error: float,
    scenarios: int,
    confidence: float = CONFIDENCE,
) -> PreviewUncertainty | None:
    """The uncertainty of a preview's mean from its groups (each group's sum, a mean over the
    scenarios, unscaled; and its policies), the dataset's policies, and the standard error of the
    preview's scaled values over its ``scenarios``; None for fewer than two groups (nothing
    measures the sampling error)."""
    groups = int(np.asarray(group_sums).size)
    if groups < 2:
        return None
    sampling = sampling_standard_error(group_sums, group_rows, population)
    scenario = float(scenario_standard_error) if scenarios > 1 else 0.0
    sampling_df, scenario_df = float(groups - 1), float(max(1, scenarios - 1))
    total = math.hypot(sampling, scenario)
    df = welch_satterthwaite([(sampling, sampling_df), (scenario, scenario_df)])
    level = 0.5 + confidence / 2.0
    return PreviewUncertainty(
        confidence=confidence,
        sampling_standard_error=sampling,
        scenario_standard_error=scenario,
        standard_error=total,
        half_width=t_quantile(level, df) * total,
        sampling_half_width=t_quantile(level, sampling_df) * sampling,
        groups=groups,
        sampling_degrees_of_freedom=sampling_df,
        degrees_of_freedom=df,
    )
