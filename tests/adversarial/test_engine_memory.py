"""A model that grows the engine's memory does not keep it grown (issue 19, item 10).

Shared memories cannot shrink: after a run that grew the memory past the pool's ``memory_keep``
bytes, the pool replaces it with a fresh memory of the initial size once the run's lease ends.
The memory's size and the process's resident pages come back down, and the next run gives the
same bits as before.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import wasmtime

from services.common import rss
from services.engine.pipeline import PipelineRunner, RunInputs
from services.engine.runtime import PAGE, Runtime
from services.engine.workers import WasmPool
from services.valuation.packages.config import REFERENCE_PIPELINE
from services.valuation.reference_model import shipped_models
from tests.engine.wasm_helpers import inputs

KEEP = 64 << 20
GROW_PAGES = 4096  # 256 MiB more than the run laid out
FILLED = 200 << 20  # of which this much is written (resident)

GROW = bytes(
    wasmtime.wat2wasm(
        f"""(module (import "env" "memory" (memory 1 65535 shared))
        (global (export "__heap_base") i32 (i32.const 0))
        (func (export "lc_abi_version") (result i32) (i32.const 2))
        (func (export "lc_prepare_scenarios") (param i32 i32 i32) (result i32) (local $old i32)
          (local.set $old (i32.mul (memory.grow (i32.const {GROW_PAGES})) (i32.const {PAGE})))
          (if (i32.lt_s (local.get $old) (i32.const 0)) (then (return (i32.const 0))))
          (memory.fill (local.get $old) (i32.const 7) (i32.const {FILLED}))
          (i32.const 0)))"""
    )
)


def resident_bytes() -> int:
    resident = rss.rss_bytes(os.getpid())
    assert resident is not None, "no VmRSS in /proc/self/status"
    return resident


@pytest.fixture
def pool() -> Iterator[WasmPool]:
    with WasmPool(Runtime(), threads=1, memory_keep=KEEP) as p:
        yield p


@pytest.fixture(scope="module")
def run_inputs() -> RunInputs:
    return inputs(200, 8)


def test_memory_grown_by_a_model_is_given_back(
    pool: WasmPool, run_inputs: RunInputs, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = PipelineRunner(pool).run(REFERENCE_PIPELINE, run_inputs).result_hash
    initial = -(-pool.memory.run_base // PAGE) * PAGE
    at_end: list[tuple[int, int]] = []  # (memory size, resident bytes) as each run ends
    recycle = pool.memory.recycle

    def watched() -> bool:
        at_end.append((pool.memory.size, resident_bytes()))
        return recycle()

    monkeypatch.setattr(pool.memory, "recycle", watched)
    PipelineRunner(pool, shipped_models() | {"esg": GROW}).run(REFERENCE_PIPELINE, run_inputs)
    grown, resident_grown = at_end[-1]
    assert grown >= initial + GROW_PAGES * PAGE > KEEP
    assert pool.memory.size == initial  # a fresh memory of the initial size
    assert resident_bytes() < resident_grown - FILLED // 2  # the pages went back to the system
    assert PipelineRunner(pool).run(REFERENCE_PIPELINE, run_inputs).result_hash == good


def test_memory_under_the_threshold_is_kept_and_cleared(pool: WasmPool, run_inputs: RunInputs) -> None:
    PipelineRunner(pool).run(REFERENCE_PIPELINE, run_inputs)
    shared = pool.memory.shared
    with pool.lease() as lease:
        lease.memory.ensure(KEEP // 2)
        lease.memory.write(KEEP // 2 - 8, b"secret!!")
    assert pool.memory.shared is shared  # not recreated: only cleared
    assert pool.memory.read(KEEP // 2 - 8, 8) == bytes(8)
