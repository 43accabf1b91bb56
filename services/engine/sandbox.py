"""The sandbox around model code: what a model may import, how much memory and time it gets,
and how its failures become typed errors.

- Imports: only ``env.memory`` (a shared memory) is allowed; anything else (WASI, host
  functions) is refused at load with `ForbiddenImportError`, before any code runs.
- Memory: the shared memory's maximum is the cap (wasmtime's store limits do not apply to
  shared memories); a module whose import needs more than the cap is refused at load, and
  a trap after the model grew the memory to the cap is reported as `ModelMemoryExceeded`.
- Time: epoch interruption. `EpochTicker` advances the engine's epoch every ``interval``
  seconds; each call gets a deadline in ticks (at most ``max_call_seconds``); the interrupt
  trap becomes `ModelDeadlineExceeded`, or `ModelCancelled` when the run was cancelled (the
  ticker interrupts calls in flight as soon as a watched cancel event is set).
- Traps: `map_trap` turns a wasmtime trap into `ModelTrap` (or the two above).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import wasmtime

from services.engine.errors import (
    ForbiddenImportError,
    ModelCancelled,
    ModelDeadlineExceeded,
    ModelLoadError,
    ModelMemoryExceeded,
    ModelTrap,
)
from services.engine.runtime import PAGE, Runtime


@dataclass(frozen=True)
class ModelImports:
    """What a module imports, checked: its memory import's limits."""

    min_pages: int
    max_pages: int | None


def check_imports(name: str, module: wasmtime.Module, cap: int) -> ModelImports:
    """Refuse a module that imports anything but a shared ``env.memory`` within ``cap`` bytes."""
    forbidden: list[str] = []
    memory: wasmtime.MemoryType | None = None
    for imp in module.imports:
        ty = imp.type
        if imp.module == "env" and imp.name == "memory" and isinstance(ty, wasmtime.MemoryType):
            memory = ty
        else:
            kind = type(ty).__name__.removesuffix("Type").lower()
            forbidden.append(f"{imp.module}.{imp.name} ({kind})")
    if forbidden:
        raise ForbiddenImportError(name, forbidden)
    if memory is None:
        raise ModelLoadError(f"model {name!r} does not import env.memory; the model ABI needs the shared memory")
    if not memory.is_shared:
        raise ModelLoadError(f"model {name!r} imports env.memory unshared; the model ABI needs a shared memory")
    if memory.limits.min * PAGE > cap:
        raise ModelMemoryExceeded(
            f"model {name!r} needs at least {memory.limits.min * PAGE} bytes of memory; the cap is {cap} bytes"
        )
    return ModelImports(memory.limits.min, memory.limits.max)


class EpochTicker:
    """A daemon thread that advances the engine's epoch every ``interval`` seconds.

    It also interrupts WASM in flight when a watched cancel event is set: every call's
    deadline is at most ``max_call_ticks`` ahead, so advancing the epoch by that much traps
    every running call at its next loop back-edge. ``max_call_ticks`` is kept small (2,401 with
    the defaults) so that the interrupt takes about a millisecond: a slow one would let calls
    that start meanwhile get deadlines past it. Calls of other runs
    that get caught too see an interrupt they did not ask for; `_Worker.call` re-runs them
    (entry points are idempotent).
    """

    def __init__(self, runtime: Runtime, interval: float = 0.05, max_call_seconds: float = 120.0) -> None:
        self.interval = interval
        self.max_call_seconds = max_call_seconds
        self.max_call_ticks = math.ceil(max_call_seconds / interval) + 1
        self._runtime = runtime
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._watched: dict[int, threading.Event] = {}
        self._interrupted: set[int] = set()
        self._thread = threading.Thread(target=self._run, name="livecalc-epoch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._runtime.increment_epoch()
            with self._lock:
                fresh = [k for k, ev in self._watched.items() if ev.is_set() and k not in self._interrupted]
                self._interrupted.update(fresh)
            if fresh:
                self.interrupt()

    def watch(self, cancel: threading.Event) -> None:
        """Interrupt running calls as soon as ``cancel`` is set (until `unwatch`)."""
        with self._lock:
            self._watched[id(cancel)] = cancel

    def unwatch(self, cancel: threading.Event) -> None:
        with self._lock:
            self._watched.pop(id(cancel), None)
            self._interrupted.discard(id(cancel))

    def interrupt(self) -> None:
        """Trap every call in flight on this engine (epoch past every deadline)."""
        for _ in range(self.max_call_ticks + 1):
            self._runtime.increment_epoch()

    def ticks(self, seconds: float | None) -> int:
        """Epoch deadline (in ticks from now) for ``seconds`` of run time, at most one call's limit."""
        if seconds is None:
            return self.max_call_ticks
        return min(self.max_call_ticks, max(1, math.ceil(seconds / self.interval) + 1))

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def map_trap(
    exc: wasmtime.Trap | wasmtime.WasmtimeError,
    *,
    model: str,
    function: str,
    at_cap: bool,
    cancelled: bool,
) -> Exception:
    """The typed error for a trap raised by ``model``'s ``function``."""
    code = exc.trap_code if isinstance(exc, wasmtime.Trap) else None
    if code == wasmtime.TrapCode.INTERRUPT:
        if cancelled:
            return ModelCancelled(f"model {model!r} {function} was cancelled")
        return ModelDeadlineExceeded(f"model {model!r} {function} ran past its deadline and was interrupted")
    if at_cap:
        return ModelMemoryExceeded(f"model {model!r} {function} trapped after growing memory to the cap: {exc}")
    if code == wasmtime.TrapCode.STACK_OVERFLOW:
        return ModelTrap(model, function, "stack overflow", code.name)
    return ModelTrap(model, function, str(exc), code.name if code is not None else None)


# ---------------------------------------------------------------------------
# Where a module's static data lies, read from the binary (before any code runs)


def _uleb(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result, pos


def _sleb(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            if byte & 0x40:
                result -= 1 << shift
            return result, pos


def _const_expr(data: bytes, pos: int) -> tuple[int | None, int]:
    """Value of an i32.const constant expression (None for any other), and the end position."""
    value: int | None = None
    op = data[pos]
    pos += 1
    if op == 0x41:
        value, pos = _sleb(data, pos)
        value &= 0xFFFFFFFF
    while data[pos] != 0x0B:  # skip anything else up to `end`
        pos += 1
    return value, pos + 1


@dataclass(frozen=True)
class StaticData:
    """Bytes [start, end) of the memory a module's data and bss occupy (empty: start == end)."""

    start: int
    end: int
    passive_segments: bool

    def overlaps(self, other: StaticData) -> bool:
        return self.start < other.end and other.start < self.end and self.start < self.end and other.start < other.end


def static_data(wasm: bytes) -> StaticData:
    """The module's static region: [__global_base, __heap_base) when exported, widened by any
    active data segment. The module must have passed `check_imports` (no imported globals)."""
    pos = 8
    globals_: list[int | None] = []
    exports: dict[str, int] = {}
    ranges: list[tuple[int, int]] = []
    passive = False
    while pos < len(wasm):
        section = wasm[pos]
        size, pos = _uleb(wasm, pos + 1)
        body_end = pos + size
        if section == 6:  # globals
            count, p = _uleb(wasm, pos)
            for _ in range(count):
                p += 2  # valtype, mutability
                value, p = _const_expr(wasm, p)
                globals_.append(value)
        elif section == 7:  # exports
            count, p = _uleb(wasm, pos)
            for _ in range(count):
                n, p = _uleb(wasm, p)
                name = wasm[p : p + n].decode("utf-8", "replace")
                kind = wasm[p + n]
                index, p = _uleb(wasm, p + n + 1)
                if kind == 3:
                    exports[name] = index
        elif section == 11:  # data
            count, p = _uleb(wasm, pos)
            for _ in range(count):
                flags, p = _uleb(wasm, p)
                offset: int | None = None
                if flags == 2:
                    _, p = _uleb(wasm, p)
                if flags in (0, 2):
                    offset, p = _const_expr(wasm, p)
                else:
                    passive = True
                n, p = _uleb(wasm, p)
                if offset is not None:
                    ranges.append((offset, offset + n))
                p += n
        pos = body_end

    def exported(name: str) -> int | None:
        index = exports.get(name)
        return globals_[index] if index is not None and index < len(globals_) else None

    heap_base = exported("__heap_base")
    if heap_base is not None:
        global_base = exported("__global_base")
        ranges.append((global_base if global_base is not None else 0, heap_base))
    elif passive:
        raise ModelLoadError("a model with passive data segments must export __heap_base (and __global_base)")
    ranges = [r for r in ranges if r[1] > r[0]]
    if not ranges:
        return StaticData(0, 0, passive)
    return StaticData(min(r[0] for r in ranges), max(r[1] for r in ranges), passive)
