"""A reader of the parts of a WebAssembly binary that are checked before any code runs.

It decodes what wasmtime will do at instantiation without running it: the imports, the
exported functions with their signatures, the value of every module-defined global (constant
expressions evaluated, extended-const included), where each active data segment lands, the
constant ``lc_abi_version`` returns, and which instructions the code uses (so that a module
that could block a thread, ``memory.atomic.wait*``, is refused). The engine's sandbox checks a
module with it at load, and the package validator checks a package's binaries with it at
upload, so both judge a binary alike. It checks structure only as far as it relies on it
(wasmtime validates the rest); any construct outside what the model ABI needs (imported
globals, unknown opcodes) is refused with `WasmFormatError` rather than guessed at.
`tests/engine/test_wasm_binary.py` fuzzes it against wasmtime's own view of generated modules.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

from services.common.errors import InvalidArgument


class WasmFormatError(InvalidArgument):
    """The bytes are not a WebAssembly module this reader decodes, or use what a model may not."""


_MASK32: Final = 0xFFFFFFFF
_MASK64: Final = 0xFFFFFFFFFFFFFFFF

WAIT_OPCODES: Final = {0x01: "memory.atomic.wait32", 0x02: "memory.atomic.wait64"}
"""0xFE-prefixed atomics that block the thread until notified; epoch interruption cannot stop them."""


class _Reader:
    """A cursor over bytes; every read past the end is a `WasmFormatError`, never an IndexError."""

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None) -> None:
        self.data, self.pos = data, pos
        self.end = len(data) if end is None else end

    def byte(self) -> int:
        if self.pos >= self.end:
            raise WasmFormatError("truncated WebAssembly binary")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def bytes(self, n: int) -> bytes:
        if n < 0 or self.pos + n > self.end:
            raise WasmFormatError("truncated WebAssembly binary")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def uleb(self) -> int:
        result = shift = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return result
            if shift > 70:
                raise WasmFormatError("malformed LEB128 integer in WebAssembly binary")

    def sleb(self) -> int:
        result = shift = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return result - (1 << shift) if b & 0x40 else result
            if shift > 70:
                raise WasmFormatError("malformed LEB128 integer in WebAssembly binary")

    def name(self) -> str:
        return self.bytes(self.uleb()).decode("utf-8", "replace")


@dataclass(frozen=True)
class Global:
    """A module-defined global: value type byte, mutability and its initial value (ints as
    unsigned 32/64-bit, None for float and reference globals)."""

    valtype: int
    mutable: bool
    value: int | None


@dataclass(frozen=True)
class DataSegment:
    """An active data segment: ``size`` bytes written at ``offset`` of memory ``memory``."""

    memory: int
    offset: int
    size: int

    @property
    def end(self) -> int:
        return self.offset + self.size


VALTYPE_NAMES: Final = {
    0x7F: "i32",
    0x7E: "i64",
    0x7D: "f32",
    0x7C: "f64",
    0x7B: "v128",
    0x70: "funcref",
    0x6F: "externref",
}
"""Value types as wasmtime spells them in signatures."""

Signature = tuple[tuple[str, ...], tuple[str, ...]]
"""(param types, result types) of a function."""

_IMPORT_KINDS: Final = {0: "func", 1: "table", 2: "memory", 3: "global"}


@dataclass(frozen=True)
class Import:
    """One import: ``kind`` is func, table, memory or global; ``shared`` for a shared memory;
    ``maximum`` the memory's maximum in pages (None when it has none)."""

    module: str
    name: str
    kind: str
    shared: bool = False
    maximum: int | None = None


@dataclass
class ModuleInfo:
    """What the checks need to know of a module, read from its binary."""

    imports: list[Import] = field(default_factory=list)
    functions: dict[str, Signature] = field(default_factory=dict)
    """Exported function name → signature."""
    abi_version: int | None = None
    """The constant ``lc_abi_version`` returns, when its body is just ``i32.const N``."""
    constants: dict[str, int] = field(default_factory=dict)
    """Exported () -> i32 functions whose body is just ``i32.const N``: name → N (signed)."""
    globals: list[Global] = field(default_factory=list)
    exported_globals: dict[str, int] = field(default_factory=dict)
    """Export name → global index (module-defined globals only: imported ones are refused)."""
    data: list[DataSegment] = field(default_factory=list)
    passive_segments: int = 0
    has_start: bool = False
    blocking: set[str] = field(default_factory=set)
    """Names of blocking instructions the code uses (`WAIT_OPCODES`)."""

    def exported_global(self, name: str) -> Global | None:
        index = self.exported_globals.get(name)
        return self.globals[index] if index is not None and index < len(self.globals) else None


# Value types as bytes: i32, i64, f32, f64, v128, funcref, externref.
I32, I64, F32, F64, V128 = 0x7F, 0x7E, 0x7D, 0x7C, 0x7B


def const_expr(r: _Reader, globals_: list[Global]) -> int | None:
    """Evaluate a constant expression up to its ``end``: an int (i32 results as unsigned 32-bit,
    i64 as unsigned 64-bit), or None for float/v128/reference results.

    Extended-const (``i32.add`` … of constants and ``global.get``) is evaluated exactly; a
    ``global.get`` may only name an earlier module-defined global (imports are refused anyway).
    """
    stack: list[tuple[int, int | None]] = []  # (valtype, value)
    while True:
        op = r.byte()
        if op == 0x0B:
            if len(stack) != 1:
                raise WasmFormatError("malformed constant expression")
            return stack[0][1]
        if op == 0x41:
            stack.append((I32, r.sleb() & _MASK32))
        elif op == 0x42:
            stack.append((I64, r.sleb() & _MASK64))
        elif op == 0x43:
            r.bytes(4)
            stack.append((F32, None))
        elif op == 0x44:
            r.bytes(8)
            stack.append((F64, None))
        elif op == 0x23:
            index = r.uleb()
            if index >= len(globals_):
                raise WasmFormatError(f"constant expression reads global {index}, which is not defined before it")
            g = globals_[index]
            stack.append((g.valtype, g.value))
        elif op in (0x6A, 0x6B, 0x6C, 0x7C, 0x7D, 0x7E):  # i32/i64 add, sub, mul
            if len(stack) < 2:
                raise WasmFormatError("malformed constant expression")
            (ta, a), (_, b) = stack[-2], stack[-1]
            del stack[-2:]
            mask = _MASK32 if op < 0x70 else _MASK64
            kind = op - (0x6A if op < 0x70 else 0x7C)
            if a is None or b is None:
                stack.append((ta, None))
            else:
                stack.append((ta, (a + b, a - b, a * b)[kind] & mask))
        elif op == 0xD0:  # ref.null heaptype
            r.sleb()
            stack.append((0x70, None))
        elif op == 0xD2:  # ref.func index
            r.uleb()
            stack.append((0x70, None))
        elif op == 0xFD and r.uleb() == 12:  # v128.const
            r.bytes(16)
            stack.append((V128, None))
        else:
            raise WasmFormatError(f"constant expression uses opcode {op:#04x}, which the engine does not evaluate")


def _limits(r: _Reader) -> tuple[bool, int | None]:
    """(shared, maximum) of a table's or memory's limits."""
    flags = r.byte()
    r.uleb()
    maximum = r.uleb() if flags & 1 else None
    return bool(flags & 2), maximum


def _valtype(r: _Reader) -> int:
    t = r.byte()
    if t in (0x63, 0x64):  # (ref null? heaptype) of the GC proposal
        r.sleb()
    return t


def _imports(r: _Reader, info: ModuleInfo, func_types: list[int]) -> None:
    """Record the imports; an imported global would make global indices ambiguous here."""
    for _ in range(r.uleb()):
        module, name = r.name(), r.name()
        kind = r.byte()
        shared, maximum = False, None
        if kind == 0x00:
            func_types.append(r.uleb())
        elif kind == 0x01:
            _valtype(r)
            _limits(r)
        elif kind == 0x02:
            shared, maximum = _limits(r)
        elif kind == 0x03:
            raise WasmFormatError(f"imports global {module}.{name}: only env.memory may be imported")
        else:
            raise WasmFormatError(f"import {module}.{name} has unknown kind {kind:#04x}")
        info.imports.append(Import(module, name, _IMPORT_KINDS[kind], shared, maximum))


def _types(r: _Reader) -> list[Signature]:
    types: list[Signature] = []
    for _ in range(r.uleb()):
        if r.byte() != 0x60:
            raise WasmFormatError("type section holds a form other than a function type")
        params = tuple(VALTYPE_NAMES.get(_valtype(r), "?") for _ in range(r.uleb()))
        results = tuple(VALTYPE_NAMES.get(_valtype(r), "?") for _ in range(r.uleb()))
        types.append((params, results))
    return types


def _constant_body(r: _Reader) -> int | None:
    """N when a function body is exactly ``i32.const N; end`` with no locals, else None."""
    if r.uleb() != 0 or r.byte() != 0x41:
        return None
    value = r.sleb()
    return value if r.byte() == 0x0B and r.pos == r.end else None


def read_module(wasm: bytes) -> ModuleInfo:
    """Decode imports, exports, globals, data segments, start and the code's blocking instructions."""
    if wasm[:8] != b"\0asm\x01\0\0\0":
        raise WasmFormatError("not a WebAssembly module (bad magic number or version: WebAssembly 1.0 expected)")
    info = ModuleInfo()
    types: list[Signature] = []
    func_types: list[int] = []  # type index of every function, imported ones first
    exported_funcs: dict[str, int] = {}
    code_start = -1
    top = _Reader(wasm, 8)
    while top.pos < top.end:
        section = top.byte()
        size = top.uleb()
        r = _Reader(wasm, top.pos, top.pos + size)
        if r.end > len(wasm):
            raise WasmFormatError("truncated WebAssembly binary")
        if section == 1:
            types = _types(r)
        elif section == 2:
            _imports(r, info, func_types)
        elif section == 3:
            func_types.extend(r.uleb() for _ in range(r.uleb()))
        elif section == 6:
            for _ in range(r.uleb()):
                valtype = _valtype(r)
                mutable = r.byte() == 1
                info.globals.append(Global(valtype, mutable, const_expr(r, info.globals)))
        elif section == 7:
            for _ in range(r.uleb()):
                name = r.name()
                kind = r.byte()
                index = r.uleb()
                if kind == 0x00:
                    exported_funcs[name] = index
                elif kind == 0x03:
                    info.exported_globals[name] = index
        elif section == 8:
            info.has_start = True
        elif section == 10:
            code_start = r.pos
            info.blocking |= _blocking_instructions(r)
        elif section == 11:
            _data(r, info)
        top.pos = r.end
    for name, index in exported_funcs.items():
        if index < len(func_types) and func_types[index] < len(types):
            info.functions[name] = types[func_types[index]]
    imported = sum(1 for i in info.imports if i.kind == "func")
    abi = exported_funcs.get("lc_abi_version")
    if abi is not None and code_start >= 0:
        info.abi_version = _abi_constant(wasm, code_start, abi - imported)
    for name, index in exported_funcs.items():
        if info.functions.get(name) == ((), ("i32",)) and code_start >= 0:
            value = _abi_constant(wasm, code_start, index - imported)
            if value is not None:
                info.constants[name] = value
    return info


def _abi_constant(wasm: bytes, code_start: int, body_index: int) -> int | None:
    """The constant the code section's body number ``body_index`` returns (see `_constant_body`)."""
    r = _Reader(wasm, code_start)
    if not 0 <= body_index < r.uleb():
        return None
    for _ in range(body_index):
        skip = r.uleb()  # read before moving: `r.pos += r.uleb()` would add to the old position
        r.pos += skip
    size = r.uleb()
    return _constant_body(_Reader(wasm, r.pos, r.pos + size))


def _data(r: _Reader, info: ModuleInfo) -> None:
    for _ in range(r.uleb()):
        flags = r.uleb()
        if flags == 1:
            info.passive_segments += 1
            r.bytes(r.uleb())
            continue
        if flags not in (0, 2):
            raise WasmFormatError(f"data segment with unknown flags {flags}")
        memory = r.uleb() if flags == 2 else 0
        offset = const_expr(r, info.globals)
        if offset is None:
            raise WasmFormatError("data segment offset is not an integer constant")
        n = r.uleb()
        r.bytes(n)
        info.data.append(DataSegment(memory, offset, n))


# ---------------------------------------------------------------------------
# The code section: walk every instruction (immediates decoded) to find blocking ones


def _memarg(r: _Reader) -> None:
    align = r.uleb()
    if align & 0x40:  # multi-memory: an explicit memory index follows
        r.uleb()
    r.uleb()


def _blocktype(r: _Reader) -> None:
    if r.pos < r.end and r.data[r.pos] in (0x40, I32, I64, F32, F64, V128, 0x70, 0x6F):
        r.pos += 1  # empty or a single value type
    else:
        r.sleb()  # a type index (s33)


# Opcodes (single byte) and the immediates they carry.
_NO_IMM: Final = frozenset({0x00, 0x01, 0x05, 0x0B, 0x0F, 0x1A, 0x1B, 0xD1}) | frozenset(range(0x45, 0xC5))
_ONE_IDX: Final = frozenset({0x0C, 0x0D, 0x10, 0x12, 0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0xD2})
_SIMD_MEMARG: Final = frozenset({*range(0, 12), 92, 93})
_SIMD_LANE: Final = frozenset(range(21, 35))
_SIMD_MEMARG_LANE: Final = frozenset(range(84, 92))
_FC_IMMEDIATES: Final = {8: 2, 9: 1, 10: 2, 11: 1, 12: 2, 13: 1, 14: 2, 15: 1, 16: 1, 17: 1}


def _instructions(r: _Reader) -> Iterator[tuple[int, int]]:
    """Yield (prefix, opcode) for each instruction up to ``r.end`` (prefix 0 for single bytes)."""
    while r.pos < r.end:
        op = r.byte()
        if op in _NO_IMM:
            yield 0, op
        elif op in (0x02, 0x03, 0x04):
            _blocktype(r)
            yield 0, op
        elif op in _ONE_IDX:
            r.uleb()
            yield 0, op
        elif op == 0x0E:
            for _ in range(r.uleb() + 1):
                r.uleb()
            yield 0, op
        elif op in (0x11, 0x13):
            r.uleb()
            r.uleb()
            yield 0, op
        elif op == 0x1C:
            for _ in range(r.uleb()):
                _valtype(r)
            yield 0, op
        elif 0x28 <= op <= 0x3E:
            _memarg(r)
            yield 0, op
        elif op in (0x3F, 0x40):
            r.uleb()
            yield 0, op
        elif op in (0x41, 0x42):
            r.sleb()
            yield 0, op
        elif op == 0x43:
            r.bytes(4)
            yield 0, op
        elif op == 0x44:
            r.bytes(8)
            yield 0, op
        elif op == 0xD0:
            r.sleb()
            yield 0, op
        elif op == 0xFC:
            sub = r.uleb()
            if sub > 17:
                raise WasmFormatError(f"code uses instruction 0xfc {sub}, which the engine does not allow")
            for _ in range(_FC_IMMEDIATES.get(sub, 0)):
                r.uleb()
            yield op, sub
        elif op == 0xFD:
            sub = r.uleb()
            if sub in _SIMD_MEMARG:
                _memarg(r)
            elif sub in (12, 13):
                r.bytes(16)
            elif sub in _SIMD_LANE:
                r.byte()
            elif sub in _SIMD_MEMARG_LANE:
                _memarg(r)
                r.byte()
            elif sub > 0x113:
                raise WasmFormatError(f"code uses instruction 0xfd {sub}, which the engine does not allow")
            yield op, sub
        elif op == 0xFE:
            sub = r.uleb()
            if sub == 0x03:
                r.byte()  # atomic.fence's reserved byte
            elif sub <= 0x4E:
                _memarg(r)
            else:
                raise WasmFormatError(f"code uses instruction 0xfe {sub}, which the engine does not allow")
            yield op, sub
        else:
            raise WasmFormatError(f"code uses opcode {op:#04x}, which the engine does not allow")


def _blocking_instructions(r: _Reader) -> set[str]:
    found: set[str] = set()
    for _ in range(r.uleb()):
        size = r.uleb()
        body = _Reader(r.data, r.pos, r.pos + size)
        for _ in range(body.uleb()):  # local declarations: count, type
            body.uleb()
            _valtype(body)
        for prefix, op in _instructions(body):
            if prefix == 0xFE and op in WAIT_OPCODES:
                found.add(WAIT_OPCODES[op])
        r.pos += size
    return found


@dataclass(frozen=True)
class StaticData:
    """Bytes [start, end) of the memory a module's data and bss occupy (empty: start == end)."""

    start: int
    end: int
    passive_segments: bool

    def overlaps(self, other: StaticData) -> bool:
        return self.start < other.end and other.start < self.end and self.start < self.end and other.start < other.end


def static_data(info: ModuleInfo) -> StaticData:
    """The module's static region: [__global_base, __heap_base) when exported, widened by every
    active data segment (offsets evaluated exactly, extended-const included)."""
    ranges = [(seg.offset, seg.end) for seg in info.data]
    heap_base = info.exported_global("__heap_base")
    if heap_base is not None and heap_base.value is not None:
        global_base = info.exported_global("__global_base")
        start = global_base.value if global_base is not None and global_base.value is not None else 0
        ranges.append((start, heap_base.value))
    elif info.passive_segments:
        raise WasmFormatError("a model with passive data segments must export __heap_base (and __global_base)")
    ranges = [r for r in ranges if r[1] > r[0]]
    if not ranges:
        return StaticData(0, 0, bool(info.passive_segments))
    return StaticData(min(r[0] for r in ranges), max(r[1] for r in ranges), bool(info.passive_segments))
