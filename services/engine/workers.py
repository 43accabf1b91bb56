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

import hashlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

import wasmtime

from services.engine.errors import EngineClosed, ModelCancelled, ModelDeadlineExceeded, ModelFailed, ModelLoadError
from services.engine.memory import STATIC_LIMIT, Arena, EngineMemory
from services.engine.runtime import Runtime
from services.engine.sandbox import EpochTicker, StaticData, check_imports, map_trap, static_data

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


def _check_rc(model: str, function: str, rc: int) -> None:
    if rc != 0:
        raise ModelFailed(model, function, rc, RC_MEANING.get(rc, "unknown status"))


def _map_threads(
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


class _Worker:
    """One thread's Store and its instances (created on first use, dropped after a trap)."""

    def __init__(self, index: int, runtime: Runtime, memory: EngineMemory) -> None:
        self.index = index
        self._runtime, self._memory = runtime, memory
        self._reset()

    def _reset(self) -> None:
        self.store = wasmtime.Store(self._runtime.engine)
        self.store.set_limits(memory_size=self._memory.cap, instances=16, tables=16, memories=1)
        self.instances: dict[str, tuple[wasmtime.Instance, Any]] = {}

    def exports(self, model: LoadedModel) -> Any:
        entry = self.instances.get(model.sha256)
        if entry is None:
            self.store.set_epoch_deadline(1 << 62)
            instance = wasmtime.Instance(self.store, model.module, [self._memory.shared])
            exports = instance.exports(self.store)
            if "__stack_pointer" in model.exports:
                exports["__stack_pointer"].set_value(self.store, wasmtime.Val.i32(self._memory.stack_top(self.index)))
            entry = (instance, exports)
            self.instances[model.sha256] = entry
        return entry[1]

    def call(
        self, model: LoadedModel, function: str, args: Sequence[int], control: RunControl, ticker: EpochTicker
    ) -> int:
        control.check(f"model {model.name!r} {function}")
        func = self.exports(model)[function]
        self.store.set_epoch_deadline(ticker.ticks(control.remaining()))
        try:
            return int(func(self.store, *args))
        except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
            self._reset()  # a trapped instance may be left inconsistent: start afresh
            at_cap = self._memory.size >= self._memory.cap
            raise map_trap(
                exc, model=model.name, function=function, at_cap=at_cap, cancelled=control.cancel.is_set()
            ) from exc


class WasmPool:
    """K workers (threads, Stores) over one `EngineMemory`; loads and sandboxes models."""

    def __init__(self, runtime: Runtime, *, threads: int, memory_cap: int | None = None, tick: float = 0.01) -> None:
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
        with self._run_lock:
            m = self._models[model]
            _check_rc(m.name, function, self._workers[0].call(m, function, args, control, self._ticker))

    def call_value(self, model: str, function: str, args: Sequence[int], control: RunControl) -> int:
        """Call and return the result as is (no status check)."""
        with self._run_lock:
            return self._workers[0].call(self._models[model], function, args, control, self._ticker)

    def map(self, model: str, function: str, ctx: int, ranges: Sequence[tuple[int, int]], control: RunControl) -> None:
        m = self._models[model]

        def run_one(worker: int, item: tuple[int, int]) -> None:
            rc = self._workers[worker].call(m, function, (ctx, item[0], item[1]), control, self._ticker)
            _check_rc(m.name, function, rc)

        with self._run_lock:
            _map_threads(self.threads, ranges, run_one, self._pool)

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
