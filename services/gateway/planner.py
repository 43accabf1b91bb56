"""The job plan: policy blocks of B rows grouped into chunks of consecutive blocks.

DESIGN.md "The mesh at run time" step 2: unless the client fixes ``chunk_blocks``, chunks are
sized so that every engine slot gets at least two of them (so a slow engine or a retried chunk
does not leave the others idle at the end), capped so a chunk stays near a second of work.
"""

from __future__ import annotations

from dataclasses import dataclass
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
#: Average projection months assumed per policy when the horizon is not known.
MONTHS_PER_POLICY: Final = 120


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


def choose_chunk_blocks(blocks: int, slots: int, scenarios: int) -> int:
    """Blocks per chunk: ≥ CHUNKS_PER_SLOT chunks per slot, and about a second of work at most."""
    slots = max(1, slots)
    by_slots = max(1, blocks // (CHUNKS_PER_SLOT * slots))
    steps_per_block = BLOCK_SIZE * max(1, scenarios) * MONTHS_PER_POLICY
    by_time = max(1, TARGET_CHUNK_STEPS // steps_per_block)
    return max(1, min(by_slots, by_time))


def plan(rows: int, *, slots: int, scenarios: int, chunk_blocks: int = 0) -> Plan:
    """Plan ``rows`` dataset rows over ``slots`` engine slots; ``chunk_blocks`` > 0 fixes the chunk size."""
    if rows < 1:
        raise InvalidArgument(f"the dataset has no rows to value ({rows})")
    if chunk_blocks < 0:
        raise InvalidArgument(f"chunk_blocks must be ≥ 0, got {chunk_blocks}")
    blocks = block_count(rows)
    size = chunk_blocks or choose_chunk_blocks(blocks, slots, scenarios)
    chunks = tuple(Chunk(i, b0, min(size, blocks - b0)) for i, b0 in enumerate(range(0, blocks, size)))
    return Plan(rows=rows, blocks_total=blocks, chunk_blocks=size, chunks=chunks)


def ranges(blocks: set[int] | frozenset[int]) -> list[tuple[int, int]]:
    """Sorted blocks as runs of consecutive blocks (first, count): a failed chunk's missing part."""
    out: list[tuple[int, int]] = []
    for b in sorted(blocks):
        if out and out[-1][0] + out[-1][1] == b:
            out[-1] = (out[-1][0], out[-1][1] + 1)
        else:
            out.append((b, 1))
    return out
