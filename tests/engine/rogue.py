"""Rogue models and the sandbox they run in, for the tests that each gets a clear typed error and
leaves the engine as it found it (tests.engine.test_sandbox, tests.engine.test_hostile_modules).

A rogue model is a tiny WAT module posing as a scenario generator of ABI v2 (it exports
``lc_abi_version`` and ``lc_prepare_scenarios``), run as the ``wasm://esg`` node of the reference
pipeline on a pool whose memory is capped at `CAP`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import wasmtime

from services.engine.pipeline import PipelineRunner, RunInputs
from services.engine.runtime import Runtime
from services.engine.workers import RunControl, WasmPool
from services.valuation.packages.config import REFERENCE_PIPELINE
from services.valuation.reference_model import shipped_models
from tests.engine.wasm_helpers import inputs

#: The sandbox pool's memory cap.
CAP = 64 << 20
MEMORY = '(import "env" "memory" (memory 1 65535 shared))'
PREPARE = '(func (export "lc_prepare_scenarios") (param i32 i32 i32) (result i32) {body})'


def generator(
    *, memory: str = MEMORY, head: str = "", extra: str = "", body: str = "(i32.const 0)", prepare: str = PREPARE
) -> bytes:
    """A generator-shaped module: `head` (imports, globals) comes before the exported
    ``__heap_base``, `extra` after it; `body` is ``lc_prepare_scenarios``'s."""
    return bytes(
        wasmtime.wat2wasm(
            f"""(module {memory} {head}
              (global (export "__heap_base") i32 (i32.const 0))
              {extra}
              (func (export "lc_abi_version") (result i32) (i32.const 2))
              {prepare.format(body=body)})"""
        )
    )


def run_with(pool: WasmPool, esg_wasm: bytes, run_inputs: RunInputs, control: RunControl | None = None) -> str:
    """The reference pipeline on `pool` with `esg_wasm` as its scenario generator; the result hash."""
    binaries = shipped_models() | {"esg": esg_wasm}
    return PipelineRunner(pool, binaries).run(REFERENCE_PIPELINE, run_inputs, control=control).result_hash


@dataclass(frozen=True)
class Sandbox:
    """A capped pool, the inputs rogue models run on, and the hash the shipped models give on them."""

    pool: WasmPool
    inputs: RunInputs
    good_hash: str

    def run(self, esg_wasm: bytes, control: RunControl | None = None) -> str:
        return run_with(self.pool, esg_wasm, self.inputs, control)

    def assert_next_run_succeeds(self) -> None:
        """The pool's next run of the shipped models gives the hash it gave before any rogue ran."""
        assert PipelineRunner(self.pool).run(REFERENCE_PIPELINE, self.inputs).result_hash == self.good_hash


@contextmanager
def capped_sandbox() -> Iterator[Sandbox]:
    """A `Sandbox` of two worker threads on 300 policies and 8 scenarios; its pool closed on exit."""
    with WasmPool(Runtime(), threads=2, memory_cap=CAP) as pool:
        run_inputs = inputs(300, 8)
        yield Sandbox(pool, run_inputs, PipelineRunner(pool).run(REFERENCE_PIPELINE, run_inputs).result_hash)
