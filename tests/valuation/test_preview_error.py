"""A preview's uncertainty (services/valuation/preview_error.py) on a synthetic portfolio: over
many seeded samples, in the gateway's own groups (`planner.sample_group_rows`), the sampling
interval holds the full run's mean (same scenarios) and the combined interval the portfolio's
expected value (new scenarios each time) at the stated 95 %; and the pieces it is made of."""

from __future__ import annotations

import math

import numpy as np
import pytest

from services.gateway.planner import sample_group_rows
from services.valuation.preview_error import (
    group_variance,
    preview_uncertainty,
    sampling_standard_error,
    t_quantile,
    welch_satterthwaite,
)

pytestmark = pytest.mark.timeout(60)

POLICIES = 40_000
SCENARIOS = 40


def _portfolio(seed: int = 2024) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per policy: a (its value without a shock), b and c (its linear and quadratic response to
    the scenario's shock z ~ N(0, 1)): v = a + b·z + c·z², skewed sizes, some negative values."""
    rng = np.random.default_rng(seed)
    size = rng.lognormal(0.0, 0.8, POLICIES) * 1000.0
    a = size * rng.normal(1.0, 0.6, POLICIES)
    b = size * rng.uniform(0.05, 0.4, POLICIES)
    c = size * rng.uniform(-0.05, 0.05, POLICIES)
    return a, b, c


def _preview(per_policy: np.ndarray) -> tuple[float, object]:
    """The preview's mean and uncertainty from the sampled policies' values [n][N] (in sample
    order), in the groups the gateway asks engines for."""
    n = per_policy.shape[0]
    q = sample_group_rows(n)
    starts = np.arange(0, n, q)
    scaled = per_policy.sum(axis=0) * (POLICIES / n)  # the preview's values by scenario
    group_sums = np.add.reduceat(per_policy.mean(axis=1), starts)
    rows = np.diff(np.append(starts, n))
    stderr = float(np.std(scaled, ddof=1) / math.sqrt(scaled.size))
    u = preview_uncertainty(
        group_sums, rows, population=POLICIES, scenario_standard_error=stderr, scenarios=scaled.size
    )
    return float(scaled.mean()), u


@pytest.mark.parametrize(("n", "groups"), [(1000, 8), (10_000, 10)])
def test_the_sampling_interval_holds_the_full_runs_mean_95_times_in_100(n: int, groups: int) -> None:
    a, b, c = _portfolio()
    z = np.random.default_rng(5).standard_normal(SCENARIOS)
    values = a[:, None] + b[:, None] * z + c[:, None] * z**2  # [policies][scenarios], the scenarios fixed
    full = float(values.sum(axis=0).mean())
    rng = np.random.default_rng(n)
    trials, held = 1000, 0
    for _ in range(trials):
        mean, u = _preview(values[rng.choice(POLICIES, n, replace=False)])  # uniform, uniformly ordered
        assert u is not None and u.groups == groups  # type: ignore[attr-defined]
        held += abs(mean - full) <= u.sampling_half_width  # type: ignore[attr-defined]
    assert 0.925 <= held / trials <= 0.975, held / trials


def test_the_combined_interval_holds_the_expected_value_95_times_in_100() -> None:
    a, b, c = _portfolio()
    expected = float(a.sum() + c.sum())  # E[a + b·z + c·z²] summed
    rng = np.random.default_rng(11)
    trials, held, scenario_share = 1000, 0, []
    for _ in range(trials):
        z = rng.standard_normal(SCENARIOS)  # new scenarios and a new sample each time
        sample = rng.choice(POLICIES, 1000, replace=False)
        mean, u = _preview(a[sample, None] + b[sample, None] * z + c[sample, None] * z**2)
        assert u is not None
        held += abs(mean - expected) <= u.half_width  # type: ignore[attr-defined]
        scenario_share.append(u.scenario_standard_error / u.standard_error)  # type: ignore[attr-defined]
    assert 0.925 <= held / trials <= 0.975, held / trials
    assert 0.3 < float(np.median(scenario_share)) < 0.9  # both parts matter here


def test_groups_of_one_policy_give_the_sample_variance_and_the_whole_dataset_no_sampling_error() -> None:
    v = np.random.default_rng(1).normal(5.0, 2.0, 37)
    assert group_variance(v, np.ones(37)) == pytest.approx(np.var(v, ddof=1), rel=1e-12)
    se = sampling_standard_error(v, np.ones(37), 100)
    assert se == pytest.approx(100 * math.sqrt((1 - 37 / 100) * np.var(v, ddof=1) / 37), rel=1e-12)
    assert sampling_standard_error(v, np.ones(37), 37) == 0.0
    u = preview_uncertainty(v, np.ones(37), population=37, scenario_standard_error=3.0, scenarios=100)
    assert u is not None and u.sampling_half_width == 0.0 and u.degrees_of_freedom == pytest.approx(99)
    assert u.half_width == pytest.approx(t_quantile(0.975, 99) * 3.0)
    assert preview_uncertainty([4.0], [9], population=90, scenario_standard_error=1.0, scenarios=10) is None


def test_t_quantiles_and_welch_satterthwaite() -> None:
    known = {1: 12.706204736, 2: 4.302652730, 7: 2.364624252, 9: 2.262157163, 30: 2.042272456, 100: 1.983971519}
    for df, t in known.items():
        assert t_quantile(0.975, df) == pytest.approx(t, abs=1e-8)
    assert t_quantile(0.975, math.inf) == pytest.approx(1.959963985, abs=1e-9)
    assert t_quantile(0.025, 7) == -t_quantile(0.975, 7)
    assert welch_satterthwaite([(1.0, 9.0), (0.0, 999.0)]) == pytest.approx(9.0)
    assert welch_satterthwaite([(1.0, 9.0), (1.0, 9.0)]) == pytest.approx(18.0)
    assert welch_satterthwaite([(0.0, 9.0)]) == math.inf
