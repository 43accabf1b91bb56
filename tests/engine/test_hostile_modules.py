"""Hostile modules, one table: each stops within its deadline with its typed error, load errors
are INVALID_ARGUMENT naming the problem, and the next run on the same engine gives the same hash.

Each module poses as the scenario generator (it exports ABI v2's ``lc_abi_version`` and
``lc_prepare_scenarios``) and runs as the ``wasm://esg`` node of the reference pipeline.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import wasmtime

from services.common.errors import DeadlineExceeded, InvalidArgument, LivecalcError
from services.engine.errors import ModelDeadlineExceeded, ModelLoadError
from services.engine.workers import RunControl
from tests.engine.rogue import MEMORY, PREPARE, Sandbox, capped_sandbox, generator

DEADLINE = 0.5


@dataclass(frozen=True)
class Hostile:
    wasm: bytes
    error: type[LivecalcError]
    status: type[LivecalcError]
    words: str


HOSTILE = {
    "start-loops-forever": Hostile(
        generator(extra="(start $s) (func $s (loop $l (br $l)))"), ModelDeadlineExceeded, DeadlineExceeded, "deadline"
    ),
    "atomic-wait": Hostile(
        generator(body="(drop (memory.atomic.wait32 (i32.const 0) (i32.const 0) (i64.const -1))) (i32.const 0)"),
        ModelLoadError,
        InvalidArgument,
        "memory.atomic.wait32",
    ),
    # (i64.const 11): the LEB128 byte 0x0B is also the `end` opcode; a reader that skips to the
    # first 0x0B derails and misreads __heap_base (2,000,000: far into the worker stacks)
    "i64-const-11-then-heap-base": Hostile(
        bytes(
            wasmtime.wat2wasm(
                f"""(module {MEMORY} (global i64 (i64.const 11))
                  (global (export "__heap_base") i32 (i32.const 2000000))
                  (func (export "lc_abi_version") (result i32) (i32.const 2))
                  {PREPARE.format(body="(i32.const 0)")})"""
            )
        ),
        ModelLoadError,
        InvalidArgument,
        "static data",
    ),
    "extended-const-data-offset": Hostile(
        generator(extra='(data (i32.add (i32.const 16) (i32.const 1048576)) "\\ff\\ff\\ff\\ff")'),
        ModelLoadError,
        InvalidArgument,
        "static data",
    ),
    "memory-max-one-page": Hostile(
        generator(memory='(import "env" "memory" (memory 1 1 shared))'), ModelLoadError, InvalidArgument, "maximum"
    ),
    "immutable-stack-pointer": Hostile(
        generator(extra='(global (export "__stack_pointer") i32 (i32.const 4096))'),
        ModelLoadError,
        InvalidArgument,
        "__stack_pointer",
    ),
    "trapping-start": Hostile(
        generator(extra="(start $s) (func $s unreachable)"), ModelLoadError, InvalidArgument, "start function trapped"
    ),
    "out-of-range-data-offset": Hostile(
        generator(head="(global $far i32 (i32.const 0x7fff0000))", extra='(data (global.get $far) "x")'),
        ModelLoadError,
        InvalidArgument,
        "static data",
    ),
    "wrong-export-signature": Hostile(
        generator(prepare='(func (export "lc_prepare_scenarios") (param i32) (result i32) {body})'),
        ModelLoadError,
        InvalidArgument,
        "lc_prepare_scenarios",
    ),
}


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    with capped_sandbox() as s:
        yield s


@pytest.mark.parametrize("case", list(HOSTILE), ids=list(HOSTILE))
def test_hostile_module(sandbox: Sandbox, case: str) -> None:
    hostile = HOSTILE[case]
    start = time.monotonic()
    with pytest.raises(hostile.error, match=hostile.words) as info:
        sandbox.run(hostile.wasm, RunControl(deadline=time.monotonic() + DEADLINE))
    assert time.monotonic() - start < DEADLINE + 2.0
    assert isinstance(info.value, hostile.status)
    sandbox.assert_next_run_succeeds()


def test_a_stuck_worker_does_not_keep_the_process_alive() -> None:
    """A model call that never returns (no deadline) holds a worker thread; the process still
    exits when its main thread does (worker threads are daemons)."""
    script = textwrap.dedent(
        """
        import threading, time
        import wasmtime
        from services.engine.pipeline import PipelineRunner
        from services.valuation.packages.config import REFERENCE_PIPELINE
        from services.engine.runtime import Runtime
        from services.valuation.reference_model import shipped_models
        from services.engine.workers import WasmPool
        from tests.engine.wasm_helpers import inputs

        loop = wasmtime.wat2wasm('''(module (import "env" "memory" (memory 1 65535 shared))
            (global (export "__heap_base") i32 (i32.const 0))
            (func (export "lc_abi_version") (result i32) (i32.const 2))
            (func (export "lc_prepare_scenarios") (param i32 i32 i32) (result i32) (loop $l (br $l)) (i32.const 0)))''')
        pool = WasmPool(Runtime(), threads=2)
        runner = PipelineRunner(pool, shipped_models() | {"esg": bytes(loop)})
        threading.Thread(target=runner.run, args=(REFERENCE_PIPELINE, inputs(50, 64)), daemon=True).start()
        time.sleep(1.0)
        print("main thread done", flush=True)
        """
    )
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert "main thread done" in result.stdout, result.stderr
    assert time.monotonic() - start < 30  # well before the stuck call's own limit would end it
