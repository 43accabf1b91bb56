"""Blocks, the block plan and the reference summation order (docs/model.md "Aggregation").

Policies are grouped into blocks of B = 1024 consecutive dataset rows. A block partial is
the sum of its policies' values in row order, per scenario (computed inside the model);
the portfolio value is the left fold of block partials in block order, from +0.0. Because
each partial's bits do not depend on which thread, chunk or engine computed it, folding
them in block order gives the same bits for any split — `BlockFolder` does that as blocks
complete in any order.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

import numpy as np

from services.common.errors import Internal, InvalidArgument
from services.valuation.arrays import F64

BLOCK_SIZE: Final = 1024
"""B: dataset rows per block, the unit of the reference summation order."""


class BlockOrderError(Internal):
    """A block partial arrived outside the plan, twice, or the fold was read before it was complete."""


def block_count(rows: int) -> int:
    """Blocks covering ``rows`` rows (the last may be partial)."""
    return -(-rows // BLOCK_SIZE)


def block_rows(block: int, rows: int) -> tuple[int, int]:
    """Row range [start, stop) of ``block`` in a dataset of ``rows`` rows."""
    return block * BLOCK_SIZE, min(rows, (block + 1) * BLOCK_SIZE)


def chunks(blocks: int, blocks_per_chunk: int) -> Iterator[tuple[int, int]]:
    """The block plan: consecutive block ranges [b0, b1) of at most ``blocks_per_chunk`` blocks."""
    if blocks_per_chunk < 1:
        raise InvalidArgument(f"blocks_per_chunk must be ≥ 1, got {blocks_per_chunk}")
    for b0 in range(0, blocks, blocks_per_chunk):
        yield b0, min(blocks, b0 + blocks_per_chunk)


def fold(partials: F64) -> F64:
    """Left fold over axis 0 in order, from +0.0: ((0 + p[0]) + p[1]) + …  (any trailing shape)."""
    partials = np.asarray(partials, dtype=np.float64)
    total = np.zeros(partials.shape[1:], dtype=np.float64)
    for partial in partials:
        total += partial
    return total


def row_sums(values: F64) -> F64:
    """f64 [rows][…] → […]: the rows summed in row order from +0.0, a block partial from its rows'
    values — the same bits as `fold`, vectorised (a running sum is sequential, unlike numpy's
    pairwise sum; + 0.0 turns an all −0.0 sum into the fold's +0.0)."""
    values = np.asarray(values, dtype=np.float64)
    if values.shape[0] == 0:
        return np.zeros(values.shape[1:])
    total: F64 = np.cumsum(values, axis=0)[-1] + 0.0
    return total


def same_bits(a: F64, b: F64) -> bool:
    """Equal shapes and equal float64 bit patterns (NaNs and signed zeros told apart)."""
    return a.shape == b.shape and bool(np.array_equal(a.view(np.uint64), b.view(np.uint64)))


class BlockFolder:
    """Folds block partials (any trailing shape) in block order as they arrive in any order.

    ``add(b, partial)`` keeps out-of-order partials until every earlier block has arrived;
    memory is bounded by how far arrivals run ahead of the next block to fold.
    """

    def __init__(self, blocks: int, first_block: int = 0) -> None:
        self.first, self.end = first_block, first_block + blocks
        self._next = first_block
        self._pending: dict[int, F64] = {}
        self._total: F64 | None = None

    def add(self, block: int, partial: F64) -> None:
        if not self.first <= block < self.end:
            raise BlockOrderError(f"block {block} outside [{self.first}, {self.end})")
        if block < self._next or block in self._pending:
            raise BlockOrderError(f"block {block} added twice")
        self._pending[block] = np.array(partial, dtype=np.float64, copy=True)
        while self._next in self._pending:
            part = self._pending.pop(self._next)
            if self._total is None:
                self._total = np.zeros_like(part)
            self._total += part
            self._next += 1

    def resume(self, next_block: int, total: F64 | None) -> None:
        """Continue a fold checkpointed after ``next_block - 1`` with its running ``total`` (same bits)."""
        if self._next != self.first or self._pending:
            raise BlockOrderError("a fold resumes before its first block")
        if not self.first <= next_block <= self.end or (total is None) != (next_block == self.first):
            raise BlockOrderError(f"cannot resume at block {next_block} of [{self.first}, {self.end})")
        self._next = next_block
        self._total = None if total is None else np.array(total, dtype=np.float64, copy=True)

    @property
    def complete(self) -> bool:
        return self._next == self.end

    @property
    def folded_blocks(self) -> int:
        return self._next - self.first

    @property
    def pending_blocks(self) -> int:
        """Partials that arrived ahead of the fold and wait in memory."""
        return len(self._pending)

    def folded(self) -> F64 | None:
        """A copy of the fold of the blocks folded so far (None before the first): a running total."""
        return None if self._total is None else self._total.copy()

    def total(self) -> F64:
        """The fold of all blocks (raises until every block arrived)."""
        if not self.complete or self._total is None:
            raise BlockOrderError(f"blocks {self._next}..{self.end - 1} are still missing")
        return self._total
