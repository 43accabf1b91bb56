"""Rogue models get a clear typed error, and the next run on the same host succeeds.

Each rogue model is a tiny WAT module posing as a scenario generator of ABI v2 (it exports
``lc_abi_version`` and ``lc_prepare_scenarios``), run as the ``wasm://esg`` node of the
reference pipeline.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import wasmtime

from services.common.errors import Cancelled, DeadlineExceeded, Internal, InvalidArgument, ResourceExhausted
from services.engine import workers
from services.engine.errors import (
    ForbiddenImportError,
    ModelCancelled,
    ModelDeadlineExceeded,
    ModelLoadError,
    ModelMemoryExceeded,
    ModelTrap,
)
from services.engine.pipeline import PipelineRunner, RunInputs
from services.engine.runtime import Runtime
from services.engine.workers import RunControl, WasmPool
from services.valuation.packages.config import REFERENCE_PIPELINE
from services.valuation.reference_model import shipped_models
from tests.engine.wasm_helpers import inputs

CAP = 64 << 20
MEMORY = '(import "env" "memory" (memory 1 65535 shared))'


def esg_like(body: str, *, memory: str = MEMORY, extra: str = "") -> bytes:
    return bytes(
        wasmtime.wat2wasm(
            f"""(module {memory} {extra}
              (global (export "__heap_base") i32 (i32.const 0))
              (func (export "lc_abi_version") (result i32) (i32.const 2))
              (func (export "lc_prepare_scenarios") (param i32 i32 i32) (result i32) {body}))"""
        )
    )


LOOP_FOREVER = esg_like("(loop $l (br $l)) (i32.const 0)")
TRAP = esg_like("(unreachable)")
OUT_OF_BOUNDS = esg_like("(i32.load (i32.const -8))")
GROW_PAST_CAP = esg_like("(loop $l (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))) (unreachable)")
FORBIDDEN_IMPORT = esg_like(
    "(i32.const 0)", extra='(import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))'
)
HUGE_MEMORY = esg_like("(i32.const 0)", memory='(import "env" "memory" (memory 2048 65535 shared))')
OWN_MEMORY = esg_like("(i32.const 0)", memory="(memory 1)")


@pytest.fixture(scope="module")
def pool() -> Iterator[WasmPool]:
    with WasmPool(Runtime(), threads=2, memory_cap=CAP) as p:
        yield p


@pytest.fixture(scope="module")
def run_inputs() -> RunInputs:
    return inputs(300, 8)


@pytest.fixture(scope="module")
def good_hash(pool: WasmPool, run_inputs: RunInputs) -> str:
    return PipelineRunner(pool).run(REFERENCE_PIPELINE, run_inputs).result_hash


def run_with(pool: WasmPool, esg_wasm: bytes, run_inputs: RunInputs, control: RunControl | None = None) -> str:
    binaries = shipped_models() | {"esg": esg_wasm}
    return PipelineRunner(pool, binaries).run(REFERENCE_PIPELINE, run_inputs, control=control).result_hash


def assert_next_run_succeeds(pool: WasmPool, run_inputs: RunInputs, good_hash: str) -> None:
    assert PipelineRunner(pool).run(REFERENCE_PIPELINE, run_inputs).result_hash == good_hash


@pytest.mark.parametrize(
    ("wasm", "error", "status", "words"),
    [
        (FORBIDDEN_IMPORT, ForbiddenImportError, InvalidArgument, "wasi_snapshot_preview1.fd_write"),
        (HUGE_MEMORY, ModelMemoryExceeded, ResourceExhausted, "cap"),
        (OWN_MEMORY, ModelLoadError, InvalidArgument, "env.memory"),
        (b"\0asm\x01\0\0\0garbage", ModelLoadError, InvalidArgument, "not a valid WebAssembly"),
    ],
    ids=["forbidden-import", "memory-over-cap", "own-memory", "not-wasm"],
)
def test_refused_at_load(  # noqa: PLR0917 - pytest fixtures and parameters
    pool: WasmPool, run_inputs: RunInputs, good_hash: str, wasm: bytes, error: type, status: type, words: str
) -> None:
    with pytest.raises(error, match=words) as info:
        run_with(pool, wasm, run_inputs)
    assert isinstance(info.value, status)
    assert_next_run_succeeds(pool, run_inputs, good_hash)


def test_loop_forever_hits_deadline(pool: WasmPool, run_inputs: RunInputs, good_hash: str) -> None:
    start = time.monotonic()
    with pytest.raises(ModelDeadlineExceeded, match="deadline") as info:
        run_with(pool, LOOP_FOREVER, run_inputs, RunControl(deadline=time.monotonic() + 0.3))
    assert isinstance(info.value, DeadlineExceeded)
    assert time.monotonic() - start < 5
    assert_next_run_succeeds(pool, run_inputs, good_hash)


def test_cancel_interrupts_a_running_call(pool: WasmPool, run_inputs: RunInputs, good_hash: str) -> None:
    control = RunControl()  # no deadline: only the cancellation can stop it
    timer = threading.Timer(0.3, control.cancel.set)
    timer.start()
    start = time.monotonic()
    try:
        with pytest.raises(ModelCancelled) as info:
            run_with(pool, LOOP_FOREVER, run_inputs, control)
    finally:
        timer.cancel()
    assert isinstance(info.value, Cancelled)
    assert time.monotonic() - start < 1.3  # stopped within a second of the cancel
    assert_next_run_succeeds(pool, run_inputs, good_hash)


def test_cancelled_before_a_call(pool: WasmPool, run_inputs: RunInputs, good_hash: str) -> None:
    control = RunControl()
    control.cancel.set()
    with pytest.raises(ModelCancelled):
        run_with(pool, LOOP_FOREVER, run_inputs, control)
    assert_next_run_succeeds(pool, run_inputs, good_hash)


@pytest.mark.parametrize(("wasm", "words"), [(TRAP, "unreachable"), (OUT_OF_BOUNDS, "out of bounds")])
def test_trap_is_typed(pool: WasmPool, run_inputs: RunInputs, good_hash: str, wasm: bytes, words: str) -> None:
    with pytest.raises(ModelTrap, match=words) as info:
        run_with(pool, wasm, run_inputs)
    assert isinstance(info.value, Internal)
    assert info.value.function == "lc_prepare_scenarios"
    assert_next_run_succeeds(pool, run_inputs, good_hash)


def test_growing_memory_past_cap(pool: WasmPool, run_inputs: RunInputs, good_hash: str) -> None:
    with pytest.raises(ModelMemoryExceeded, match="cap") as info:
        run_with(pool, GROW_PAST_CAP, run_inputs)
    assert isinstance(info.value, ResourceExhausted)
    assert pool.memory.size <= CAP
    assert_next_run_succeeds(pool, run_inputs, good_hash)
    # a plain trap afterwards is still a trap, not "memory exhausted"
    with pytest.raises(ModelTrap):
        run_with(pool, TRAP, run_inputs)


def test_cancel_of_one_run_leaves_another_intact(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cancelling interrupts every call on the engine; the other run's calls are re-run, same bits."""
    retries: list[bool] = []
    spurious = workers._spurious_interrupt

    def spy(*args: object) -> bool:
        retries.append(spurious(*args))  # type: ignore[arg-type]
        return retries[-1]

    monkeypatch.setattr(workers, "_spurious_interrupt", spy)
    runtime = Runtime()
    big = inputs(8 * 1024, 256)
    with WasmPool(runtime, threads=1) as a, WasmPool(runtime, threads=1, memory_cap=CAP) as b:
        expected = PipelineRunner(a).run(REFERENCE_PIPELINE, big).result_hash
        control = RunControl()
        errors: list[BaseException] = []

        def rogue() -> None:
            try:
                run_with(b, LOOP_FOREVER, inputs(50, 4), control)
            except BaseException as exc:  # noqa: BLE001 - collected for the assertion below
                errors.append(exc)

        thread = threading.Thread(target=rogue)
        thread.start()
        timer = threading.Timer(0.1, control.cancel.set)
        timer.start()
        got = PipelineRunner(a).run(REFERENCE_PIPELINE, big).result_hash
        thread.join(5)
        timer.cancel()
        assert got == expected
        assert len(errors) == 1 and isinstance(errors[0], ModelCancelled)
        assert True in retries  # the healthy run was interrupted and re-ran its call
