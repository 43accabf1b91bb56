"""What a WebAssembly binary declares, read without compiling or running it.

The package validator (gateway, CLI) must judge a model's binary the way the engine's sandbox
will, but a service may not import another service's modules: this small reader is the shared
part. It decodes only what the checks need (imports, exported functions' signatures, the
values of module-defined globals, where active data segments land, and the constant that
``lc_abi_version`` returns) and raises `WasmFormatError` for anything it cannot decode rather
than guessing. Full validation is wasmtime's job; this reader never executes code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

MAGIC: Final = b"\0asm\x01\0\0\0"
VALTYPES: Final = {0x7F: "i32", 0x7E: "i64", 0x7D: "f32", 0x7C: "f64", 0x7B: "v128", 0x70: "funcref", 0x6F: "externref"}
_KINDS: Final = {0: "func", 1: "table", 2: "memory", 3: "global"}


class WasmFormatError(ValueError):
    """The bytes are not a WebAssembly module this reader can decode."""


@dataclass(frozen=True)
class Import:
    """One import: ``kind`` is func, table, memory or global; ``shared`` for a shared memory."""

    module: str
    name: str
    kind: str
    shared: bool = False


@dataclass(frozen=True)
class WasmFacts:
    """The declarations of one module that the package validator checks."""

    imports: tuple[Import, ...]
    #: exported function name → (param types, result types), as wasmtime spells value types
    functions: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = field(default_factory=dict)
    #: exported integer global name → initial value (None when not a constant)
    globals: dict[str, int | None] = field(default_factory=dict)
    #: [start, end) of every active data segment
    data: tuple[tuple[int, int], ...] = ()
    #: the constant ``lc_abi_version`` returns, when its body is just that constant
    abi_version: int | None = None

    def static_range(self) -> tuple[int, int]:
        """[start, end) of the module's static data: its data segments, widened by
        [__global_base, __heap_base) when exported (the stack and bss lie there too)."""
        ranges = [r for r in self.data if r[1] > r[0]]
        heap = self.globals.get("__heap_base")
        if heap is not None:
            ranges.append((self.globals.get("__global_base") or 0, heap))
        ranges = [r for r in ranges if r[1] > r[0]]
        if not ranges:
            return (0, 0)
        return (min(r[0] for r in ranges), max(r[1] for r in ranges))


class _Cursor:
    def __init__(self, data: bytes, pos: int = 0, end: int | None = None) -> None:
        self.data, self.pos, self.end = data, pos, len(data) if end is None else end

    def byte(self) -> int:
        if self.pos >= self.end:
            raise WasmFormatError("truncated WebAssembly binary")
        self.pos += 1
        return self.data[self.pos - 1]

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > self.end:
            raise WasmFormatError("truncated WebAssembly binary")
        self.pos += n
        return self.data[self.pos - n : self.pos]

    def leb(self, signed: bool = False) -> int:
        result = shift = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return result - (1 << shift) if signed and b & 0x40 else result
            if shift > 70:
                raise WasmFormatError("malformed LEB128 integer")

    def name(self) -> str:
        return self.take(self.leb()).decode("utf-8", "replace")

    def limits(self) -> bool:
        flags = self.leb()
        self.leb()
        if flags & 1:
            self.leb()
        return bool(flags & 2)


def _const(c: _Cursor, globals_: list[int | None]) -> int | None:
    """A constant expression's integer value (i32/i64.const, global.get); None otherwise."""
    op = c.byte()
    if op == 0x41:
        value: int | None = c.leb(signed=True) & 0xFFFFFFFF
    elif op == 0x42:
        value = c.leb(signed=True) & 0xFFFFFFFFFFFFFFFF
    elif op == 0x23:
        index = c.leb()
        value = globals_[index] if index < len(globals_) else None
    else:
        raise WasmFormatError(f"unsupported constant expression (opcode 0x{op:02x})")
    if c.byte() != 0x0B:
        raise WasmFormatError("unsupported constant expression (more than one instruction)")
    return value


def read_facts(wasm: bytes) -> WasmFacts:
    """Decode ``wasm``'s declarations; `WasmFormatError` when it is not a module we can read."""
    if wasm[:8] != MAGIC:
        raise WasmFormatError("not a WebAssembly module (bad magic number or version)")
    c = _Cursor(wasm, 8)
    types: list[tuple[tuple[str, ...], tuple[str, ...]]] = []
    imports: list[Import] = []
    func_types: list[int] = []
    globals_: list[int | None] = []
    exports: list[tuple[str, int, int]] = []
    bodies: list[bytes] = []
    data: list[tuple[int, int]] = []
    while c.pos < c.end:
        section, size = c.byte(), c.leb()
        s = _Cursor(wasm, c.pos, c.pos + size)
        if s.end > c.end:
            raise WasmFormatError("truncated WebAssembly binary")
        c.pos = s.end
        if section == 1:
            for _ in range(s.leb()):
                if s.byte() != 0x60:
                    raise WasmFormatError("unsupported type form")
                params = tuple(VALTYPES.get(s.byte(), "?") for _ in range(s.leb()))
                results = tuple(VALTYPES.get(s.byte(), "?") for _ in range(s.leb()))
                types.append((params, results))
        elif section == 2:
            for _ in range(s.leb()):
                module, name, kind = s.name(), s.name(), s.byte()
                shared = False
                if kind == 0:
                    func_types.append(s.leb())
                elif kind == 1:
                    s.byte()
                    s.limits()
                elif kind == 2:
                    shared = s.limits()
                elif kind == 3:
                    s.byte()
                    s.byte()
                    globals_.append(None)  # an imported global's value is not known statically
                else:
                    raise WasmFormatError(f"unknown import kind {kind}")
                imports.append(Import(module, name, _KINDS[kind], shared))
        elif section == 3:
            func_types.extend(s.leb() for _ in range(s.leb()))
        elif section == 6:
            for _ in range(s.leb()):
                s.byte()
                s.byte()
                globals_.append(_const(s, globals_))
        elif section == 7:
            exports.extend((s.name(), s.byte(), s.leb()) for _ in range(s.leb()))
        elif section == 10:
            for _ in range(s.leb()):
                bodies.append(s.take(s.leb()))
        elif section == 11:
            for _ in range(s.leb()):
                flags = s.leb()
                if flags == 1:  # passive: placed by memory.init, not at instantiation
                    s.take(s.leb())
                    continue
                if flags == 2:
                    s.leb()
                elif flags != 0:
                    raise WasmFormatError(f"unsupported data segment flags {flags}")
                offset = _const(s, globals_)
                length = s.leb()
                s.take(length)
                if offset is None:
                    raise WasmFormatError("a data segment's offset is not a constant")
                data.append((offset, offset + length))
    imported_funcs = sum(1 for i in imports if i.kind == "func")
    functions: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
    exported_globals: dict[str, int | None] = {}
    abi_version = None
    for name, kind, index in exports:
        if kind == 0 and index < len(func_types) and func_types[index] < len(types):
            functions[name] = types[func_types[index]]
            body = index - imported_funcs
            if name == "lc_abi_version" and 0 <= body < len(bodies):
                abi_version = _constant_body(bodies[body])
        elif kind == 3 and index < len(globals_):
            exported_globals[name] = globals_[index]
    return WasmFacts(tuple(imports), functions, exported_globals, tuple(data), abi_version)


def _constant_body(body: bytes) -> int | None:
    """N when a function body is exactly ``i32.const N; end`` (no locals), else None."""
    c = _Cursor(body)
    try:
        if c.leb() != 0 or c.byte() != 0x41:
            return None
        value = c.leb(signed=True)
        return value if c.byte() == 0x0B and c.pos == c.end else None
    except WasmFormatError:
        return None
