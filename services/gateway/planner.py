"""The job plan: policy blocks of B rows grouped into chunks of consecutive blocks.

docs/architecture.md "3. Planning in blocks": unless the client fixes ``chunk_blocks``, chunks are
sized so that every engine slot gets at least two of them (so a slow engine or a retried chunk
does not leave the others idle at the end), capped so a chunk stays near a second of work.

Sizes shrink towards the end (guided self-scheduling, Polychronopoulos & Kuck 1987): each
chunk takes 1/(CHUNKS_PER_SLOT · slots) of the blocks still unplanned, within [a quarter of
the cap, the cap]. Chunks go out in plan order, so the large ones run first and the small
ones fill the slots that free up last. Equal chunks left whole waves idle: 33 equal chunks
on 16 slots run as two full waves and a third of one chunk (`bench mesh --engines 1,2,4,8`
on 16 cores, BENCHMARKS.md "Scaling").
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final

from services.common.errors import InvalidArgument
from services.valuation.blocks import BLOCK_SIZE, block_count

#: Chunks per engine slot the planner aims for at least.
CHUNKS_PER_SLOT: Final = 2
#: Policy·scenario·month steps one chunk should hold at most: about a second of one engine
#: (the term_life WASM runs ~1.9e9 steps/s per thread, BENCHMARKS.md). Smaller chunks cost
#: a pipeline run each (scenario generation, layout, partials): `bench mesh` measured 100K×1K
#: on one engine 10 % slower in 49 chunks of 2 blocks than in 7–13 chunks.
TARGET_CHUNK_STEPS: Final = 2_000_000_000
#: Seconds of one engine slot's work a chunk should hold at most, once the engines' speed is
#: measured (`EnginePool.slot_steps_per_second`); TARGET_CHUNK_STEPS stands in before that.
TARGET_CHUNK_SECONDS: Final = 1.0
#: Average projection months assumed per policy when the horizon is not known.
MONTHS_PER_POLICY: Final = 120
#: Random groups a preview's sample is computed in at least (when it has that many policies):
#: the spread of their sums measures the preview's policy-sampling error (services/valuation/
#: preview_error.py) with G − 1 degrees of freedom. A sample of fewer blocks is computed in
#: groups smaller than a block, one model run each (a block holds 1024 rows), so this stays small.
MIN_SAMPLE_GROUPS: Final = 8


@dataclass(frozen=True)
class Chunk:
    """Blocks [first_block, first_block + block_count) of the dataset, chunk ``chunk_id`` of the plan."""

    chunk_id: int
    first_block: int
    block_count: int

    @property
    def end_block(self) -> int:
        return self.first_block + self.block_count


@dataclass(frozen=True)
class Plan:
    """The chunks of one job, in block order; they cover blocks 0 … blocks_total−1 once."""

    rows: int
    blocks_total: int
    chunk_blocks: int
    chunks: tuple[Chunk, ...]
    #: Rows per block: B, or a preview's policies per sample group (`preview_plan`).
    block_rows: int = BLOCK_SIZE


def choose_chunk_blocks(blocks: int, slots: int, scenarios: int, slot_steps_per_second: float = 0.0) -> int:
    """Equal blocks per chunk: ≥ CHUNKS_PER_SLOT chunks per slot, and about a second of work at most."""
    slots = max(1, slots)
    by_slots = max(1, blocks // (CHUNKS_PER_SLOT * slots))
    return max(1, min(by_slots, max_chunk_blocks(scenarios, slot_steps_per_second)))


def max_chunk_blocks(scenarios: int, slot_steps_per_second: float = 0.0) -> int:
    """The most blocks one chunk may hold: TARGET_CHUNK_SECONDS of a slot at the measured speed,
    else TARGET_CHUNK_STEPS."""
    steps = TARGET_CHUNK_SECONDS * slot_steps_per_second if slot_steps_per_second > 0 else TARGET_CHUNK_STEPS
    steps_per_block = BLOCK_SIZE * max(1, scenarios) * MONTHS_PER_POLICY
    return max(1, int(steps // steps_per_block))


def guided_sizes(blocks: int, slots: int, cap: int, granule: int = 1) -> list[int]:
    """Chunk sizes covering ``blocks``: each ⌈remaining / (CHUNKS_PER_SLOT · slots)⌉ clamped to
    [floor, cap] (never more than remain), so the sizes never grow and the last ones are small.
    The floor, ⌈cap/4⌉, keeps the tail from a pipeline run per block; it drops to the equal
    share for jobs too small to give every slot CHUNKS_PER_SLOT chunks of it.

    Each size is then rounded up to a multiple of ``granule``, the engines' worker threads: an
    engine computes a chunk's blocks on its K threads, one block each at a time, and waits for
    the last before the next chunk starts, so a chunk of 11 blocks on 2 threads leaves one thread
    idle for a block's time (at 1,000 scenarios ~85 ms), in every such chunk."""
    share = CHUNKS_PER_SLOT * max(1, slots)
    floor = max(1, min(-(-cap // 4), blocks // share))
    step = max(1, granule)
    sizes: list[int] = []
    remaining = blocks
    while remaining > 0:
        size = min(remaining, cap, max(floor, -(-remaining // share)))
        size = min(remaining, -(-size // step) * step)
        sizes.append(size)
        remaining -= size
    return sizes


@dataclass(frozen=True)
class Sizing:
    """What a full run's chunk sizes are planned from besides its rows (`plan`'s arguments)."""

    slots: int
    scenarios: int
    chunk_blocks: int = 0
    slot_steps_per_second: float = 0.0
    granule: int = 1


def plan(
    rows: int,
    *,
    slots: int,
    scenarios: int,
    chunk_blocks: int = 0,
    slot_steps_per_second: float = 0.0,
    granule: int = 1,
) -> Plan:
    """Plan ``rows`` dataset rows over ``slots`` engine slots; ``chunk_blocks`` > 0 fixes the chunk
    size, else chunks shrink towards the end (guided_sizes) from a cap of about a second of a slot
    at ``slot_steps_per_second`` (measured; 0: not yet), in multiples of ``granule`` blocks (the
    engines' threads). ``Plan.chunk_blocks`` is the largest."""
    if rows < 1:
        raise InvalidArgument(f"the dataset has no rows to value ({rows})")
    if chunk_blocks < 0:
        raise InvalidArgument(f"chunk_blocks must be ≥ 0, got {chunk_blocks}")
    blocks = block_count(rows)
    if chunk_blocks:
        sizes = [min(chunk_blocks, blocks - b0) for b0 in range(0, blocks, chunk_blocks)]
    else:
        sizes = guided_sizes(blocks, slots, max_chunk_blocks(scenarios, slot_steps_per_second), granule)
    chunks, first = [], 0
    for i, size in enumerate(sizes):
        chunks.append(Chunk(i, first, size))
        first += size
    return Plan(rows=rows, blocks_total=blocks, chunk_blocks=max(sizes), chunks=tuple(chunks))


def resumed_plan(job_plan: Plan, next_block: int) -> Plan:
    """What is left of ``job_plan`` for a job resumed from a checkpoint at ``next_block``: the
    chunks before it dropped, the one across it trimmed to start there (chunk ids kept)."""
    chunks = tuple(
        Chunk(c.chunk_id, max(c.first_block, next_block), c.end_block - max(c.first_block, next_block))
        for c in job_plan.chunks
        if c.end_block > next_block
    )
    return replace(job_plan, chunks=chunks)


def sample_group_rows(n: int) -> int:
    """Policies per group of a preview's sample of n (engine.proto SampleSelection.group_rows):
    the sample's blocks when it has MIN_SAMPLE_GROUPS of them, else ⌈n / MIN_SAMPLE_GROUPS⌉."""
    if n < 1:
        raise InvalidArgument(f"a sample needs at least one policy, got {n}")
    if block_count(n) >= MIN_SAMPLE_GROUPS:
        return BLOCK_SIZE
    return -(-n // MIN_SAMPLE_GROUPS)


def preview_plan(n: int) -> Plan:
    """A preview of a sample of n policies: one chunk of its groups (`sample_group_rows`), each
    group a 'block' of the plan."""
    rows = sample_group_rows(n)
    groups = -(-n // rows)
    return Plan(rows=n, blocks_total=groups, chunk_blocks=groups, chunks=(Chunk(0, 0, groups),), block_rows=rows)


def ranges(blocks: set[int] | frozenset[int]) -> list[tuple[int, int]]:
    """Sorted blocks as runs of consecutive blocks (first, count): a failed chunk's missing part."""
    out: list[tuple[int, int]] = []
    for b in sorted(blocks):
        if out and out[-1][0] + out[-1][1] == b:
            out[-1] = (out[-1][0], out[-1][1] + 1)
        else:
            out.append((b, 1))
    return out
