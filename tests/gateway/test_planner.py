"""The planner's chunk size: at least two chunks per engine slot, and about a second of engine
work at most, not a tenth of one (each chunk costs a pipeline run: `livecalc bench mesh`)."""

from __future__ import annotations

import heapq

import pytest

from services.gateway.engines import Engine, block_granule, median_slot_speed
from services.gateway.planner import (
    CHUNKS_PER_SLOT,
    MONTHS_PER_POLICY,
    TARGET_CHUNK_SECONDS,
    TARGET_CHUNK_STEPS,
    choose_chunk_blocks,
    guided_sizes,
    max_chunk_blocks,
    plan,
)
from services.gateway.speeds import SHAPES_KEPT, SPEED_SMOOTHING, SlotSpeeds, speed_shape
from services.valuation.blocks import BLOCK_SIZE


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


def makespan(sizes: list[int], speeds: list[float], overhead: float = 0.05) -> float:
    """When the last chunk ends if chunks go out in plan order to whichever slot frees first
    (the dispatcher's way), a slot of speed v taking (overhead + size) / v per chunk."""
    free = [(0.0, i) for i in range(len(speeds))]
    heapq.heapify(free)
    for size in sizes:
        t, i = heapq.heappop(free)
        heapq.heappush(free, (t + (overhead + size) / speeds[i], i))
    return max(t for t, _ in free)


def equal_sizes(blocks: int, slots: int, scenarios: int) -> list[int]:
    size = choose_chunk_blocks(blocks, slots, scenarios)
    return [min(size, blocks - b0) for b0 in range(0, blocks, size)]


GRID = [(blocks, slots) for blocks in (98, 150, 293, 500, 977) for slots in (2, 3, 4, 6, 8, 12, 16, 24, 32)]


@pytest.mark.parametrize(("blocks", "slots"), [(11, 2), (11, 32), *GRID])
def test_guided_chunks_cover_the_job_in_order_shrinking(blocks: int, slots: int) -> None:
    p = plan(blocks * BLOCK_SIZE, slots=slots, scenarios=1000)
    sizes = [c.block_count for c in p.chunks]
    assert [b for c in p.chunks for b in range(c.first_block, c.end_block)] == list(range(blocks))
    assert [c.chunk_id for c in p.chunks] == list(range(len(sizes)))
    assert sizes == sorted(sizes, reverse=True) and p.chunk_blocks == sizes[0] <= max_chunk_blocks(1000)
    assert len(sizes) >= min(blocks, CHUNKS_PER_SLOT * slots)


def test_guided_chunks_finish_closer_to_the_ideal_than_equal_ones() -> None:
    """Over jobs of 98…977 blocks on 2…32 slots, identical or with one slot at half speed:
    the time to the last chunk over the ideal (blocks / total speed) — list scheduling in
    plan order, 0.2 block of overhead per chunk (about a pipeline run's)."""
    ratios: dict[str, list[float]] = {"guided": [], "equal": []}
    for blocks, slots in GRID:
        guided = [c.block_count for c in plan(blocks * BLOCK_SIZE, slots=slots, scenarios=1000).chunks]
        for speeds in ([1.0] * slots, [0.5] + [1.0] * (slots - 1)):
            ideal = blocks / sum(speeds)
            ratios["guided"].append(makespan(guided, speeds, 0.2) / ideal)
            ratios["equal"].append(makespan(equal_sizes(blocks, slots, 1000), speeds, 0.2) / ideal)
    mean = {k: sum(v) / len(v) for k, v in ratios.items()}
    assert mean["guided"] < 1.15 and mean["guided"] < mean["equal"] - 0.2  # 1.13 vs 1.37
    assert max(ratios["guided"]) < 1.6 and max(ratios["equal"]) > 2.0  # 1.58 vs 2.11


def test_the_16_core_case_that_left_waves_idle() -> None:
    """300K policies on 8 engines of 2 slots: 33 equal chunks ran as two full waves and one
    chunk alone (`bench mesh --engines 8`, BENCHMARKS.md "Scaling")."""
    blocks, slots = 293, 16
    equal = equal_sizes(blocks, slots, 1000)
    assert len(equal) == 33
    guided = [c.block_count for c in plan(300_000, slots=slots, scenarios=1000).chunks]
    same = [1.0] * slots
    assert makespan(guided, same) < 0.9 * makespan(equal, same)


def test_the_cap_is_a_second_of_a_slot_once_the_engines_speed_is_known() -> None:
    """Before any chunk finished: TARGET_CHUNK_STEPS; after: TARGET_CHUNK_SECONDS of the median
    slot speed, so a fast engine gets fewer, larger chunks and a slow one smaller ones."""
    per_block = BLOCK_SIZE * 1000 * MONTHS_PER_POLICY
    assert max_chunk_blocks(1000) == TARGET_CHUNK_STEPS // per_block == 16
    assert max_chunk_blocks(1000, 8e9) == int(TARGET_CHUNK_SECONDS * 8e9 // per_block) == 65
    assert max_chunk_blocks(1000, 1e8) == 1  # never below one block
    fast = plan(1_000_000, slots=2, scenarios=1000, slot_steps_per_second=8e9)
    slow = plan(1_000_000, slots=2, scenarios=1000, slot_steps_per_second=5e8)
    assert fast.chunk_blocks == 65 and slow.chunk_blocks == 4
    assert len(fast.chunks) < len(plan(1_000_000, slots=2, scenarios=1000).chunks) < len(slow.chunks)


def test_an_engines_slot_speed_is_its_chunks_smoothed_and_the_pool_takes_the_median() -> None:
    engines = [Engine(address=f"e{i}", channel=None, stub=None, slots=2) for i in range(3)]  # type: ignore[arg-type]
    shape = speed_shape("pkg", 1000)
    assert median_slot_speed(engines, shape) == 0.0  # nothing measured yet
    engines[0].observe(shape, 4_000_000_000, 2.0)
    assert engines[0].speeds.of(shape) == 2e9  # the first chunk sets it
    engines[0].observe(shape, 1_000_000_000, 1.0)
    assert engines[0].speeds.of(shape) == pytest.approx(2e9 + SPEED_SMOOTHING * (1e9 - 2e9))
    engines[0].observe(shape, 0, 1.0)  # an empty chunk says nothing
    engines[1].observe(shape, 3_000_000_000, 1.0)
    engines[2].observe(shape, 1_000_000_000, 10.0)  # a slow one
    assert median_slot_speed(engines, shape) == engines[0].speeds.of(shape)


def test_a_one_scenario_jobs_speed_does_not_size_a_many_scenario_jobs_chunks() -> None:
    """A deterministic run computes about a fifth of the steps per second of a 1,000-scenario
    run; sized by its speed, 100K × 1K went out in 22 chunks of a third of a second on one
    engine (bench mesh: +30 % over in process) instead of about a second each."""
    engine = Engine(address="e", channel=None, stub=None, slots=2)  # type: ignore[arg-type]
    one, many = speed_shape("pkg", 1), speed_shape("pkg", 1000)
    engine.observe(one, 155_000_000, 0.55)  # 800K × 1: 2.8e8 steps/s
    assert median_slot_speed([engine], many) == 0.0
    unmeasured = plan(100_000, slots=2, scenarios=1000, slot_steps_per_second=median_slot_speed([engine], many))
    assert unmeasured == plan(100_000, slots=2, scenarios=1000)
    engine.observe(many, 19_460_000_000, 13.4)  # 100K × 1K at 1.45e9 steps/s a slot
    measured = plan(100_000, slots=2, scenarios=1000, slot_steps_per_second=median_slot_speed([engine], many))
    assert len(measured.chunks) <= 13
    # other models, scenario classes and detail runs are shapes of their own; 64+ scenarios are one
    assert engine.speeds.of(speed_shape("other", 1000)) == 0.0
    assert engine.speeds.of(speed_shape("pkg", 1000, detail=True)) == 0.0
    assert engine.speeds.of(speed_shape("pkg", 7)) == 0.0
    assert engine.speeds.of(speed_shape("pkg", 64)) == engine.speeds.of(many) > 0


def test_an_engine_remembers_a_bounded_number_of_shapes() -> None:
    speeds = SlotSpeeds()
    for i in range(SHAPES_KEPT + 10):
        speeds.observe(speed_shape(f"p{i}", 1), 100, 1.0)
    assert speeds.of(speed_shape("p0", 1)) == 0.0  # the oldest dropped
    assert speeds.of(speed_shape(f"p{SHAPES_KEPT + 9}", 1)) == 100.0


@pytest.mark.parametrize(
    ("blocks", "slots", "cap", "granule"),
    [(98, 2, 11, 2), (98, 2, 8, 2), (782, 8, 40, 4), (99, 2, 11, 2), (5, 4, 16, 2)],
)
def test_chunks_are_multiples_of_the_engines_threads_but_the_last(
    blocks: int, slots: int, cap: int, granule: int
) -> None:
    """An engine spreads a chunk's blocks over its threads and waits for the last: a chunk of 11
    blocks on 2 threads leaves one idle for a block's time, so sizes go in multiples of the threads."""
    sizes = guided_sizes(blocks, slots, cap, granule)
    assert sum(sizes) == blocks
    assert all(size % granule == 0 for size in sizes[:-1])
    assert sizes == sorted(sizes, reverse=True)  # still never growing: the large chunks first
    assert max(sizes) < cap + granule
    ungrouped = guided_sizes(blocks, slots, cap)
    assert len(sizes) <= len(ungrouped)
    assert any(size % granule for size in ungrouped) or blocks % granule == 0  # the cases do need it


def test_the_pool_plans_in_multiples_of_its_engines_most_threads() -> None:
    engines = [Engine(address=f"e{i}", channel=None, stub=None, slots=2, threads=t) for i, t in enumerate((2, 4, 0))]  # type: ignore[arg-type]
    assert block_granule(engines) == 4
    assert block_granule([]) == 1
    p = plan(100_000, slots=6, scenarios=1000, slot_steps_per_second=1.4e9, granule=4)
    assert all(c.block_count % 4 == 0 for c in p.chunks[:-1]) and p.chunks[-1].end_block == p.blocks_total
