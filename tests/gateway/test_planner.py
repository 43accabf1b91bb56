"""The planner's chunk size: at least two chunks per engine slot, and about a second of engine
work at most, not a tenth of one (each chunk costs a pipeline run: `livecalc bench mesh`)."""

from __future__ import annotations

from services.gateway.planner import plan


def test_large_jobs_get_chunks_of_about_a_second_not_two_blocks() -> None:
    # 100K policies × 1K scenarios on one engine of 2 slots: 98 blocks
    p = plan(100_000, slots=2, scenarios=1000)
    assert p.blocks_total == 98
    assert p.chunk_blocks >= 8 and len(p.chunks) <= 13  # was 49 chunks of 2 blocks
    assert len(p.chunks) >= 2 * 2  # still ≥ two chunks per slot
    # three engines: the slot rule still wins
    assert len(plan(100_000, slots=6, scenarios=1000).chunks) >= 12


def test_small_jobs_still_spread_over_every_slot() -> None:
    assert len(plan(10_000, slots=2, scenarios=1000).chunks) >= 4
    assert len(plan(10_000, slots=6, scenarios=1000).chunks) == 10
