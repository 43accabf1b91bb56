"""The detail fold (services/gateway/detail_fold.py) on hand-made engine messages: blocks go to
the reader in block order whatever order they arrive in; a block whose rows do not sum to its
partial bit for bit, rows out of order, or a partial before its rows fail INTERNAL; a failed
chunk's half-received blocks are forgotten; a window of scenarios is indexed by scenario."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from livecalc.engine.v1 import engine_pb2, engine_service_pb2
from services.common.errors import Internal
from services.gateway.detail_fold import DetailFold
from services.valuation.blocks import BLOCK_SIZE, row_sums

ROWS = 2 * BLOCK_SIZE + 10  # three blocks, the last of 10 rows
OUTPUTS, RUN = 2, 4  # partials of scenarios 0..3; detail of scenarios 1 and 3
CHOSEN = [1, 3]


def rows_of(block: int) -> np.ndarray:
    """Row values f64 [rows][K][RUN] of ``block``: many magnitudes, so the summation order shows."""
    start, stop = block * BLOCK_SIZE, min(ROWS, (block + 1) * BLOCK_SIZE)
    rng = np.random.default_rng(block)
    return rng.standard_normal((stop - start, OUTPUTS, RUN)) * 10.0 ** rng.integers(-3, 9, (stop - start, 1, 1))


def messages(
    block: int, values: np.ndarray, *, split: int = 700, chosen: list[int] = CHOSEN, first_scenario: int = 0
) -> list[engine_service_pb2.RunChunkResponse]:
    """The engine's messages for ``block`` (``values`` of a run from ``first_scenario``): its rows
    under ``chosen`` in pieces of ``split``, then its partial."""
    start = block * BLOCK_SIZE
    picked = [s - first_scenario for s in chosen]
    out = []
    for r0 in range(0, len(values), split):
        r1 = min(len(values), r0 + split)
        rows = engine_pb2.RowValues(
            block_index=block, first_row=start + r0, row_count=r1 - r0, output_count=OUTPUTS, scenarios=chosen,
            values=values[r0:r1][:, :, picked].ravel().tolist(), last=r1 == len(values),
        )  # fmt: skip
        out.append(engine_service_pb2.RunChunkResponse(row_values=rows))
    partial = engine_pb2.BlockPartial(
        block_index=block, first_row=start, row_count=len(values), output_count=OUTPUTS,
        first_scenario=first_scenario, values=row_sums(values).ravel().tolist(),
    )  # fmt: skip
    return [*out, engine_service_pb2.RunChunkResponse(partial=partial)]


def new_fold() -> DetailFold:
    return DetailFold(first_block=0, block_count=3, rows=ROWS, run_scenarios=RUN, outputs=OUTPUTS,
                      scenarios=CHOSEN, row_values=True)  # fmt: skip


def feed(fold: DetailFold, stream: list[engine_service_pb2.RunChunkResponse]) -> bool:
    done = False
    for m in stream:
        if m.WhichOneof("event") == "partial":
            done = fold.add(m.partial)
        else:
            fold.add_detail(m)
    return done


def test_blocks_reach_the_reader_in_block_order() -> None:
    async def main() -> None:
        fold = new_fold()
        values = {b: rows_of(b) for b in range(3)}
        for b in (2, 0, 1):
            assert feed(fold, messages(b, values[b]))
        assert fold.complete and fold.folded_blocks == 0
        for b in range(3):
            ready = await fold.next_block()
            assert ready.block == b and ready.first_row == b * BLOCK_SIZE
            assert np.array_equal(ready.values, values[b][:, :, CHOSEN])
        assert fold.done and fold.folded_blocks == 3
        expected = (row_sums(values[0]) + row_sums(values[1])) + row_sums(values[2])
        assert np.array_equal(fold.total(), (0.0 + expected)[:, CHOSEN])

    asyncio.run(main())


def test_rows_that_do_not_sum_to_the_partial_fail() -> None:
    fold = new_fold()
    values = rows_of(0)
    stream = messages(0, values)
    off = row_sums(values)
    off[1, 3] = np.nextafter(off[1, 3], np.inf)  # one ulp off, under a chosen scenario
    stream[-1].partial.ClearField("values")
    stream[-1].partial.values.extend(off.ravel().tolist())
    with pytest.raises(Internal, match="does not reproduce the job"):
        feed(fold, stream)


def test_rows_out_of_order_or_missing_fail() -> None:
    stream = messages(0, rows_of(0))
    with pytest.raises(Internal, match="expected rows from 0"):
        feed(new_fold(), [stream[1], stream[0]])
    with pytest.raises(Internal, match="before all its row values"):
        feed(new_fold(), [stream[0], stream[-1]])


def test_a_failed_chunks_blocks_are_forgotten() -> None:
    fold = new_fold()
    stream = messages(1, rows_of(1))
    feed(fold, stream[:1])  # the chunk failed after its first rows
    fold.discard_pieces({1})
    assert feed(fold, stream)  # computed again, whole


def test_a_window_of_scenarios_is_folded_by_scenario() -> None:
    """Partials of a window (scenarios 40 … 43, from BlockPartial.first_scenario 40) are checked and
    folded under the chosen scenarios; an engine that runs from scenario 0 is named as older."""

    async def main() -> None:
        chosen = [40, 43]
        fold = DetailFold(first_block=0, block_count=3, rows=ROWS, first_scenario=40, run_scenarios=RUN,
                          outputs=OUTPUTS, scenarios=chosen, row_values=True)  # fmt: skip
        values = {b: rows_of(b) for b in range(3)}
        for b in (1, 2, 0):
            assert feed(fold, messages(b, values[b], chosen=chosen, first_scenario=40))
        for b in range(3):
            ready = await fold.next_block()
            assert np.array_equal(ready.values, values[b][:, :, [0, 3]])
            assert np.array_equal(ready.partial, row_sums(values[b])[:, [0, 3]])

    asyncio.run(main())
    older = DetailFold(first_block=0, block_count=3, rows=ROWS, first_scenario=40, run_scenarios=RUN,
                       outputs=OUTPUTS, scenarios=[40], row_values=True)  # fmt: skip
    with pytest.raises(Internal, match=r"from scenario 0, expected 40 .*predates detail windows"):
        older.add(messages(0, rows_of(0))[-1].partial)  # a partial of scenarios from 0
    with pytest.raises(Internal, match="outside the window"):
        DetailFold(first_block=0, block_count=3, rows=ROWS, first_scenario=40, run_scenarios=RUN, outputs=OUTPUTS,
                   scenarios=[39, 41], row_values=True)  # fmt: skip
