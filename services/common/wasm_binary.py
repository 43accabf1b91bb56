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
The byte-level cursor is wasm_reader.py, the code section's instruction walk wasm_code.py.
`tests/engine/test_wasm_binary.py` fuzzes it against wasmtime's own view of generated modules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from services.common.wasm_code import blocking_instructions
from services.common.wasm_reader import F32, F64, I32, I64, V128, VALTYPE_NAMES, WasmFormatError, WasmReader, valtype

_MASK32: Final = 0xFFFFFFFF
_MASK64: Final = 0xFFFFFFFFFFFFFFFF


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
    blocking: set[str] = field(default_factory=set)
    """Names of blocking instructions the code uses (`WAIT_OPCODES`)."""

    def exported_global(self, name: str) -> Global | None:
        index = self.exported_globals.get(name)
        return self.globals[index] if index is not None and index < len(self.globals) else None


def const_expr(r: WasmReader, globals_: list[Global]) -> int | None:
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


def _limits(r: WasmReader) -> tuple[bool, int | None]:
    """(shared, maximum) of a table's or memory's limits."""
    flags = r.byte()
    r.uleb()
    maximum = r.uleb() if flags & 1 else None
    return bool(flags & 2), maximum


def _imports(r: WasmReader, info: ModuleInfo, func_types: list[int]) -> None:
    """Record the imports; an imported global would make global indices ambiguous here."""
    for _ in range(r.uleb()):
        module, name = r.name(), r.name()
        kind = r.byte()
        shared, maximum = False, None
        if kind == 0x00:
            func_types.append(r.uleb())
        elif kind == 0x01:
            valtype(r)
            _limits(r)
        elif kind == 0x02:
            shared, maximum = _limits(r)
        elif kind == 0x03:
            raise WasmFormatError(f"imports global {module}.{name}: only env.memory may be imported")
        else:
            raise WasmFormatError(f"import {module}.{name} has unknown kind {kind:#04x}")
        info.imports.append(Import(module, name, _IMPORT_KINDS[kind], shared, maximum))


def _types(r: WasmReader) -> list[Signature]:
    types: list[Signature] = []
    for _ in range(r.uleb()):
        if r.byte() != 0x60:
            raise WasmFormatError("type section holds a form other than a function type")
        params = tuple(VALTYPE_NAMES.get(valtype(r), "?") for _ in range(r.uleb()))
        results = tuple(VALTYPE_NAMES.get(valtype(r), "?") for _ in range(r.uleb()))
        types.append((params, results))
    return types


def _constant_body(r: WasmReader) -> int | None:
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
    top = WasmReader(wasm, 8)
    while top.pos < top.end:
        section = top.byte()
        size = top.uleb()
        r = WasmReader(wasm, top.pos, top.pos + size)
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
                value_type = valtype(r)
                mutable = r.byte() == 1
                info.globals.append(Global(value_type, mutable, const_expr(r, info.globals)))
        elif section == 7:
            for _ in range(r.uleb()):
                name = r.name()
                kind = r.byte()
                index = r.uleb()
                if kind == 0x00:
                    exported_funcs[name] = index
                elif kind == 0x03:
                    info.exported_globals[name] = index
        elif section == 10:
            code_start = r.pos
            info.blocking |= blocking_instructions(r)
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
    r = WasmReader(wasm, code_start)
    if not 0 <= body_index < r.uleb():
        return None
    for _ in range(body_index):
        skip = r.uleb()  # read before moving: `r.pos += r.uleb()` would add to the old position
        r.pos += skip
    size = r.uleb()
    return _constant_body(WasmReader(wasm, r.pos, r.pos + size))


def _data(r: WasmReader, info: ModuleInfo) -> None:
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
