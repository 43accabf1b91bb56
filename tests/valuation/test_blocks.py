"""Block folding: in-order left fold, out-of-order arrival, result hash."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from services.valuation.blocks import (
    BlockFolder,
    BlockOrderError,
    block_count,
    block_rows,
    chunks,
    fold,
    row_sums,
    same_bits,
)
from services.valuation.statistics import result_hash


def test_block_geometry() -> None:
    assert block_count(0) == 0
    assert block_count(1024) == 1
    assert block_count(1025) == 2
    assert block_rows(1, 1500) == (1024, 1500)
    assert list(chunks(7, 3)) == [(0, 3), (3, 6), (6, 7)]


def test_fold_is_the_reference_order() -> None:
    rng = np.random.default_rng(5)
    partials = rng.normal(size=(9, 13)) * 10.0 ** rng.integers(-8, 8, size=(9, 1))
    oracle = [0.0] * partials.shape[1]  # plain Python floats, summed left to right
    for row in partials.tolist():
        oracle = [acc + x for acc, x in zip(oracle, row, strict=True)]
    assert fold(partials).tolist() == oracle


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_folder_any_arrival_order(seed: int) -> None:
    rng = np.random.default_rng(seed)
    partials = rng.normal(size=(12, 5, 7)) * 1e6
    folder = BlockFolder(12)
    for b in rng.permutation(12):
        assert not folder.complete
        folder.add(int(b), partials[b])
    assert folder.complete
    assert np.array_equal(folder.total(), fold(partials))


def test_folder_rejects_duplicates_and_strays() -> None:
    folder = BlockFolder(3, first_block=10)
    folder.add(10, np.zeros(2))
    with pytest.raises(BlockOrderError, match="twice"):
        folder.add(10, np.zeros(2))
    with pytest.raises(BlockOrderError, match="outside"):
        folder.add(13, np.zeros(2))
    with pytest.raises(BlockOrderError, match="missing"):
        folder.total()


def test_result_hash_is_sha256_of_le_float64() -> None:
    values = np.array([1.5, -2.0, 3.25])
    expected = hashlib.sha256(b"".join(int(np.float64(v).view(np.uint64)).to_bytes(8, "little") for v in values))
    assert result_hash(values) == expected.hexdigest()
    assert result_hash(values.astype(">f8")) == expected.hexdigest()


def test_folded_is_a_running_total_in_block_order() -> None:
    folder = BlockFolder(3)
    assert folder.folded() is None
    folder.add(1, np.array([10.0]))  # waits for block 0
    assert folder.folded() is None
    folder.add(0, np.array([1.0]))
    running = folder.folded()
    assert running is not None and running.tolist() == [11.0]
    running[0] = -1.0  # a copy: the fold is not disturbed
    folder.add(2, np.array([100.0]))
    assert folder.total().tolist() == [111.0]


def test_row_sums_are_the_fold_bit_for_bit() -> None:
    """The vectorised row sum gives the left fold's bits: values over many magnitudes (where the
    order shows), a column of −0.0 alone (the fold's +0.0), no rows at all."""
    rng = np.random.default_rng(5)
    values = rng.normal(size=(1024, 3, 7)) * 10.0 ** rng.integers(-8, 9, size=(1024, 3, 7))
    values[:, 1, 2] = -0.0
    assert same_bits(row_sums(values), fold(values))
    column = np.ascontiguousarray(values[:, 0, 0])
    assert not same_bits(row_sums(column), np.asarray(column.sum()))  # numpy's pairwise sum: other bits
    assert np.signbit(row_sums(values)[1, 2]) == np.signbit(fold(values)[1, 2]) == False  # noqa: E712
    assert same_bits(row_sums(np.zeros((0, 2))), np.zeros(2))
