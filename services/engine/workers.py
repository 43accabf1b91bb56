"""K worker threads that run model code on one shared memory.

`WasmPool`: each worker owns a wasmtime Store and, per model, an Instance importing the
engine's one SharedMemory, with ``__stack_pointer`` set to the worker's own stack region
(instances sharing a memory would otherwise share one C stack). wasmtime-py calls release
the GIL, so K workers run WASM in parallel. A Store is used by one thread at a time: a
`map` hands worker k to exactly one task.

A run owns the pool for its whole length: `WasmPool.lease` hands out one `RunLease` at a
time (other runs wait, within their deadline), and only the lease lays out, writes, calls
and reads the memory. When the lease ends every instance is dropped and the memory is
zeroed, so N concurrent runs give exactly their solo results and no run sees another's data.
Worker threads are daemons: a call stuck in model code never keeps the process alive.

`NativePool` runs the same C compiled natively (benchmark baseline) through ctypes, which
also releases the GIL, with the same offsets into a `NativeMemory` buffer.

Both implement `Executor`, which the model drivers (`wasm_nodes.py`) program against.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol

import wasmtime

from services.common.wasm_binary import StaticData, read_module, static_data
from services.common.wasm_reader import WasmFormatError
from services.engine.errors import (
    EngineClosed,
    ModelCancelled,
    ModelDeadlineExceeded,
    ModelFailed,
    ModelLoadError,
    ModelNotLoaded,
)
from services.engine.layout import STATIC_LIMIT
from services.engine.memory import DEFAULT_CAP, DEFAULT_KEEP, Arena, EngineMemory
from services.engine.runtime import Runtime
from services.engine.sandbox import (
    EpochTicker,
    check_code,
    check_exports,
    check_imports,
    instantiation_error,
    map_trap,
)

DEFAULT_CALL_TIME_LIMIT = 45.0
"""Seconds one model call may run: past it the call is interrupted and the model blamed
(`ModelTimeLimitExceeded`). Under a gateway's stall limit (60 s by default), so that a looping
model is reported as the model's fault and not as a silent engine; as high as that allows, since
one call values its blocks under every scenario of the job, and its time grows with their count."""

GROW_SLACK = 1 << 20
"""A trap after growing memory to within this many bytes of the cap counts as memory exhaustion."""

RC_MEANING = {
    1: "context written for another ABI version",
    2: "row, block or scenario range outside the context's sizes",
    3: "a row needs values its tables do not cover",
    4: "a row holds an input the model cannot value",
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

    def has_export(self, model: str, function: str) -> bool: ...

    def map(
        self, model: str, function: str, ctx: int, ranges: Sequence[tuple[int, int]], control: RunControl
    ) -> None: ...


def check_rc(model: str, function: str, rc: int) -> None:
    if rc != 0:
        meaning = RC_MEANING.get(rc, "the model's own status" if rc >= 16 else "unknown status")
        raise ModelFailed(model, function, rc, meaning)


class DaemonThreads:
    """K daemon threads running submitted callables (a minimal executor).

    `concurrent.futures.ThreadPoolExecutor` joins its threads at interpreter exit, so one
    call stuck in model code would keep the process alive; daemon threads do not.
    """

    def __init__(self, threads: int, name: str) -> None:
        self._queue: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None] = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{k}", daemon=True) for k in range(threads)]
        for t in self._threads:
            t.start()

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            future, fn = item
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn())
                except BaseException as exc:  # noqa: BLE001 - handed to the submitter through the future
                    future.set_exception(exc)

    def submit(self, fn: Callable[[], Any]) -> Future[Any]:
        future: Future[Any] = Future()
        self._queue.put((future, fn))
        return future

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop the threads once their current work ends (waits at most ``timeout`` seconds)."""
        for _ in self._threads:
            self._queue.put(None)
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))


def map_threads(
    threads: int,
    ranges: Sequence[tuple[int, int]],
    run_one: Callable[[int, tuple[int, int]], None],
    pool: DaemonThreads,
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
    futures = [pool.submit(functools.partial(loop, k)) for k in range(n)]
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
    """One model instance in a Store of its own (see `_Worker`).

    Instantiating runs the module's data-segment initialisation and start function, so it gets
    the same epoch deadline as a call; a failure is a load error (a bad module), an interrupt is
    re-raised for the caller to map to a deadline or cancellation.
    """

    def __init__(self, runtime: Runtime, memory: EngineMemory, model: LoadedModel, stack_top: int, ticks: int) -> None:
        self.store = wasmtime.Store(runtime.engine)
        self.store.set_limits(memory_size=memory.cap, instances=1, tables=4, memories=1)
        self.store.set_epoch_deadline(ticks)
        try:
            instance = wasmtime.Instance(self.store, model.module, [memory.shared])
            self.exports = instance.exports(self.store)
            if "__stack_pointer" in model.exports:
                stack_pointer = self.exports["__stack_pointer"]
                assert isinstance(stack_pointer, wasmtime.Global)  # checked at load (check_exports)
                stack_pointer.set_value(self.store, wasmtime.Val.i32(stack_top))
        except wasmtime.Trap as exc:
            if exc.trap_code == wasmtime.TrapCode.INTERRUPT:
                raise
            raise instantiation_error(model.name, exc) from exc
        except wasmtime.WasmtimeError as exc:
            raise instantiation_error(model.name, exc) from exc


class _Worker:
    """One thread's instances, one per model, each in its own Store (created on first use in a
    run, dropped after a trap and when the run ends).

    One instance per Store: wasmtime 50 aborts the process (``assertion failed:
    fault.is_none()``, store.rs) when an instance traps out of bounds on a shared memory that
    another instance in the same Store also imports; `tests/engine/test_sandbox.py` covers it.
    """

    def __init__(self, index: int, runtime: Runtime, memory: EngineMemory) -> None:
        self.index = index
        self._runtime, self._memory = runtime, memory
        self._instances: dict[str, _Instance] = {}

    def drop_instances(self) -> None:
        self._instances.clear()

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
            started = time.monotonic()
            try:
                inst = self._instances.get(model.sha256)
                if inst is None:
                    ticks = ticker.ticks(control.remaining())
                    inst = _Instance(self._runtime, self._memory, model, self._memory.stack_top(self.index), ticks)
                    self._instances[model.sha256] = inst
                func = inst.exports[function]
                if not isinstance(func, wasmtime.Func):
                    raise ModelLoadError(f"model {model.name!r} export {function!r} is not a function")
                inst.store.set_epoch_deadline(ticker.ticks(control.remaining()))
                return int(func(inst.store, *args))
            except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
                self._instances.pop(model.sha256, None)  # a trapped instance may be inconsistent: start afresh
                if _spurious_interrupt(exc, control, time.monotonic() - started, ticker):
                    continue  # another run's cancellation interrupted this call: run it again
                # the model (or a sibling call of the same batch) grew the memory up to about the cap,
                # then trapped: the usual end of an allocation that memory.grow refused
                size_after = self._memory.size
                at_cap = size_after > size_before and size_after > self._memory.cap - GROW_SLACK
                raise map_trap(
                    exc,
                    model=model.name,
                    function=function,
                    at_cap=at_cap,
                    cancelled=control.cancel.is_set(),
                    call_limit=_call_limit_hit(control, ticker),
                ) from exc


def _call_limit_hit(control: RunControl, ticker: EpochTicker) -> float | None:
    """The per-call limit, when that (not the run's deadline or cancellation) explains an interrupt."""
    left = control.remaining()
    return None if control.cancel.is_set() or (left is not None and left <= 0) else ticker.max_call_seconds


def _spurious_interrupt(exc: Exception, control: RunControl, elapsed: float, ticker: EpochTicker) -> bool:
    """An epoch interrupt that neither this run's cancellation nor a deadline explains."""
    if not isinstance(exc, wasmtime.Trap) or exc.trap_code != wasmtime.TrapCode.INTERRUPT:
        return False
    left = control.remaining()
    # less a tick: an epoch deadline of ⌈limit/interval⌉+1 ticks fires after about the limit
    within_limit = elapsed < ticker.max_call_seconds - ticker.interval
    return not control.cancel.is_set() and (left is None or left > 0) and within_limit


class WasmPool:
    """K workers (threads, Stores) over one `EngineMemory`; checks models and leases runs.

    Thread safety: `load` may be called from any thread; everything that touches the memory
    or the instances goes through the one `RunLease` held at a time.
    """

    def __init__(
        self,
        runtime: Runtime,
        *,
        threads: int,
        memory_cap: int | None = None,
        memory_keep: int = DEFAULT_KEEP,
        call_time_limit: float = DEFAULT_CALL_TIME_LIMIT,
        tick: float = 0.05,
    ) -> None:
        self.runtime = runtime
        self.threads = threads
        self._memory = EngineMemory(runtime, threads=threads, cap=memory_cap or DEFAULT_CAP, keep=memory_keep)
        self._ticker = EpochTicker(runtime, tick, max_call_seconds=call_time_limit)
        self._workers = [_Worker(k, runtime, self._memory) for k in range(threads)]
        self._pool = DaemonThreads(threads, "livecalc-wasm")
        self._checked: dict[str, LoadedModel] = {}  # sha256 → model that passed the checks
        self._checked_lock = threading.Lock()
        self._lease_lock = threading.Lock()
        self._closed = False

    @property
    def memory(self) -> EngineMemory:
        return self._memory

    def load(self, name: str, wasm: bytes) -> LoadedModel:
        """Compile (cached) and check a module: imports, exports, code, static data."""
        if self._closed:
            raise EngineClosed("worker pool is closed")
        digest = hashlib.sha256(wasm).hexdigest()
        with self._checked_lock:
            known = self._checked.get(digest)
        if known is not None:
            return known if known.name == name else dataclasses.replace(known, name=name)
        module = self.runtime.module(wasm, name)
        check_imports(name, module, self._memory.cap)
        check_exports(name, module)
        try:
            info = read_module(wasm)
            statics = static_data(info)
        except WasmFormatError as exc:
            raise ModelLoadError(f"model {name!r}: {exc.message}") from exc
        check_code(name, info)
        if statics.end > STATIC_LIMIT:
            raise ModelLoadError(
                f"model {name!r} static data [{statics.start}, {statics.end}) ends past the {STATIC_LIMIT} limit "
                "(data segments and __heap_base must lie below the worker stacks)"
            )
        model = LoadedModel(name, digest, module, statics, frozenset(e.name for e in module.exports))
        with self._checked_lock:
            self._checked[digest] = model
        return model

    @contextlib.contextmanager
    def lease(self, control: RunControl | None = None) -> Iterator[RunLease]:
        """Own the memory and the workers for one run (waits for the run before, within the
        deadline of ``control``); at the end, drop instances and clear (or recreate) the memory."""
        control = control or RunControl()
        while not self._lease_lock.acquire(timeout=0.05):
            control.check("waiting for the engine")
        try:
            if self._closed:
                raise EngineClosed("worker pool is closed")
            lease = RunLease(self, control)
            try:
                yield lease
            finally:
                lease.active = False
                for worker in self._workers:
                    worker.drop_instances()
                self._memory.recycle()
        finally:
            self._lease_lock.release()

    @contextlib.contextmanager
    def _watching(self, control: RunControl) -> Iterator[None]:
        self._ticker.watch(control.cancel)
        try:
            yield
        finally:
            self._ticker.unwatch(control.cancel)

    def _call(self, model: LoadedModel, function: str, args: Sequence[int], control: RunControl) -> int:
        with self._watching(control):
            return self._workers[0].call(
                model, function, args, control=control, ticker=self._ticker, size_before=self._memory.size
            )

    def _map(self, model: LoadedModel, function: str, ctx: int, ranges: Sequence[tuple[int, int]],
             control: RunControl) -> None:  # fmt: skip
        size_before = self._memory.size

        def run_one(worker: int, item: tuple[int, int]) -> None:
            args = (ctx, item[0], item[1])
            rc = self._workers[worker].call(
                model, function, args, control=control, ticker=self._ticker, size_before=size_before
            )
            check_rc(model.name, function, rc)

        with self._watching(control):
            map_threads(self.threads, ranges, run_one, self._pool)

    def close(self) -> None:
        """Stop the workers and release the memory (a run in progress finishes first)."""
        if self._closed:
            return
        self._closed = True
        with self._lease_lock:
            self._pool.shutdown()
            self._ticker.close()
            for worker in self._workers:
                worker.drop_instances()
            self._memory.close()

    def __enter__(self) -> WasmPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RunLease:
    """One run's exclusive use of a `WasmPool`: the `Executor` the model drivers program against.

    Models are named per run (`use`), so two runs that give the same name to different
    binaries never call each other's code; models used together must not overlap in static data.
    """

    def __init__(self, pool: WasmPool, control: RunControl) -> None:
        self._pool = pool
        self.control = control
        self.threads = pool.threads
        self.active = True
        self._models: dict[str, LoadedModel] = {}

    @property
    def memory(self) -> EngineMemory:
        self._check_active()
        return self._pool.memory

    def _check_active(self) -> None:
        if not self.active:
            raise EngineClosed("the run's lease on the engine has ended")

    def use(self, model: LoadedModel) -> LoadedModel:
        """Make ``model`` callable by its name in this run."""
        self._check_active()
        for other in self._models.values():
            if other.name != model.name and other.sha256 != model.sha256 and model.statics.overlaps(other.statics):
                raise ModelLoadError(
                    f"model {model.name!r} static data [{model.statics.start}, {model.statics.end}) overlaps "
                    f"model {other.name!r}"
                )
        self._models[model.name] = model
        return model

    def load(self, name: str, wasm: bytes) -> LoadedModel:
        """Check ``wasm`` (`WasmPool.load`) and `use` it in this run as ``name``."""
        return self.use(self._pool.load(name, wasm))

    def model(self, name: str) -> LoadedModel:
        self._check_active()
        model = self._models.get(name)
        if model is None:
            raise ModelNotLoaded(f"model {name!r} is not loaded in this run")
        return model

    def call(self, model: str, function: str, args: Sequence[int], control: RunControl) -> None:
        m = self.model(model)
        check_rc(m.name, function, self._pool._call(m, function, args, control))

    def call_value(self, model: str, function: str, args: Sequence[int], control: RunControl) -> int:
        """Call and return the result as is (no status check)."""
        return self._pool._call(self.model(model), function, args, control)

    def has_export(self, model: str, function: str) -> bool:
        return function in self.model(model).exports

    def map(self, model: str, function: str, ctx: int, ranges: Sequence[tuple[int, int]], control: RunControl) -> None:
        self._pool._map(self.model(model), function, ctx, ranges, control)
