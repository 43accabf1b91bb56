"""The WASM pipeline's result vector is bit-identical for any threads and chunking (docs/model.md)."""

from __future__ import annotations

import numpy as np
import pytest

from services.engine.pipeline import RunInputs
from services.engine.runtime import Runtime
from services.valuation.blocks import BLOCK_SIZE, BlockFolder, block_count, chunks
from services.valuation.packages.config import REFERENCE_PIPELINE
from services.valuation.statistics import result_hash
from tests.engine.wasm_helpers import inputs, rows_of, runner

ROWS = 5 * BLOCK_SIZE - 300  # 5 blocks, the last one partial
SCENARIOS = 19  # not a multiple of the 16 lanes: padding lanes must not leak


@pytest.fixture(scope="module")
def runtime() -> Runtime:
    return Runtime()


@pytest.fixture(scope="module")
def run_inputs() -> RunInputs:
    return inputs(ROWS, SCENARIOS)


@pytest.fixture(scope="module")
def baseline(runtime: Runtime, run_inputs: RunInputs) -> str:
    pool, run = runner(runtime, 1)
    with pool:
        result = run.run(REFERENCE_PIPELINE, run_inputs)
    assert result.partials.shape == (5, 5, SCENARIOS)
    assert np.all(np.isfinite(result.partials))
    return result.result_hash


@pytest.mark.parametrize("threads", [1, 2, 4])
@pytest.mark.parametrize("blocks_per_call", [1, 3, 5])
def test_same_hash_for_threads_and_calls(
    runtime: Runtime, run_inputs: RunInputs, baseline: str, threads: int, blocks_per_call: int
) -> None:
    pool, run = runner(runtime, threads)
    with pool:
        result = run.run(REFERENCE_PIPELINE, run_inputs, blocks_per_call=blocks_per_call)
    assert result.result_hash == baseline


@pytest.mark.parametrize("blocks_per_chunk", [1, 3, 5])
def test_same_hash_for_chunks_folded_out_of_order(
    runtime: Runtime, run_inputs: RunInputs, baseline: str, blocks_per_chunk: int
) -> None:
    """Chunks of blocks run separately (as on several engines), folded as they arrive in reverse."""
    blocks = block_count(ROWS)
    folder = BlockFolder(blocks)
    pool, run = runner(runtime, 2)
    with pool:
        for b0, b1 in reversed(list(chunks(blocks, blocks_per_chunk))):
            part = rows_of(run_inputs, b0 * BLOCK_SIZE, min(ROWS, b1 * BLOCK_SIZE))
            result = run.run(REFERENCE_PIPELINE, part)
            assert result.partials.shape == (b1 - b0, 5, SCENARIOS)
            for i, b in enumerate(range(b0, b1)):
                folder.add(b, result.partials[i, result.outputs.primary])
    assert result_hash(folder.total()) == baseline
