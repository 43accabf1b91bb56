"""The job's fold: block partials of every declared output folded in block order (docs/model.md
"Aggregation"; docs/model-interface.md "Outputs").

Partials arrive from many engines in any order; `BlockFolder` keeps the early ones until
every earlier block is in, so the portfolio has the reference summation order's bits. The
gateway holds at most the partials of the blocks in flight (the dispatcher's window bounds
them), never the dataset.

The fold also counts the job's projection steps, each block once: an engine reports the steps
of a piece of consecutive blocks after the piece's partials (`settle`), and a piece's steps
count once all its blocks are folded. `checkpoint()` is only taken where every folded block's
steps are known, so a job resumed from it counts exactly the steps an uninterrupted run does.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from livecalc.engine.v1 import engine_pb2
from services.common.errors import Internal
from services.valuation.arrays import F64
from services.valuation.blocks import BLOCK_SIZE, BlockFolder


def partial_array(partial: engine_pb2.BlockPartial, scenarios: int, outputs: int) -> F64:
    """A BlockPartial (or a piece of one) as f64 [outputs][n], in the package's output order; a
    partial of another output count, or of lengths that do not fit, is an engine bug."""
    values = np.asarray(partial.values, dtype=np.float64)
    if partial.output_count != outputs:
        raise Internal(
            f"block {partial.block_index}: a partial of {partial.output_count} outputs, the package declares {outputs}"
        )
    n = values.size // outputs
    if n == 0 or values.size != outputs * n or partial.first_scenario + n > scenarios:
        raise Internal(
            f"block {partial.block_index}: {values.size} values of {outputs} outputs from scenario "
            f"{partial.first_scenario}, expected {scenarios} scenarios in all"
        )
    return values.reshape(outputs, n)


@dataclass(frozen=True)
class FoldState:
    """What a resumed fold starts from: blocks before `next_block` are folded into `total`
    (f64 [K][N], K outputs; None before the first) and took `steps` projection steps."""

    next_block: int
    total: F64 | None
    steps: int


class JobFold:
    """Folds the blocks of a job of ``rows`` rows, ``scenarios`` scenarios and ``outputs`` declared
    outputs, in block order. A block holds ``block_rows`` rows (B; a preview's sample groups are
    its blocks, `planner.preview_plan`); with ``keep_means`` the fold also keeps each block's
    row count and its means over scenarios (`block_means`: what a preview's sampling error is
    measured from)."""

    def __init__(
        self,
        rows: int,
        blocks: int,
        scenarios: int,
        *,
        outputs: int,
        check_rows: bool = True,
        block_rows: int = BLOCK_SIZE,
        keep_means: bool = False,
    ) -> None:
        self.rows, self.blocks, self.scenarios, self.outputs = rows, blocks, scenarios, outputs
        self.check_rows = check_rows
        self.block_rows = block_rows
        self.keep_means = keep_means
        #: Block → (rows, f64 [K] means over scenarios), with ``keep_means``.
        self._means: dict[int, tuple[int, F64]] = {}
        self._folder = BlockFolder(blocks)
        self._received: set[int] = set()
        #: Blocks whose partial comes in scenario pieces: (values so far, scenarios filled).
        self._assembling: dict[int, tuple[F64, int]] = {}
        #: Received blocks whose steps are not known yet (their piece's report has not come).
        self._unsettled: set[int] = set()
        #: Steps of settled pieces not folded yet, by the piece's last block.
        self._piece_steps: dict[int, int] = {}
        self._steps = 0

    def checkpoint(self) -> FoldState | None:
        """What a resumed fold starts from; None while a folded block's steps are not known (its
        piece's report is on its way): a checkpoint then would count them never or twice."""
        if any(b < self.folded_blocks for b in self._unsettled):
            return None
        return FoldState(self._folder.folded_blocks, self._folder.folded(), self._steps)

    def resume(self, state: FoldState) -> None:
        """Start from a checkpoint: blocks before its ``next_block`` count as folded, steps included."""
        if state.total is not None and state.total.shape != (self.outputs, self.scenarios):
            raise Internal(
                f"a checkpoint of shape {state.total.shape}, expected "
                f"{self.outputs} outputs × {self.scenarios} scenarios"
            )
        self._folder.resume(state.next_block, state.total)
        self._received.update(range(state.next_block))
        self._steps = state.steps

    def add(self, partial: engine_pb2.BlockPartial) -> bool:
        """Take one partial (or one scenario piece of it); True once its block is complete and folded.

        Pieces of a block (BlockPartial.first_scenario) come in scenario order; a block is
        folded when its last scenario is in.
        """
        block = int(partial.block_index)
        if block in self._received:
            raise Internal(f"block {block} arrived twice")
        start, stop = block * self.block_rows, min(self.rows, (block + 1) * self.block_rows)
        if self.check_rows and partial.row_count and partial.row_count != stop - start:
            raise Internal(f"block {block}: {partial.row_count} rows, expected {stop - start}")
        values = partial_array(partial, self.scenarios, self.outputs)
        first, n = int(partial.first_scenario), values.shape[1]
        if first == 0 and n == self.scenarios:
            whole = values
        else:
            held, filled = self._assembling.get(block, (np.empty((self.outputs, self.scenarios)), 0))
            if first != filled:
                raise Internal(f"block {block}: piece from scenario {first}, expected {filled}")
            held[:, first : first + n] = values
            if first + n < self.scenarios:
                self._assembling[block] = (held, first + n)
                return False
            self._assembling.pop(block, None)
            whole = held
        before = self._folder.folded_blocks
        self._folder.add(block, whole)
        if self.keep_means:
            self._means[block] = (int(partial.row_count) or stop - start, whole.mean(axis=1))
        self._received.add(block)
        self._unsettled.add(block)
        for folded in range(before, self._folder.folded_blocks):
            self._steps += self._piece_steps.pop(folded, 0)
        return True

    def settle(self, blocks: Iterable[int], steps: int) -> None:
        """The projection steps of a piece: ``blocks`` (received, consecutive) took ``steps`` in all.

        The steps count once every block of the piece is folded. A piece's blocks are either all
        folded or none (the fold takes received blocks at once), so a checkpoint never splits one.
        Steps of a piece whose report never came (its call failed after the partials) are not
        known: settle them as 0 so later checkpoints are not held up.
        """
        piece = sorted(blocks)
        if not piece:
            return
        missing = [b for b in piece if b not in self._received]
        if missing:
            raise Internal(f"steps reported for blocks {missing} before their partials")
        self._unsettled.difference_update(piece)
        if piece[-1] < self.folded_blocks:
            self._steps += steps
        else:
            self._piece_steps[piece[-1]] = self._piece_steps.get(piece[-1], 0) + steps

    def discard_pieces(self, blocks: set[int]) -> None:
        """Forget half-assembled blocks (their chunk failed; they will be computed again)."""
        for block in blocks:
            self._assembling.pop(block, None)

    @property
    def steps(self) -> int:
        """Projection steps of the folded blocks whose piece reported them, each block once."""
        return self._steps

    @property
    def complete(self) -> bool:
        return self._folder.complete

    @property
    def folded_blocks(self) -> int:
        return self._folder.folded_blocks

    @property
    def pending_blocks(self) -> int:
        """Blocks received ahead of the fold (the fold lag, in blocks)."""
        return self._folder.pending_blocks

    @property
    def rows_done(self) -> int:
        """Rows of the blocks folded so far."""
        return self.rows if self.complete else min(self.rows, self.folded_blocks * self.block_rows)

    def block_means(self) -> tuple[npt.NDArray[np.int64], F64]:
        """(rows [blocks], means over scenarios f64 [blocks][K]) of the blocks received, in block
        order (kept with ``keep_means``)."""
        blocks = sorted(self._means)
        rows = np.array([self._means[b][0] for b in blocks], dtype=np.int64)
        means = np.array([self._means[b][1] for b in blocks], dtype=np.float64).reshape(len(blocks), self.outputs)
        return rows, means

    def partial_total(self) -> F64 | None:
        """The fold so far, f64 [K][N], or None before the first block."""
        return self._folder.folded()

    def estimate(self) -> F64 | None:
        """The running estimate: the folded sums scaled by rows/rows_done (exact once complete)."""
        total = self.partial_total()
        if total is None or self.rows_done == 0:
            return None
        if self.complete:
            return total
        return total * (self.rows / self.rows_done)

    def total(self) -> F64:
        """The final fold, f64 [K][N] (raises until every block arrived)."""
        return self._folder.total()
