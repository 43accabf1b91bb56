"""The fold of a detail recomputation: engines' RowValues, BlockCashFlows and partials, block by
block, handed to one reader in block order.

The dispatcher (dispatcher.py) puts each block's detail messages (`add_detail`), then its partial
(`add`), into the fold. A block is *ready* once its partial is whole and its asked detail is in;
before that it is checked: its rows' values summed in row order from +0.0 must equal the
partial's, bit for bit, under every selected scenario and output (`Internal` otherwise: the
detail never leaves the gateway unless it is the computation that made the partial). The reader
(`next_block`) takes ready blocks in block order; the dispatcher's window is counted from the
first block the reader has not taken (`folded_blocks`), so a slow reader holds the engines back
and the gateway holds only the blocks of the window, never the whole portfolio.

The reader also folds the selected scenarios' partials in block order (`total`, with the job's
`BlockFolder`): over every block of a job that is the job's own per-scenario value, bit for bit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from livecalc.engine.v1 import engine_pb2, engine_service_pb2
from services.common.errors import Internal
from services.gateway.fold import partial_array
from services.valuation.arrays import F64
from services.valuation.blocks import BLOCK_SIZE, BlockFolder, row_sums, same_bits


@dataclass
class BlockCashFlows:
    """One block's cash flows by month: ``values`` f64 [M][S][T] (selected scenarios) and
    ``sums`` f64 [M][T] (over all the job's scenarios), either empty when not asked."""

    outputs: tuple[str, ...]
    values: F64
    sums: F64


@dataclass
class BlockDetail:
    """A ready block: its rows' values f64 [rows][K][S] (selected scenarios), their policy ids,
    its partial under the selected scenarios f64 [K][S], and its cash flows when asked."""

    block: int
    first_row: int
    values: F64
    policy_ids: list[str]
    partial: F64
    cash_flows: BlockCashFlows | None = None


@dataclass
class _Assembling:
    rows: list[engine_pb2.RowValues] = field(default_factory=list)
    rows_done: bool = False
    cash_flows: engine_pb2.BlockCashFlows | None = None
    partial: F64 | None = None
    filled: int = 0


class DetailFold:
    """Blocks [first_block, first_block + block_count) of a dataset of ``rows`` rows, computed
    under the window of ``run_scenarios`` scenarios from ``first_scenario`` with ``outputs``
    declared outputs (a block's partial covers the window: its values start at scenario
    ``first_scenario``); the detail is that of ``scenarios`` (ascending, in the window).
    ``row_values`` / ``cash_flows`` / ``cash_flow_sums``: what each block must carry before it is
    ready."""

    def __init__(
        self,
        *,
        first_block: int,
        block_count: int,
        rows: int,
        run_scenarios: int,
        outputs: int,
        scenarios: Sequence[int],
        row_values: bool,
        cash_flows: bool = False,
        cash_flow_sums: bool = False,
        first_scenario: int = 0,
    ) -> None:
        self.first, self.end, self.rows = first_block, first_block + block_count, rows
        self.first_scenario, self.run_scenarios, self.outputs = first_scenario, run_scenarios, outputs
        self.scenarios = list(scenarios)
        if (
            self.scenarios
            and not first_scenario <= self.scenarios[0] <= self.scenarios[-1] < first_scenario + run_scenarios
        ):
            raise Internal(
                f"scenarios {self.scenarios} are outside the window of {run_scenarios} from {first_scenario}"
            )
        #: Where the selected scenarios are on a partial's scenario axis (the window's).
        self._selected = [s - first_scenario for s in self.scenarios]
        self.row_values, self.cash_flows, self.cash_flow_sums = row_values, cash_flows, cash_flow_sums
        self._assembling: dict[int, _Assembling] = {}
        self._ready: dict[int, BlockDetail] = {}
        self._next = first_block
        self._added = 0
        self._steps = 0
        self._changed = asyncio.Event()
        self._failure: BaseException | None = None
        #: The selected scenarios' partials folded in block order, as the job's fold folds them.
        self._folder = BlockFolder(block_count, first_block)

    # the dispatcher's side (dispatcher.ChunkFold)

    @property
    def steps(self) -> int:
        return self._steps

    @property
    def complete(self) -> bool:
        """Every block is ready or taken (the reader may still be taking them)."""
        return self._added == self.end - self.first

    @property
    def folded_blocks(self) -> int:
        """The first block the reader has not taken: the dispatcher's window starts here."""
        return self._next

    def _block_range(self, block: int) -> tuple[int, int]:
        if not self.first <= block < self.end:
            raise Internal(f"block {block} is outside the detail's blocks [{self.first}, {self.end})")
        return block * BLOCK_SIZE, min(self.rows, (block + 1) * BLOCK_SIZE)

    def _open(self, block: int) -> _Assembling:
        if block in self._ready or block < self._next:
            raise Internal(f"block {block} arrived twice")
        return self._assembling.setdefault(block, _Assembling())

    def add_detail(self, message: engine_service_pb2.RunChunkResponse) -> None:
        """A block's RowValues or BlockCashFlows (they come before its partial)."""
        kind = message.WhichOneof("event")
        if kind == "row_values":
            piece = message.row_values
            start, stop = self._block_range(int(piece.block_index))
            held = self._open(int(piece.block_index))
            expected = start + sum(int(r.row_count) for r in held.rows)
            if held.rows_done or piece.first_row != expected or piece.first_row + piece.row_count > stop:
                raise Internal(
                    f"block {piece.block_index}: {piece.row_count} rows from {piece.first_row}, "
                    f"expected rows from {expected}"
                )
            if list(piece.scenarios) != self.scenarios or piece.output_count != self.outputs:
                raise Internal(f"block {piece.block_index}: row values of other scenarios or outputs than asked")
            if len(piece.values) != piece.row_count * self.outputs * len(self.scenarios):
                raise Internal(f"block {piece.block_index}: {len(piece.values)} row values for {piece.row_count} rows")
            held.rows.append(piece)
            held.rows_done = bool(piece.last)
            if held.rows_done and piece.first_row + piece.row_count != stop:
                raise Internal(f"block {piece.block_index}: its last rows end at {piece.first_row + piece.row_count}")
        elif kind == "cash_flows":
            flows = message.cash_flows
            self._block_range(int(flows.block_index))
            held = self._open(int(flows.block_index))
            if held.cash_flows is not None:
                raise Internal(f"block {flows.block_index}: cash flows arrived twice")
            held.cash_flows = flows

    def add(self, partial: engine_pb2.BlockPartial) -> bool:
        """A block's partial (or a scenario piece of it); True once the block is ready (checked)."""
        block = int(partial.block_index)
        start, stop = self._block_range(block)
        held = self._open(block)
        values = partial_array(partial, self.first_scenario + self.run_scenarios, self.outputs)
        first, n = int(partial.first_scenario) - self.first_scenario, values.shape[1]
        if held.partial is None:
            held.partial = np.empty((self.outputs, self.run_scenarios))
        if first != held.filled:
            # an engine that predates detail windows runs a detail from scenario 0, whatever it is asked
            older = " (an engine that runs every detail from scenario 0 predates detail windows)" if first < 0 else ""
            raise Internal(
                f"block {block}: partial piece from scenario {partial.first_scenario}, "
                f"expected {self.first_scenario + held.filled}{older}"
            )
        held.partial[:, first : first + n] = values
        held.filled = first + n
        if held.filled < self.run_scenarios:
            return False
        del self._assembling[block]
        self._ready[block] = self._checked(block, start, stop, held, held.partial[:, self._selected])
        self._added += 1
        self._changed.set()
        return True

    def _checked(self, block: int, start: int, stop: int, held: _Assembling, partial: F64) -> BlockDetail:
        """The ready block, once its detail is whole and its rows sum to its partial bit for bit."""
        shape = (0, self.outputs, len(self.scenarios))
        values = np.empty(shape)
        ids: list[str] = []
        if self.row_values:
            if not held.rows_done:
                raise Internal(
                    f"block {block}: its partial came before all its row values (an engine that predates "
                    "detail answers partials alone: every engine must serve RunChunkRequest.detail)"
                )
            values = np.concatenate([np.asarray(r.values, dtype=np.float64) for r in held.rows]).reshape(
                stop - start, self.outputs, len(self.scenarios)
            )
            ids = [i for r in held.rows for i in r.policy_ids]
            sums = row_sums(values)
            if not same_bits(sums, partial):
                bad = np.argwhere(sums.view(np.uint64) != partial.view(np.uint64))[0]
                k, s = int(bad[0]), int(bad[1])
                raise Internal(
                    f"block {block}: its rows sum to {sums[k, s]!r} under scenario {self.scenarios[s]} (output {k}), "
                    f"its partial is {partial[k, s]!r}; the detail does not reproduce the job"
                )
        flows = None
        if self.cash_flows or self.cash_flow_sums:
            if held.cash_flows is None:
                raise Internal(f"block {block}: its partial came before its cash flows")
            flows = self._cash_flows(block, held.cash_flows)
        return BlockDetail(block, start, values, ids, partial, flows)

    def _cash_flows(self, block: int, message: engine_pb2.BlockCashFlows) -> BlockCashFlows:
        monthly, months = len(message.outputs), int(message.months)
        values = np.asarray(message.values, dtype=np.float64)
        sums = np.asarray(message.scenario_sums, dtype=np.float64)
        want_values = monthly * len(self.scenarios) * months if self.cash_flows else 0
        want_sums = monthly * months if self.cash_flow_sums else 0
        if values.size != want_values or sums.size != want_sums:
            raise Internal(
                f"block {block}: {values.size} cash flows and {sums.size} sums, expected {want_values} and {want_sums}"
            )
        return BlockCashFlows(
            tuple(message.outputs),
            values.reshape(monthly, len(self.scenarios), months) if self.cash_flows else values,
            sums.reshape(monthly, months) if self.cash_flow_sums else sums,
        )

    def settle(self, blocks: Iterable[int], steps: int) -> None:
        """Steps of a piece of blocks (counted for the record; a retried piece counts again)."""
        if list(blocks):
            self._steps += steps

    def discard_pieces(self, blocks: set[int]) -> None:
        """Forget what came of blocks whose chunk failed: they will be computed again."""
        for block in blocks:
            self._assembling.pop(block, None)

    # the reader's side

    def fail(self, failure: BaseException) -> None:
        """The recomputation cannot finish: the reader raises ``failure``."""
        self._failure = failure
        self._changed.set()

    def total(self) -> F64:
        """The selected scenarios' partials of every block, folded in block order, f64 [K][S]
        (raises until the reader has taken every block)."""
        return self._folder.total()

    @property
    def taken(self) -> int:
        """Blocks the reader has taken."""
        return self._next - self.first

    @property
    def done(self) -> bool:
        """The reader has taken every block."""
        return self._next == self.end

    async def next_block(self) -> BlockDetail:
        """The next block in block order, once ready; its selected partial goes into `total`."""
        while self._next not in self._ready:
            if self._failure is not None:
                raise self._failure
            if self.done:
                raise Internal("every block of the detail was taken")
            self._changed.clear()
            await self._changed.wait()
        ready = self._ready.pop(self._next)
        self._folder.add(ready.block, ready.partial)
        self._next += 1
        return ready
