"""The sandbox's WASM binary reader agrees with wasmtime: generated modules (seeded) with globals
of every kind of constant expression, active and passive data segments and code full of
immediates that look like opcodes; wasmtime instantiates each, and the reader's global values,
data-segment ranges and blocking instructions must match what wasmtime did."""

from __future__ import annotations

import ctypes
import random
import struct

import pytest
import wasmtime

from services.common.wasm_binary import read_module
from services.common.wasm_reader import WasmFormatError
from services.engine.runtime import PAGE, Runtime
from services.engine.shared_memory import FixedSharedMemory

MODULES = 200
SEED = 20240607
PAGES = 2
TRICKY_I32 = (11, 0x0B, 0x0B0B, -11, 0x7FFFFFFF, -(1 << 31), 0xFE01 - 0x10000, 1 << 20, 200000)
TRICKY_I64 = (11, 0x0B, -1, 1 << 40, 0x0BFE01, -(1 << 63))


def _i32_expr(rng: random.Random, i32_globals: list[str]) -> str:
    kind = rng.randrange(4)
    if kind == 0 or (kind == 3 and not i32_globals):
        return f"(i32.const {rng.choice((*TRICKY_I32, rng.randrange(-(1 << 31), 1 << 31)))})"
    if kind == 1:
        op = rng.choice(("add", "sub", "mul"))
        a, b = rng.choice(TRICKY_I32), rng.randrange(-5000, 5000)
        return f"(i32.{op} (i32.const {a}) (i32.const {b}))"
    if kind == 2:
        return f"(i32.add (i32.mul (i32.const {rng.randrange(100)}) (i32.const 11)) (i32.const {rng.randrange(99)}))"
    return f"(global.get {rng.choice(i32_globals)})"


def _offset_expr(rng: random.Random, size: int, i32_globals: dict[int, int]) -> tuple[str, int]:
    """An in-bounds data offset expression and its value."""
    target = rng.randrange(0, PAGES * PAGE - size)
    kind = rng.randrange(3)
    near = [g for g, v in i32_globals.items() if 0 <= v <= target]
    if kind == 0 or (kind == 2 and not near):
        return f"(i32.const {target})", target
    if kind == 1:
        a = rng.randrange(target + 1)
        return f"(i32.add (i32.const {a}) (i32.const {target - a}))", target
    g = rng.choice(near)
    return f"(i32.add (global.get $g{g}) (i32.const {target - i32_globals[g]}))", target


def _code(rng: random.Random, wait: bool) -> str:
    """A function whose immediates contain the bytes of atomic.wait (0xFE 0x01) and of `end`."""
    f64 = struct.unpack("<d", bytes([0x0B, 0xFE, 0x01, 0xFE, 0x02, 0x0B, 0x10, 0x40]))[0]
    parts = [
        f"(drop (i32.const {0xFE01 + rng.randrange(3)}))",
        f"(drop (f64.const {f64!r}))",
        "(drop (i64.const 0x0BFE01FE02))",
        "(drop (i32.load offset=65025 (i32.const 0)))",  # memarg offset LEB bytes 0x81 0xFE 0x03
        "(drop (v128.const i8x16 0xfe 0x01 0x0b 0xfe 0x02 0 0 0 0 0 0 0 0 0 0 0x0b))",
        "(memory.fill (i32.const 0) (i32.const 0) (i32.const 0))",
        "(drop (i32.atomic.load (i32.const 0)))",
        "(block (loop (br_if 1 (i32.const 1)) (br 0)))",
    ]
    rng.shuffle(parts)
    if wait:
        parts.insert(
            rng.randrange(len(parts) + 1), "(drop (memory.atomic.wait32 (i32.const 0) (i32.const 1) (i64.const 0)))"
        )
    return f"(func (local f64 i64) {' '.join(parts)})"


VALTYPES = ("i32", "i64", "f32", "f64")


def _functions(rng: random.Random) -> tuple[str, dict[str, tuple[tuple[str, ...], tuple[str, ...]]], int | None]:
    """Exported functions of random signatures, maybe an ``lc_abi_version`` constant (its value or None)."""
    wat, signatures = [], {}
    for f in range(rng.randrange(4)):
        params = tuple(rng.choice(VALTYPES) for _ in range(rng.randrange(4)))
        results = tuple(rng.choice(VALTYPES) for _ in range(rng.randrange(2)))
        body = f"({results[0]}.const 0)" if results else ""
        wat.append(f'(func (export "f{f}") (param {" ".join(params)}) (result {" ".join(results)}) {body})')
        signatures[f"f{f}"] = (params, results)
    abi = rng.choice((None, 1, 11, -3, 0x7FFFFFFF))
    if abi is not None:
        wat.append(f'(func (export "lc_abi_version") (result i32) (i32.const {abi}))')
        signatures["lc_abi_version"] = ((), ("i32",))
    rng.shuffle(wat)
    return " ".join(wat), signatures, abi


def generate(rng: random.Random) -> tuple[str, bool]:
    """A module's globals (WAT, each exported as g<i>) and whether its code will wait."""
    globals_: list[str] = []
    i32_globals: list[int] = []
    for g in range(rng.randrange(8)):
        kind = rng.randrange(4)
        if kind == 0:
            expr = _i32_expr(rng, [f"$g{i}" for i in i32_globals])
            globals_.append(f'(global $g{g} (export "g{g}") i32 {expr})')
            i32_globals.append(g)
        elif kind == 1:
            value = rng.choice(TRICKY_I64)
            extra = rng.randrange(-100, 100)
            globals_.append(f'(global (export "g{g}") i64 (i64.add (i64.const {value}) (i64.const {extra})))')
        elif kind == 2:
            globals_.append(f'(global (export "g{g}") f64 (f64.const {rng.random()!r}))')
        else:
            globals_.append(f'(global (export "g{g}") (mut f32) (f32.const 11.0))')
    return " ".join(globals_), rng.random() < 0.3


def instantiate(runtime: Runtime, wasm: bytes) -> tuple[wasmtime.Store, wasmtime.Instance, bytes]:
    store = wasmtime.Store(runtime.engine)
    store.set_epoch_deadline(1 << 30)  # the engine interrupts on epochs; no ticker runs here
    memory = FixedSharedMemory(runtime.engine, wasmtime.MemoryType(wasmtime.Limits(PAGES, PAGES), shared=True))
    instance = wasmtime.Instance(store, wasmtime.Module(runtime.engine, wasm), [memory])
    contents = ctypes.string_at(memory.data_address(), PAGES * PAGE)
    return store, instance, contents


@pytest.fixture(scope="module")
def runtime() -> Runtime:
    return Runtime()


def test_reader_agrees_with_wasmtime_on_generated_modules(runtime: Runtime) -> None:
    rng = random.Random(SEED)
    for n in range(MODULES):
        wat_globals, wait = generate(rng)
        # two passes over the globals: first learn the i32 values from wasmtime, then place data by them
        probe = bytes(
            wasmtime.wat2wasm(f'(module (import "env" "memory" (memory {PAGES} {PAGES} shared)) {wat_globals})')
        )
        store, instance, _ = instantiate(runtime, probe)
        exports = instance.exports(store)
        truth: dict[str, int | None] = {}
        i32_values: dict[int, int] = {}
        for name in [e.name for e in wasmtime.Module(runtime.engine, probe).exports]:
            glob = exports[name]
            assert isinstance(glob, wasmtime.Global)
            content = str(glob.type(store).content)
            value = glob.value(store)
            truth[name] = (
                int(value) & (0xFFFFFFFF if content == "i32" else 0xFFFFFFFFFFFFFFFF)
                if content in ("i32", "i64")
                else None
            )
            if content == "i32" and not glob.type(store).mutable:
                i32_values[int(name[1:])] = int(value) & 0xFFFFFFFF
        segments = []
        data_wat = []
        for _ in range(rng.randrange(5)):
            size = rng.randrange(1, 40)
            ff = "\\ff" * size
            if rng.random() < 0.2:
                data_wat.append(f'(data "{ff}")')  # passive: written by no one at instantiation
                continue
            expr, offset = _offset_expr(rng, size, i32_values)
            data_wat.append(f'(data {expr} "{ff}")')
            segments.append((offset, offset + size))
        wat_functions, signatures, abi = _functions(rng)
        wat = (
            f'(module (import "env" "memory" (memory {PAGES} {PAGES} shared)) {wat_globals} {" ".join(data_wat)} '
            f"{_code(rng, wait)} {wat_functions})"
        )
        wasm = bytes(wasmtime.wat2wasm(wat))
        info = read_module(wasm)
        store, instance, contents = instantiate(runtime, wasm)
        # globals: the reader's values are wasmtime's
        read = {name: info.exported_global(name) for name in truth}
        assert {k: (g.value if g is not None else "missing") for k, g in read.items()} == truth, (n, wat)
        # data: the reader's active segments cover exactly the bytes wasmtime wrote
        written = {i for i, b in enumerate(contents) if b}
        assert [(s.offset, s.end) for s in info.data] == segments, (n, wat)
        assert written == {i for a, b in segments for i in range(a, b)}, (n, wat)
        # code: a wait is found exactly when there is one, whatever the immediates look like
        assert info.blocking == ({"memory.atomic.wait32"} if wait else set()), (n, wat)
        # functions: the reader's signatures are wasmtime's, and lc_abi_version's constant is what a call returns
        module_exports = wasmtime.Module(runtime.engine, wasm).exports
        funcs = {e.name: e.type for e in module_exports if isinstance(e.type, wasmtime.FuncType)}
        assert (
            {name: (tuple(str(p) for p in t.params), tuple(str(r) for r in t.results)) for name, t in funcs.items()}
            == signatures
            == info.functions
        ), (n, wat)
        if abi is None:
            assert info.abi_version is None
        else:
            call = instance.exports(store)["lc_abi_version"]
            assert isinstance(call, wasmtime.Func)
            assert info.abi_version == call(store) == abi, (n, wat)
        assert [(i.module, i.name, i.kind, i.shared, i.maximum) for i in info.imports] == [
            ("env", "memory", "memory", True, PAGES)
        ]


@pytest.mark.parametrize(
    "wasm",
    [b"\0asm\x01\0\0\0\x06\x05\x01\x7f\x00\x41", b"\0asm\x01\0\0\0\x0b\x80\x80", b"\0asm\x02\0\0\0"],
    ids=["truncated-const", "truncated-section", "not-version-1"],
)
def test_malformed_binaries_are_load_errors(wasm: bytes) -> None:
    with pytest.raises(WasmFormatError):
        read_module(wasm)
