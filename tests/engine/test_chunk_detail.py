"""What an engine answers for RunChunkRequest.detail (services/engine/chunk_detail.py): the
request checked, the scenarios run (the window [min, max] of those asked), values picked from a
window by scenario, piece sizes within the detail budget, RowValues split under a
message budget, and scenario sums in scenario order from +0.0."""

from __future__ import annotations

import numpy as np
import pytest

from livecalc.engine.v1 import engine_pb2
from services.common.errors import Internal, InvalidArgument
from services.engine.chunk_detail import (
    PIECE_DETAIL_BYTES,
    DetailAsk,
    cash_flow_message,
    detail_piece_blocks,
    row_value_messages,
    scenario_sums,
)
from services.engine.chunk_runner import block_partials
from services.valuation.blocks import BLOCK_SIZE


@pytest.mark.parametrize(
    ("detail", "message"),
    [
        (engine_pb2.DetailRequest(scenarios=[1]), "asks for nothing"),
        (engine_pb2.DetailRequest(row_values=True), "at least one scenario"),
        (engine_pb2.DetailRequest(scenarios=[3, 1], row_values=True), "ascending and distinct"),
        (engine_pb2.DetailRequest(scenarios=[1, 1], cash_flows=True), "ascending and distinct"),
        (engine_pb2.DetailRequest(scenarios=[2, 10], row_values=True), "not below the job's 10"),
    ],
)
def test_bad_detail_requests_are_refused(detail: engine_pb2.DetailRequest, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        DetailAsk.from_request(detail, 10)


def test_the_scenarios_run() -> None:
    """A detail runs the window [min, max] of its scenarios; every scenario for the sums."""
    rows = DetailAsk.from_request(engine_pb2.DetailRequest(scenarios=[2, 7], row_values=True), 100)
    assert rows.run_window(100) == (2, 8) and not rows.wants_cash_flows
    high = DetailAsk.from_request(engine_pb2.DetailRequest(scenarios=[999], cash_flows=True), 1000)
    assert high.run_window(1000) == (999, 1000)
    sums = DetailAsk.from_request(engine_pb2.DetailRequest(cash_flow_sums=True), 100)
    assert sums.scenarios == () and sums.run_window(100) == (0, 100) and sums.wants_cash_flows
    both = DetailAsk.from_request(engine_pb2.DetailRequest(scenarios=[40], cash_flows=True, cash_flow_sums=True), 100)
    assert both.run_window(100) == (0, 100)


def test_detail_pieces_stay_within_the_budget() -> None:
    rows = DetailAsk((999,), row_values=True)
    per_block = BLOCK_SIZE * 5 * 1000 * 8
    assert detail_piece_blocks(rows, outputs=5, run_scenarios=1000, usual=8) == max(1, PIECE_DETAIL_BYTES // per_block)
    assert detail_piece_blocks(DetailAsk((0,), row_values=True), outputs=5, run_scenarios=1, usual=256) == 256
    huge = DetailAsk((0,), row_values=True, cash_flow_sums=True)
    assert detail_piece_blocks(huge, outputs=9, run_scenarios=100_000, usual=8) == 1


def test_row_values_are_split_under_the_budget_in_row_order() -> None:
    rng = np.random.default_rng(5)
    values = rng.standard_normal((BLOCK_SIZE, 3, 6))  # rows × outputs × run scenarios
    ids = [str(1000 + i) for i in range(BLOCK_SIZE)]
    messages = row_value_messages(4, 4 * BLOCK_SIZE, values, [1, 5], policy_ids=ids, budget=8 * 3 * 2 * 300)
    assert [m.row_count for m in messages] == [300, 300, 300, 124]
    assert [m.last for m in messages] == [False, False, False, True]
    assert [m.first_row for m in messages] == [4 * BLOCK_SIZE + r for r in (0, 300, 600, 900)]
    joined = np.concatenate([np.asarray(m.values) for m in messages]).reshape(BLOCK_SIZE, 3, 2)
    assert np.array_equal(joined, values[:, :, [1, 5]])
    assert [i for m in messages for i in m.policy_ids] == ids
    assert all(list(m.scenarios) == [1, 5] and m.output_count == 3 and m.block_index == 4 for m in messages)


def test_a_windows_values_are_picked_by_scenario() -> None:
    """Values of a run from scenario 10 (window scenario i is scenario 10 + i) are picked by scenario."""
    rng = np.random.default_rng(7)
    values = rng.standard_normal((5, 2, 6))  # rows × outputs × scenarios 10..15
    [message] = row_value_messages(0, 0, values, [11, 15], first_scenario=10)
    assert list(message.scenarios) == [11, 15]
    assert np.array_equal(np.asarray(message.values).reshape(5, 2, 2), values[:, :, [1, 5]])
    flows = rng.standard_normal((2, 6, 9))  # monthly × scenarios 10..15 × months
    cash = cash_flow_message(3, ["a", "b"], flows, DetailAsk((12, 15), cash_flows=True), 100, first_scenario=10)
    assert np.array_equal(np.asarray(cash.values).reshape(2, 2, 9), flows[:, [2, 5], :])
    with pytest.raises(Internal, match="all 100 scenarios"):
        cash_flow_message(3, ["a", "b"], flows, DetailAsk((12,), cash_flow_sums=True), 100, first_scenario=10)


def test_a_windows_partial_starts_at_its_first_scenario() -> None:
    """A detail chunk's partials cover its window: split under a budget, the pieces go on from it."""
    values = np.arange(20.0).reshape(2, 10)  # outputs × scenarios 37..46
    pieces = block_partials(3, 3 * BLOCK_SIZE, 10, values, 8 * 2 * 4, first_scenario=37)
    assert [p.first_scenario for p in pieces] == [37, 41, 45]
    assert np.array_equal(np.asarray(pieces[1].values).reshape(2, 4), values[:, 4:8])


def test_scenario_sums_fold_in_scenario_order() -> None:
    rng = np.random.default_rng(6)
    flows = rng.standard_normal((2, 40, 13)) * 10.0 ** rng.integers(-6, 9, (1, 40, 1))  # monthly × N × months
    folded = np.zeros((2, 13))
    for s in range(40):
        folded += flows[:, s, :]
    assert np.array_equal(scenario_sums(flows), folded)
    negative_zero = np.full((1, 3, 2), -0.0)
    assert np.signbit(scenario_sums(negative_zero)).sum() == 0  # the fold from +0.0 gives +0.0
    message = cash_flow_message(
        7, ["net_cf", "claims"], flows, DetailAsk((3,), cash_flows=True, cash_flow_sums=True), 40
    )
    assert message.months == 13 and list(message.scenarios) == [3] and message.scenario_count == 40
    assert np.array_equal(np.asarray(message.values).reshape(2, 1, 13), flows[:, [3], :])
    assert np.array_equal(np.asarray(message.scenario_sums).reshape(2, 13), folded)
