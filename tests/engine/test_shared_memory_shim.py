"""The SharedMemory shim works, and upstream wasmtime-py still needs it (bytecodealliance/wasmtime-py#318).

When ``test_upstream_still_broken`` fails, upstream fixed the bug: delete
services/engine/shared_memory.py and use wasmtime.SharedMemory directly.
"""

from __future__ import annotations

import ctypes

import pytest
import wasmtime

from services.engine.shared_memory import FixedSharedMemory

WAT = """(module (import "env" "memory" (memory 1 16 shared))
            (func (export "store") (param i32 i32) (i32.store (local.get 0) (local.get 1)))
            (func (export "pages") (result i32) (memory.size)))"""


def engine() -> wasmtime.Engine:
    cfg = wasmtime.Config()
    cfg.wasm_threads = True
    cfg.shared_memory = True
    return wasmtime.Engine(cfg)


def memory_type() -> wasmtime.MemoryType:
    return wasmtime.MemoryType(wasmtime.Limits(2, 16), shared=True)


def test_shim_imports_and_sizes() -> None:
    eng = engine()
    mem = FixedSharedMemory(eng, memory_type())
    store = wasmtime.Store(eng)
    instance = wasmtime.Instance(store, wasmtime.Module(eng, WAT), [mem])
    exports = instance.exports(store)
    store_fn, pages = exports["store"], exports["pages"]
    assert isinstance(store_fn, wasmtime.Func) and isinstance(pages, wasmtime.Func)
    store_fn(store, 64, 0x01020304)
    assert mem.size() == 2
    assert pages(store) == 2
    assert ctypes.c_uint32.from_address(mem.data_address() + 64).value == 0x01020304
    mem.grow(3)
    assert mem.size() == 5 == pages(store)


def test_upstream_still_broken() -> None:
    eng = engine()
    mem = wasmtime.SharedMemory(eng, memory_type())
    store = wasmtime.Store(eng)
    with pytest.raises(TypeError):
        wasmtime.Instance(store, wasmtime.Module(eng, WAT), [mem])
    with pytest.raises(ctypes.ArgumentError):
        mem.size()
