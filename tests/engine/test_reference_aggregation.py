"""The reference summation order (block partials, block fold), statistics and the result hash."""

from __future__ import annotations

import hashlib
import itertools
import math
import struct

import numpy as np
import pytest

from services.common.errors import InvalidArgument
from services.engine import reference as ref
from services.valuation.arrays import F64
from services.valuation.blocks import fold
from services.valuation.statistics import CTE_LEVELS, PERCENTILES, cte, cte_count, result_hash, statistics


@pytest.fixture(scope="module")
def values() -> F64:
    # widely varying magnitudes make the summation order visible in the last bits
    rng = np.random.default_rng(3)
    return rng.standard_normal((5000, 7)) * 10.0 ** rng.integers(-3, 9, (5000, 1))


def _sequential(rows: list[float]) -> float:
    acc = 0.0
    for x in rows:
        acc += x
    return acc


def test_block_partials_are_sequential_sums_in_row_order(values: F64) -> None:
    partials = ref.block_partials(values, 1024)
    assert partials.shape == (5, 7)
    for b in range(5):
        for s in range(7):
            assert partials[b, s] == _sequential(values[b * 1024 : (b + 1) * 1024, s].tolist())


def test_portfolio_is_the_left_fold_of_blocks(values: F64) -> None:
    partials = ref.block_partials(values)
    total = ref.portfolio(values)
    for s in range(7):
        assert total[s] == _sequential(partials[:, s].tolist())
    # why the order is fixed: other orders (here, the reversed one) differ in the last bits
    assert not np.array_equal(total, ref.portfolio(values[::-1]))


@pytest.mark.parametrize("cuts", [[1024], [2048, 3072], [1024, 2048, 3072, 4096]])
def test_block_partials_are_split_invariant(values: F64, cuts: list[int]) -> None:
    """Chunks whose bounds are multiples of B give the same partials, hence the same bits."""
    whole = ref.block_partials(values)
    bounds = [0, *cuts, values.shape[0]]
    chunks = [ref.block_partials(values[lo:hi]) for lo, hi in itertools.pairwise(bounds)]
    np.testing.assert_array_equal(np.concatenate(chunks), whole)
    assert result_hash(fold(np.concatenate(chunks))) == result_hash(ref.portfolio(values))


def test_block_partials_of_a_partial_last_block_and_bad_input() -> None:
    v = np.arange(5.0).reshape(5, 1)
    np.testing.assert_array_equal(ref.block_partials(v, 2), [[1.0], [5.0], [4.0]])
    with pytest.raises(ValueError, match="policies, scenarios"):
        ref.block_partials(np.zeros(3))
    with pytest.raises(ValueError, match="block_size"):
        ref.block_partials(v, 0)


def test_statistics_hand_checked_small_case() -> None:
    st = statistics([4.0, 1.0, 3.0, 2.0])
    assert (st.count, st.mean, st.min, st.max) == (4, 2.5, 1.0, 4.0)
    assert st.std == pytest.approx(math.sqrt(5 / 3), rel=1e-15)
    assert st.stderr == pytest.approx(math.sqrt(5 / 3) / 2, rel=1e-15)
    # position p/100·(N−1) in the sorted values 1, 2, 3, 4
    assert st.percentile(50.0) == 2.5
    assert st.percentile(25.0) == 1.75
    assert st.percentile(0.5) == pytest.approx(1.015, rel=1e-15)
    assert st.percentile(99.5) == pytest.approx(3.985, rel=1e-15)
    # k = ⌈0.3·4⌉ = 2, ⌈0.1·4⌉ = 1, …
    assert st.cte_at(70.0) == 1.5
    assert st.cte_at(90.0) == st.cte_at(95.0) == st.cte_at(99.0) == 1.0


def test_statistics_of_one_scenario() -> None:
    st = statistics([7.5])
    assert (st.mean, st.std, st.stderr, st.min, st.max) == (7.5, 0.0, 0.0, 7.5, 7.5)
    assert all(v == 7.5 for _, v in st.percentiles + st.cte)


@pytest.mark.parametrize(
    ("n", "alpha", "k"),
    [(10, 70.0, 3), (10, 90.0, 1), (10, 99.0, 1), (100, 95.0, 5), (1000, 99.0, 10), (1001, 99.0, 11), (1, 70.0, 1)],
)
def test_cte_counts(n: int, alpha: float, k: int) -> None:
    assert cte_count(n, alpha) == k


def test_statistics_against_direct_numpy() -> None:
    v = np.random.default_rng(8).normal(1000.0, 250.0, 997)
    st = statistics(v)
    assert st.mean == float(np.mean(v))
    assert st.std == float(np.std(v, ddof=1))
    assert st.stderr == float(np.std(v, ddof=1)) / math.sqrt(997)
    assert (st.min, st.max) == (float(v.min()), float(v.max()))
    assert [p for p, _ in st.percentiles] == list(PERCENTILES)
    np.testing.assert_array_equal([x for _, x in st.percentiles], np.percentile(v, PERCENTILES))
    ordered = np.sort(v)
    for alpha in CTE_LEVELS:
        k = math.ceil(round((1 - alpha / 100) * 997, 9))
        assert st.cte_at(alpha) == float(np.mean(ordered[:k])) == cte(v, alpha)


def test_statistics_refuse_empty_input() -> None:
    with pytest.raises(InvalidArgument, match="non-empty"):
        statistics([])


def test_result_hash_is_sha256_of_little_endian_float64() -> None:
    v = [1.0, -2.5, 1e300]
    want = hashlib.sha256(struct.pack("<3d", *v)).hexdigest()
    assert result_hash(v) == want
    assert result_hash(np.array(v, dtype=">f8")) == want
    assert result_hash(v[::-1]) != want
