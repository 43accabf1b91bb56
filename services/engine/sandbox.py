"""The sandbox around model code: what a model may import, how much memory and time it gets,
and how its failures become typed errors.

- Imports: only ``env.memory`` (a shared memory) is allowed; anything else (WASI, host
  functions) is refused at load with `ForbiddenImportError`, before any code runs.
- Memory: the shared memory's maximum is the cap (wasmtime's store limits do not apply to
  shared memories); a module whose import needs more than the cap is refused at load, and
  a trap after the model grew the memory to the cap is reported as `ModelMemoryExceeded`.
- Time: epoch interruption. `EpochTicker` advances the engine's epoch every ``interval``
  seconds; each call gets a deadline in ticks (the run's deadline, at most ``max_call_seconds``,
  the engine's limit per call); the interrupt trap becomes `ModelDeadlineExceeded` (the run's
  deadline), `ModelTimeLimitExceeded` (the limit per call: the model is blamed) or
  `ModelCancelled` when the run was cancelled (the ticker interrupts calls in flight as soon as
  a watched cancel event is set).
- Traps: `map_trap` turns a wasmtime trap into `ModelTrap` (or the two above); a failure
  while instantiating (a start function that traps, a data segment out of bounds) is a load
  error, `instantiation_error`.
- The binary, read before any code runs (`services.common.wasm_binary`): static data must lie in the
  models' region, exported entry points must have the ABI's signatures, ``__stack_pointer``
  must be a mutable i32, and no code may use ``memory.atomic.wait*`` (a wait cannot be
  interrupted, so it would hold a worker thread for ever).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import wasmtime

from services.common.wasm_binary import ModuleInfo
from services.engine.errors import (
    ForbiddenImportError,
    ModelCancelled,
    ModelDeadlineExceeded,
    ModelLoadError,
    ModelMemoryExceeded,
    ModelTimeLimitExceeded,
    ModelTrap,
)
from services.engine.runtime import PAGE, Runtime
from services.valuation.model_abi import SIGNATURES


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
    # an import links only if the provided memory's maximum is within the declared one: the
    # engine's memory may grow to the cap, so a smaller declared maximum could never link
    if memory.limits.max is None or memory.limits.max * PAGE < cap:
        declared = "no maximum" if memory.limits.max is None else f"a maximum of {memory.limits.max} pages"
        raise ModelLoadError(
            f"model {name!r} imports env.memory with {declared}; the engine's memory grows to "
            f"{cap // PAGE} pages: declare the maximum as 65535 pages (-Wl,--max-memory=4294901760)"
        )
    return ModelImports(memory.limits.min, memory.limits.max)


class EpochTicker:
    """A daemon thread that advances the engine's epoch every ``interval`` seconds.

    It also interrupts WASM in flight when a watched cancel event is set: every call's
    deadline is at most ``max_call_ticks`` ahead, so advancing the epoch by that much traps
    every running call at its next loop back-edge. ``max_call_ticks`` is kept small (401 with
    the pool's 45 s limit per call) so that the interrupt takes about a millisecond: a slow one would let calls
    that start meanwhile get deadlines past it. Calls of other runs
    that get caught too see an interrupt they did not ask for; `_Worker.call` re-runs them
    (entry points are idempotent).
    """

    def __init__(self, runtime: Runtime, interval: float = 0.05, max_call_seconds: float = 120.0) -> None:
        if not interval > 0 or not max_call_seconds > 0:
            raise ValueError("the epoch interval and the limit per call must be > 0 seconds")
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


def instantiation_error(model: str, exc: wasmtime.Trap | wasmtime.WasmtimeError) -> ModelLoadError:
    """A module that cannot be instantiated (its start function trapped, a segment does not
    fit, its imports do not link) is a bad module: a load error."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    reason = lines[-1] if lines else "unknown error"
    where = "its start function trapped" if isinstance(exc, wasmtime.Trap) else "instantiation failed"
    return ModelLoadError(f"model {model!r} cannot be instantiated: {where}: {reason}")


def map_trap(
    exc: wasmtime.Trap | wasmtime.WasmtimeError,
    *,
    model: str,
    function: str,
    at_cap: bool,
    cancelled: bool,
    call_limit: float | None = None,
) -> Exception:
    """The typed error for a trap raised by ``model``'s ``function``; ``call_limit``: the seconds
    per call, when an interrupt came from that limit rather than the run's deadline."""
    code = exc.trap_code if isinstance(exc, wasmtime.Trap) else None
    if code == wasmtime.TrapCode.INTERRUPT:
        if cancelled:
            return ModelCancelled(f"model {model!r} {function} was cancelled")
        if call_limit is not None:
            return ModelTimeLimitExceeded(model, function, call_limit)
        return ModelDeadlineExceeded(f"model {model!r} {function} ran past its deadline and was interrupted")
    if at_cap:
        return ModelMemoryExceeded(f"model {model!r} {function} trapped after growing memory to the cap: {exc}")
    if code == wasmtime.TrapCode.STACK_OVERFLOW:
        return ModelTrap(model, function, "stack overflow", code.name)
    return ModelTrap(model, function, str(exc), code.name if code is not None else None)


# ---------------------------------------------------------------------------
# Static checks of the binary (before any code runs)


def check_code(name: str, info: ModuleInfo) -> None:
    """Refuse instructions that can block a thread beyond the reach of epoch interruption."""
    if info.blocking:
        raise ModelLoadError(
            f"model {name!r} uses {', '.join(sorted(info.blocking))}: a model may not block "
            "(an atomic wait cannot be interrupted by deadlines or cancellation)"
        )


def check_exports(name: str, module: wasmtime.Module) -> None:
    """Every ABI entry point the module exports has the ABI's signature, and ``__stack_pointer``
    (which the host sets per worker) is a mutable i32 global."""
    for export in module.exports:
        ty = export.type
        want = SIGNATURES.get(export.name)
        if want is not None:
            got = (
                (tuple(str(p) for p in ty.params), tuple(str(r) for r in ty.results))
                if isinstance(ty, wasmtime.FuncType)
                else None
            )
            if got != want:
                shown = "not a function" if got is None else f"({', '.join(got[0])}) -> ({', '.join(got[1])})"
                raise ModelLoadError(
                    f"model {name!r} export {export.name!r} has signature {shown}; "
                    f"the model ABI needs ({', '.join(want[0])}) -> ({', '.join(want[1])})"
                )
        elif export.name == "__stack_pointer" and not (
            isinstance(ty, wasmtime.GlobalType) and ty.mutable and str(ty.content) == "i32"
        ):
            raise ModelLoadError(
                f"model {name!r} exports __stack_pointer that is not a mutable i32 global; "
                "the host must set it to each worker's own stack"
            )
