"""The code section of a WebAssembly binary: every instruction walked (immediates decoded), to find
those a model may not use. ``memory.atomic.wait*`` could block a thread until notified, which
epoch interruption cannot stop, so a module that uses one is refused (`blocking_instructions`);
an opcode outside what the engine allows is refused as it is met."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from services.common.wasm_reader import F32, F64, I32, I64, V128, WasmFormatError, WasmReader, valtype

WAIT_OPCODES: Final = {0x01: "memory.atomic.wait32", 0x02: "memory.atomic.wait64"}
"""0xFE-prefixed atomics that block the thread until notified; epoch interruption cannot stop them."""


def _memarg(r: WasmReader) -> None:
    align = r.uleb()
    if align & 0x40:  # multi-memory: an explicit memory index follows
        r.uleb()
    r.uleb()


def _blocktype(r: WasmReader) -> None:
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


def _instructions(r: WasmReader) -> Iterator[tuple[int, int]]:
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
                valtype(r)
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


def blocking_instructions(r: WasmReader) -> set[str]:
    """Names of the blocking instructions (`WAIT_OPCODES`) in the code section ``r`` holds."""
    found: set[str] = set()
    for _ in range(r.uleb()):
        size = r.uleb()
        body = WasmReader(r.data, r.pos, r.pos + size)
        for _ in range(body.uleb()):  # local declarations: count, type
            body.uleb()
            valtype(body)
        for prefix, op in _instructions(body):
            if prefix == 0xFE and op in WAIT_OPCODES:
                found.add(WAIT_OPCODES[op])
        r.pos += size
    return found
