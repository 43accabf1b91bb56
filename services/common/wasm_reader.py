"""The byte level of a WebAssembly binary: a bounds-checked cursor with LEB128 integers, and value
types. `WasmFormatError` is how every reader of a binary (wasm_binary.py, wasm_code.py) refuses
bytes it does not decode."""

from __future__ import annotations

from typing import Final

from services.common.errors import InvalidArgument


class WasmFormatError(InvalidArgument):
    """The bytes are not a WebAssembly module this reader decodes, or use what a model may not."""


class WasmReader:
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

    def _leb(self) -> tuple[int, int, int]:
        """One LEB128 integer's payload bits, how many bits they are, and its last byte (whose
        0x40 bit is a signed integer's sign)."""
        result = shift = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return result, shift, b
            if shift > 70:
                raise WasmFormatError("malformed LEB128 integer in WebAssembly binary")

    def uleb(self) -> int:
        return self._leb()[0]

    def sleb(self) -> int:
        result, shift, last = self._leb()
        return result - (1 << shift) if last & 0x40 else result

    def name(self) -> str:
        return self.bytes(self.uleb()).decode("utf-8", "replace")


# Value types as bytes: i32, i64, f32, f64, v128, funcref, externref.
I32, I64, F32, F64, V128 = 0x7F, 0x7E, 0x7D, 0x7C, 0x7B
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


def valtype(r: WasmReader) -> int:
    t = r.byte()
    if t in (0x63, 0x64):  # (ref null? heaptype) of the GC proposal
        r.sleb()
    return t
