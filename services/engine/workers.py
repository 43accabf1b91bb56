"""K worker threads that run model code on one shared memory.

`WasmPool`: each worker owns a wasmtime Store and, per model, an Instance importing the
engine's one SharedMemory, with ``__stack_pointer`` set to the worker's own stack region
(instances sharing a memory would otherwise share one C stack). wasmtime-py calls release
the GIL, so K workers run WASM in parallel. A Store is used by one thread at a time: a
`map` hands worker k to exactly one task, and one run holds the pool at a time.

`NativePool` runs the same C compiled natively (benchmark baseline) through ctypes, which
also releases the GIL, with the same offsets into a `NativeMemory` buffer.

Both implement `Executor`, which the model drivers (`wasm_nodes.py`) program against.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import wasmtime

from services.engine.errors import EngineClosed, ModelCancelled, ModelDeadlineExceeded, ModelFailed, ModelLoadError
from services.engine.memory import STATIC_LIMIT, Arena, EngineMemory
from services.engine.runtime import Runtime
from services.engine.sandbox import EpochTicker, StaticData, check_imports, map_trap, static_data

GROW_SLACK = 1 << 20
"""A trap after growing memory to within this many bytes of the cap counts as memory exhaustion."""

RC_MEANING = {
    1: "context written for another ABI version",
    2: "row, block or scenario range outside the context's sizes",
    3: "a policy needs an age, year or month the tables do not cover",
}


@dataclass
class RunControl:
    """Deadline (time.monotonic() seconds) and cancellation of one run."""

    deadline: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event)

    def remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    def check(self, what: str) -> None:
        """Raise if the run was cancelled or is past its deadline (checked between calls)."""
        if self.cancel.is_set():
            raise ModelCancelled(f"{what} was cancelled")
        left = self.remaining()
        if left is not None and left <= 0:
            raise ModelDeadlineExceeded(f"{what} ran past its deadline")


class Executor(Protocol):
    """Runs a model's entry points over ranges of work on K threads, over one memory."""

    threads: int

    @property
    def memory(self) -> Arena: ...

    def call(self, model: str, function: str, args: Sequence[int], control: RunControl) -> None: ...

    def call_value(self, model: str, function: str, args: Sequence[int], control: RunControl) -> int: ...

    def map(
        self, model: str, function: str, ctx: int, ranges: Sequence[tuple[int, int]], control: RunControl
    ) -> None: ...


def check_rc(model: str, function: str, rc: int) -> None:
    if rc != 0:
        raise ModelFailed(model, function, rc, RC_MEANING.get(rc, "unknown status"))


def map_threads(
    threads: int,
    ranges: Sequence[tuple[int, int]],
    run_one: Callable[[int, tuple[int, int]], None],
    pool: ThreadPoolExecutor,
) -> None:
    """Run ``run_one(worker, range)`` for every range, pulled dynamically by up to K workers."""
    it: Iterator[tuple[int, int]] = iter(ranges)
    lock = threading.Lock()
    failed = threading.Event()

    def loop(worker: int) -> None:
        while not failed.is_set():
            with lock:
                item = next(it, None)
            if item is None:
                return
            try:
                run_one(worker, item)
            except BaseException:
                failed.set()
                raise

    n = min(threads, len(ranges))
    if n <= 1:
        loop(0)
        return
    futures = [pool.submit(loop, k) for k in range(n)]
    errors = [f.exception() for f in futures]
    first = next((e for e in errors if e is not None), None)
    if first is not None:
        raise first


# ---------------------------------------------------------------------------
# WASM


@dataclass(frozen=True)
class LoadedModel:
    """A compiled model that passed the sandbox's load checks."""

    name: str
    sha256: str
    module: wasmtime.Module
    statics: StaticData
    exports: frozenset[str]


class _Instance:
    """One model instance in a Store of its own (see `_Worker`)."""

    def __init__(self, runtime: Runtime, memory: EngineMemory, model: LoadedModel, stack_top: int) -> None:
        self.store = wasmtime.Store(runtime.engine)
        self.store.set_limits(memory_size=memory.cap, instances=1, tables=4, memories=1)
        self.store.set_epoch_deadline(1 << 62)
        instance = wasmtime.Instance(self.store, model.module, [memory.shared])
        self.exports = instance.exports(self.store)
        if "__stack_pointer" in model.exports:
            stack_pointer = self.exports["__stack_pointer"]
            if not isinstance(stack_pointer, wasmtime.Global):
                raise ModelLoadError(f"model {model.name!r} exports __stack_pointer that is not a global")
            stack_pointer.set_value(self.store, wasmtime.Val.i32(stack_top))


class _Worker:
    """One thread's instances, one per model, each in its own Store (created on first use,
    dropped after a trap).

    One instance per Store: wasmtime 50 aborts the process (``assertion failed:
    fault.is_none()``, store.rs) when an instance traps out of bounds on a shared memory that
    another instance in the same Store also imports; `tests/engine/test_sandbox.py` covers it.
    """

    def __init__(self, index: int, runtime: Runtime, memory: EngineMemory) -> None:
        self.index = index
        self._runtime, self._memory = runtime, memory
        self._instances: dict[str, _Instance] = {}

    def _instance(self, model: LoadedModel) -> _Instance:
        inst = self._instances.get(model.sha256)
        if inst is None:
            inst = _Instance(self._runtime, self._memory, model, self._memory.stack_top(self.index))
            self._instances[model.sha256] = inst
        return inst

    def call(
        self,
        model: LoadedModel,
        function: str,
        args: Sequence[int],
        *,
        control: RunControl,
        ticker: EpochTicker,
        size_before: int,
    ) -> int:
        """Call ``function``; ``size_before`` is the memory size when this batch of calls began."""
        while True:
            control.check(f"model {model.name!r} {function}")
            inst = self._instance(model)
            func = inst.exports[function]
            if not isinstance(func, wasmtime.Func):
                raise ModelLoadError(f"model {model.name!r} export {function!r} is not a function")
            inst.store.set_epoch_deadline(ticker.ticks(control.remaining()))
            started = time.monotonic()
            try:
                return int(func(inst.store, *args))
            except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
                del self._instances[model.sha256]  # a trapped instance may be inconsistent: start afresh
                if _spurious_interrupt(exc, control, time.monotonic() - started, ticker):
                    continue  # another run's cancellation interrupted this call: run it again
                # the model (or a sibling call of the same batch) grew the memory up to about the cap,
                # then trapped: the usual end of an allocation that memory.grow refused
                size_after = self._memory.size
                at_cap = size_after > size_before and size_after > self._memory.cap - GROW_SLACK
                raise map_trap(
                    exc, model=model.name, function=function, at_cap=at_cap, cancelled=control.cancel.is_set()
                ) from exc


def _spurious_interrupt(exc: Exception, control: RunControl, elapsed: float, ticker: EpochTicker) -> bool:
    """An epoch interrupt that neither this run's cancellation nor a deadline explains."""
    if not isinstance(exc, wasmtime.Trap) or exc.trap_code != wasmtime.TrapCode.INTERRUPT:
        return False
    left = control.remaining()
    return not control.cancel.is_set() and (left is None or left > 0) and elapsed < ticker.max_call_seconds


class WasmPool:
    """K workers (threads, Stores) over one `EngineMemory`; loads and sandboxes models."""

    def __init__(self, runtime: Runtime, *, threads: int, memory_cap: int | None = None, tick: float = 0.05) -> None:
        self.runtime = runtime
        self.threads = threads
        self._memory = EngineMemory(runtime, threads=threads, **({"cap": memory_cap} if memory_cap else {}))
        self._ticker = EpochTicker(runtime, tick)
        self._workers = [_Worker(k, runtime, self._memory) for k in range(threads)]
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="livecalc-wasm")
        self._models: dict[str, LoadedModel] = {}
        self._run_lock = threading.Lock()
        self._closed = False

    @property
    def memory(self) -> EngineMemory:
        return self._memory

    def load(self, name: str, wasm: bytes) -> LoadedModel:
        """Compile (cached), check imports, memory needs and static data; register as ``name``."""
        if self._closed:
            raise EngineClosed("worker pool is closed")
        module = self.runtime.module(wasm, name)
        check_imports(name, module, self._memory.cap)
        statics = static_data(wasm)
        if statics.end > STATIC_LIMIT:
            raise ModelLoadError(f"model {name!r} static data ends at {statics.end}, past the {STATIC_LIMIT} limit")
        digest = hashlib.sha256(wasm).hexdigest()
        for other in self._models.values():
            if other.sha256 != digest and other.name != name and statics.overlaps(other.statics):
                raise ModelLoadError(
                    f"model {name!r} static data [{statics.start}, {statics.end}) overlaps model {other.name!r}"
                )
        exports = frozenset(e.name for e in module.exports)
        model = LoadedModel(name, digest, module, statics, exports)
        self._models[name] = model
        return model

    def model(self, name: str) -> LoadedModel:
        return self._models[name]

    def call(self, model: str, function: str, args: Sequence[int], control: RunControl) -> None:
        with self._run_lock, self._watching(control):
            m = self._models[model]
            rc = self._workers[0].call(
                m, function, args, control=control, ticker=self._ticker, size_before=self._memory.size
            )
            check_rc(m.name, function, rc)

    def call_value(self, model: str, function: str, args: Sequence[int], control: RunControl) -> int:
        """Call and return the result as is (no status check)."""
        with self._run_lock, self._watching(control):
            m = self._models[model]
            return self._workers[0].call(
                m, function, args, control=control, ticker=self._ticker, size_before=self._memory.size
            )

    def map(self, model: str, function: str, ctx: int, ranges: Sequence[tuple[int, int]], control: RunControl) -> None:
        m = self._models[model]
        size_before = self._memory.size

        def run_one(worker: int, item: tuple[int, int]) -> None:
            args = (ctx, item[0], item[1])
            rc = self._workers[worker].call(
                m, function, args, control=control, ticker=self._ticker, size_before=size_before
            )
            check_rc(m.name, function, rc)

        with self._run_lock, self._watching(control):
            map_threads(self.threads, ranges, run_one, self._pool)

    @contextlib.contextmanager
    def _watching(self, control: RunControl) -> Iterator[None]:
        self._ticker.watch(control.cancel)
        try:
            yield
        finally:
            self._ticker.unwatch(control.cancel)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._pool.shutdown(wait=True)
        self._ticker.close()
        self._memory.close()

    def __enter__(self) -> WasmPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
