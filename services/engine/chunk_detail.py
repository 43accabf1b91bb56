"""The detail a chunk answers besides its block partials (engine.proto DetailRequest): each
policy's value of every declared output under chosen scenarios (`RowValues`), and each block's
cash flows by month (`BlockCashFlows`).

The chunk runs its blocks under the *window* of scenarios [min(selected), max(selected) + 1) —
every scenario when the scenario sums are asked — and its block partials cover that window
(`BlockPartial.first_scenario` is the window's first). Scenario s of a generator is a pure
function of (seed, s), and a policy's value under s does not depend on which other scenarios run
beside it, so the values are the job's own, bit for bit, without running the scenarios below the
window. Detail buffers are large (row values are rows ×
outputs × scenarios doubles, cash flows blocks × monthly outputs × scenarios × months), so a
detail chunk computes in pieces of few blocks (`detail_piece_blocks`), and every message stays
well under gRPC's 4 MiB.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np

from livecalc.engine.v1 import engine_pb2
from services.common.errors import Internal, InvalidArgument
from services.valuation.arrays import F64
from services.valuation.blocks import BLOCK_SIZE

#: Bytes of detail buffers (row values and cash flows) one piece may hold in the engine's memory.
PIECE_DETAIL_BYTES: Final = 64 << 20
#: Months a cash-flow buffer is sized for before the rows are read (100 years; a piece's real
#: horizon is known only once its rows are).
SIZING_MONTHS: Final = 1200
#: A detail message carries at most this many bytes of values (the limit is 4 MiB).
DETAIL_MESSAGE_BYTES: Final = 2 << 20


@dataclass(frozen=True)
class DetailAsk:
    """What a chunk answers besides its partials: ``scenarios`` (ascending, distinct) and which detail."""

    scenarios: tuple[int, ...]
    row_values: bool = False
    cash_flows: bool = False
    cash_flow_sums: bool = False

    @classmethod
    def from_request(cls, detail: engine_pb2.DetailRequest, scenario_count: int) -> DetailAsk:
        """The request's detail, checked against the job's ``scenario_count``."""
        scenarios = tuple(int(s) for s in detail.scenarios)
        if not (detail.row_values or detail.cash_flows or detail.cash_flow_sums):
            raise InvalidArgument("detail asks for nothing: set row_values, cash_flows or cash_flow_sums")
        if (detail.row_values or detail.cash_flows) and not scenarios:
            raise InvalidArgument("detail.scenarios must name at least one scenario for row values or cash flows")
        if any(b <= a for a, b in itertools.pairwise(scenarios)):
            raise InvalidArgument("detail.scenarios must be ascending and distinct")
        if scenarios and scenarios[-1] >= scenario_count:
            raise InvalidArgument(f"detail scenario {scenarios[-1]} is not below the job's {scenario_count} scenarios")
        return cls(scenarios, detail.row_values, detail.cash_flows, detail.cash_flow_sums)

    @property
    def wants_cash_flows(self) -> bool:
        """The run must compute cash flows by month (of the selected scenarios, or their sums)."""
        return self.cash_flows or self.cash_flow_sums

    def run_window(self, scenario_count: int) -> tuple[int, int]:
        """Scenarios [first, end) the chunk runs: all of them for the sums, else
        [min(selected), max(selected) + 1)."""
        if self.cash_flow_sums or not self.scenarios:
            return 0, scenario_count
        return self.scenarios[0], self.scenarios[-1] + 1


def detail_piece_blocks(ask: DetailAsk, *, outputs: int, run_scenarios: int, usual: int) -> int:
    """Blocks of a detail piece: ``usual`` at most, and as few as keep its detail buffers within
    `PIECE_DETAIL_BYTES` (one block at least)."""
    per_block = 0
    if ask.row_values:
        per_block += BLOCK_SIZE * outputs * run_scenarios * 8
    if ask.wants_cash_flows:
        per_block += outputs * run_scenarios * SIZING_MONTHS * 8
    if per_block == 0:
        return usual
    return max(1, min(usual, PIECE_DETAIL_BYTES // per_block))


def window_indexes(scenarios: Sequence[int], first_scenario: int) -> list[int]:
    """Where ``scenarios`` are on the scenario axis of a run whose first scenario is ``first_scenario``."""
    return [s - first_scenario for s in scenarios]


def row_value_messages(
    block: int,
    first_row: int,
    values: F64,
    scenarios: Sequence[int],
    *,
    first_scenario: int = 0,
    policy_ids: Sequence[str] = (),
    budget: int = DETAIL_MESSAGE_BYTES,
) -> list[engine_pb2.RowValues]:
    """One block's rows (``values`` f64 [rows][K][run scenarios], the run's scenarios from
    ``first_scenario``) under ``scenarios`` as RowValues messages of at most ``budget`` bytes of
    values each (one row at least), the last marked."""
    rows, outputs, _ = values.shape
    chosen = values[:, :, window_indexes(scenarios, first_scenario)]
    per_message = max(1, budget // (8 * max(1, outputs * len(scenarios))))
    out = []
    for r0 in range(0, rows, per_message):
        r1 = min(rows, r0 + per_message)
        out.append(
            engine_pb2.RowValues(
                block_index=block,
                first_row=first_row + r0,
                row_count=r1 - r0,
                output_count=outputs,
                scenarios=scenarios,
                values=chosen[r0:r1].ravel().tolist(),
                policy_ids=policy_ids[r0:r1],
                last=r1 == rows,
            )
        )
    return out


def scenario_sums(cash_flows: F64) -> F64:
    """f64 [M][N][T] → [M][T]: each month summed over the scenarios in scenario order from +0.0
    (a running sum is sequential, unlike numpy's pairwise sum; + 0.0 turns an all -0.0 sum into the
    fold's +0.0)."""
    if cash_flows.shape[1] == 0:
        return np.zeros((cash_flows.shape[0], cash_flows.shape[2]))
    return np.cumsum(cash_flows, axis=1)[:, -1, :] + 0.0


def cash_flow_message(
    block: int, names: Sequence[str], cash_flows: F64, ask: DetailAsk, scenario_count: int, *, first_scenario: int = 0
) -> engine_pb2.BlockCashFlows:
    """One block's cash flows (f64 [M][run scenarios][T], the run's scenarios from
    ``first_scenario``) as asked: the selected scenarios' and/or the sums over all
    ``scenario_count`` scenarios (a run of them all, from scenario 0)."""
    months = cash_flows.shape[2]
    message = engine_pb2.BlockCashFlows(
        block_index=block, outputs=names, months=months, scenarios=ask.scenarios, scenario_count=scenario_count
    )
    if ask.cash_flows:
        message.values.extend(cash_flows[:, window_indexes(ask.scenarios, first_scenario), :].ravel().tolist())
    if ask.cash_flow_sums:
        if first_scenario != 0 or cash_flows.shape[1] != scenario_count:
            raise Internal(f"scenario sums need a run of all {scenario_count} scenarios from scenario 0")
        message.scenario_sums.extend(scenario_sums(cash_flows).ravel().tolist())
    return message
