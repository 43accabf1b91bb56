"""The numpy scenario generator (python://esg) against docs/model.md: counters, subsets, OU moments."""

from __future__ import annotations

import math

import numpy as np
import pytest

from services.engine import reference as ref
from services.valuation.errors import ModelInputError
from services.valuation.scenarios import ScenarioParams

MASK64 = (1 << 64) - 1


def _mix_int(z: int) -> int:
    """docs/model.md's mix on Python ints, an implementation independent of numpy's uint64."""
    z ^= z >> 30
    z = (z * 0xBF58476D1CE4E5B9) & MASK64
    z ^= z >> 27
    z = (z * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def _uniform_int(seed: int, s: int, k: int) -> float:
    counter = (((s % 2**32) << 32) | (k % 2**32)) + 0x9E3779B97F4A7C15
    bits = _mix_int(_mix_int(seed) ^ _mix_int(counter & MASK64))
    return ((bits >> 11) + 0.5) * 2.0**-53


def _shock_path_scalar(params: ScenarioParams, s: int, months: int) -> list[float]:
    """r_s(0 … months−1) with math's libm, one scenario, straight from docs/model.md."""
    phi = math.exp(-params.a / 12)
    sigma_m = params.sigma * math.sqrt((1 - phi * phi) / (2 * params.a))
    r = [0.0]
    for m in range(months - 1):
        u1, u2 = _uniform_int(params.seed, s, 2 * (m // 2)), _uniform_int(params.seed, s, 2 * (m // 2) + 1)
        rho = math.sqrt(-2 * math.log(u1))
        z = rho * (math.cos(2 * math.pi * u2) if m % 2 == 0 else math.sin(2 * math.pi * u2))
        r.append(phi * r[-1] + sigma_m * z)
    return r


@pytest.mark.parametrize("seed", [0, 1, 0x0123456789ABCDEF, MASK64])
def test_uniforms_equal_an_independent_integer_implementation(seed: int) -> None:
    scenarios = np.array([0, 1, 7, 2**32 - 1, 2**32 + 5], dtype=np.uint64).reshape(-1, 1)
    counters = np.array([0, 1, 2, 3, 1000, 2**32 - 1], dtype=np.uint64).reshape(1, -1)
    got = ref.uniforms(seed, scenarios, counters)
    want = [[_uniform_int(seed, int(s), int(k)) for k in counters[0]] for s in scenarios[:, 0]]
    np.testing.assert_array_equal(got, want)
    assert np.all((got > 0) & (got < 1))


def test_mix_golden_values() -> None:
    # mix(0) = 0 is a fixed point of the finalizer; mix(1) is SplitMix64's published first step
    # applied to 1, checked here against the integer implementation.
    got = ref.mix(np.array([0, 1, MASK64], dtype=np.uint64))
    assert got.tolist() == [0, _mix_int(1), _mix_int(MASK64)]


def test_shocks_follow_the_ou_recursion_of_model_md() -> None:
    params = ScenarioParams(count=6, seed=42, a=0.15, sigma=0.02, include_base=False)
    got = ref.esg(params, 37)
    assert got.shape == (6, 37)
    for s in range(6):
        np.testing.assert_allclose(got[s], _shock_path_scalar(params, s, 37), rtol=1e-12, atol=1e-18)
    assert np.all(got[:, 0] == 0.0)


def test_base_scenario_is_zero_only_when_included() -> None:
    with_base = ref.esg(ScenarioParams(count=3, seed=5), 24)
    without = ref.esg(ScenarioParams(count=3, seed=5, include_base=False), 24)
    assert np.all(with_base[0] == 0.0)
    assert np.any(without[0] != 0.0)
    np.testing.assert_array_equal(with_base[1:], without[1:])


def test_a_scenario_alone_equals_it_among_a_thousand() -> None:
    params = ScenarioParams(count=1000, seed=2024)
    every = ref.esg(params, 121)
    for s in (0, 1, 2, 499, 998, 999):
        alone = ref.esg(params, 121, scenarios=[s])
        np.testing.assert_array_equal(alone[0], every[s])
    picked = [999, 3, 500, 3, 0]
    np.testing.assert_array_equal(ref.esg(params, 121, scenarios=picked), every[picked])
    # nor does the horizon change a path's first months
    np.testing.assert_array_equal(ref.esg(params, 50)[:, :50], every[:, :50])


def test_scenario_rows_do_not_depend_on_count() -> None:
    small = ref.esg(ScenarioParams(count=10, seed=9), 60)
    large = ref.esg(ScenarioParams(count=1000, seed=9), 60, scenarios=range(10))
    np.testing.assert_array_equal(small, large)


def test_scenario_selection_is_validated() -> None:
    with pytest.raises(ModelInputError, match=r"index 10 is not in 0\.\.9"):
        ref.esg(ScenarioParams(count=10), 12, scenarios=[3, 10])
    with pytest.raises(ModelInputError, match="months"):
        ref.esg(ScenarioParams(count=10), -1)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"count": 0},
        {"count": 1, "seed": -1},
        {"count": 1, "seed": 2**64},
        {"count": 1, "a": 0.0},
        {"count": 1, "sigma": -0.1},
    ],
)
def test_scenario_params_are_validated(kwargs: dict[str, float]) -> None:
    with pytest.raises(ModelInputError):
        ScenarioParams(**kwargs)  # type: ignore[arg-type]


def test_normals_have_unit_moments() -> None:
    z = ref.normals(7, np.arange(2000), 64).ravel()
    n = z.size
    assert abs(z.mean()) < 4 / math.sqrt(n)
    assert abs(z.var(ddof=1) - 1.0) < 4 * math.sqrt(2 / (n - 1))


@pytest.mark.parametrize(("a", "sigma"), [(0.1, 0.01), (0.5, 0.03)])
def test_shock_moments_match_the_ornstein_uhlenbeck_closed_form(a: float, sigma: float) -> None:
    """E r(m) = 0 and Var r(m) = σ_m²(1 − φ^{2m})/(1 − φ²), within 4.5 Monte Carlo standard errors."""
    n = 4000
    params = ScenarioParams(count=n, seed=123_456_789, a=a, sigma=sigma, include_base=False)
    shocks = ref.esg(params, 361)
    phi, sigma_m = ref.ou_phi(a), ref.ou_sigma_mth(a, sigma)
    assert sigma_m == pytest.approx(sigma * math.sqrt((1 - math.exp(-a / 6)) / (2 * a)), rel=1e-14)
    for m in (1, 2, 12, 60, 120, 360):
        var = sigma_m**2 * (1 - phi ** (2 * m)) / (1 - phi**2)
        r = shocks[:, m]
        mean_se = math.sqrt(var / n)
        var_se = var * math.sqrt(2 / (n - 1))  # r(m) is Gaussian
        assert abs(r.mean()) < 4.5 * mean_se, (m, r.mean(), mean_se)
        assert abs(r.var(ddof=1) - var) < 4.5 * var_se, (m, r.var(ddof=1), var)
