"""The engine's linear memory: one wasmtime SharedMemory (or, for the native baseline, one
numpy buffer) that holds every input, bus buffer and output of a run.

`EngineMemory` documents and enforces the layout; see its docstring.
"""

from __future__ import annotations

import ctypes
import threading
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import wasmtime

from services.common.errors import InvalidArgument
from services.engine.errors import EngineClosed, ModelMemoryExceeded
from services.engine.layout import ALIGN, STACK_SIZE, STATIC_LIMIT, Region, run_base
from services.engine.runtime import PAGE, Runtime
from services.engine.shared_memory import FixedSharedMemory

__all__ = ["DEFAULT_CAP", "DEFAULT_KEEP", "STACK_SIZE", "STATIC_LIMIT", "Arena", "EngineMemory", "NativeMemory"]

DEFAULT_CAP = 2 << 30
"""Default memory cap: 2 GiB."""

DEFAULT_KEEP = 256 << 20
"""A memory grown past this many bytes is recreated small once its run ends (see `EngineMemory.recycle`)."""


class Arena(Protocol):
    """A linear memory the run code can lay buffers out in (WASM shared memory or native)."""

    @property
    def run_base(self) -> int: ...

    def ensure(self, size: int) -> None: ...

    def view(self, region: Region, dtype: npt.DTypeLike, shape: tuple[int, ...] | None = None) -> Any: ...

    def write(self, offset: int, data: bytes) -> None: ...


class EngineMemory:
    """One SharedMemory shared by every WASM instance of the engine, laid out as:

    ====================  =========================================================
    [0, 1 MiB)            models' static data: each model links its data at its own
                          ``__global_base`` (esg 64 KiB, term_life 128 KiB) up to its
                          ``__heap_base``; ranges of loaded models must not overlap
    [1 MiB, +K·64 KiB)    one C shadow stack per worker thread (``stack_top(k)``); each
                          instance's ``__stack_pointer`` is set to its worker's stack
    [run_base, …)         the current run: contexts, policy columns, assumptions,
                          scenario and bus buffers, workspace, outputs (16-byte aligned
                          regions from `LayoutBuilder`, re-laid out per run)
    ====================  =========================================================

    The whole memory belongs to one run at a time (the pool's `RunLease`), and is zeroed from
    byte 0 to its size when the run ends: no run, and no model loaded later, can read another
    run's policies, scenarios or results (models' static data is written afresh when their
    instances are created for the next run).

    The memory grows to what a run needs, up to ``cap`` bytes: that is the engine's memory cap
    (store limits do not apply to shared memories; a model's own ``memory.grow`` past the cap
    returns −1). A shared memory cannot shrink, so one that a run grew past ``keep`` bytes is
    replaced by a fresh one of the initial size when the run ends (`recycle`): a model that grew
    it to the cap does not hold the engine's pages until a restart. Thread safety: only the thread holding the
    lease writes inputs, before a run's calls start, and reads outputs after they finish;
    during a run, WASM threads write disjoint regions (their block partials, their scenario
    rows) only. Views (`view`) keep the memory mapped, so a read after `close()` never
    touches freed pages.
    """

    def __init__(self, runtime: Runtime, *, threads: int, cap: int = DEFAULT_CAP, keep: int = DEFAULT_KEEP) -> None:
        if threads < 1:
            raise InvalidArgument("threads must be ≥ 1")
        self.threads = threads
        self.stacks_base = STATIC_LIMIT
        self._run_base = run_base(threads)
        self.cap = min(cap, 65535 * PAGE)
        self.keep = keep
        if self._run_base > self.cap:
            raise ModelMemoryExceeded(f"memory cap {self.cap} bytes is below the {self._run_base} bytes of stacks")
        self._runtime = runtime
        self._shared: FixedSharedMemory | None = self._fresh()
        self._lock = threading.Lock()

    def _fresh(self) -> FixedSharedMemory:
        """A new shared memory of the initial size (the stacks), growable to the cap."""
        pages = -(-self._run_base // PAGE)
        ty = wasmtime.MemoryType(wasmtime.Limits(pages, self.cap // PAGE), shared=True)
        return FixedSharedMemory(self._runtime.engine, ty)

    @property
    def shared(self) -> FixedSharedMemory:
        """The wasmtime handle (imported by every instance); EngineClosed after `close()`."""
        if self._shared is None:
            raise EngineClosed("engine memory is closed")
        return self._shared

    @property
    def run_base(self) -> int:
        return self._run_base

    def stack_top(self, worker: int) -> int:
        """Initial ``__stack_pointer`` of worker ``worker`` (the stack grows down)."""
        return self.stacks_base + (worker + 1) * STACK_SIZE

    @property
    def size(self) -> int:
        return self.shared.size() * PAGE

    def ensure(self, size: int) -> None:
        """Grow to at least ``size`` bytes, or raise ModelMemoryExceeded past the cap."""
        if size > self.cap:
            raise ModelMemoryExceeded(
                f"the run needs {size} bytes of engine memory; this engine's cap is {self.cap} bytes "
                "(GetCapabilities.memory_limit_bytes)"
            )
        shared = self.shared
        with self._lock:
            missing = -(-size // PAGE) - shared.size()
            if missing > 0:
                shared.grow(missing)

    def _bytes(self, offset: int, size: int) -> ctypes.Array[ctypes.c_uint8]:
        """A ctypes array over [offset, offset + size) that keeps the memory mapped while it lives.

        A raw address alone does not: once the handle and every Store are gone wasmtime unmaps
        the memory, and a numpy view made from the address would read freed pages (a segfault).
        """
        shared = self.shared
        if offset < 0 or offset + size > shared.size() * PAGE:
            raise IndexError(f"bytes [{offset}, {offset + size}) lie past the end of the memory")
        raw = (ctypes.c_uint8 * size).from_address(shared.data_address() + offset)
        raw._livecalc_owner = shared  # type: ignore[attr-defined]  # the view's base chain keeps this alive
        return raw

    def view(self, region: Region, dtype: npt.DTypeLike, shape: tuple[int, ...] | None = None) -> Any:
        """A numpy array over ``region`` (no copy: writes go straight into WASM memory).

        The array keeps the memory mapped (reading it after `close()` reads the last bytes, never
        freed pages); its contents belong to the run that holds the pool's lease.
        """
        dt = np.dtype(dtype)
        if region.offset % ALIGN:
            raise ValueError(f"region {region.name} is not {ALIGN}-byte aligned")
        raw = self._bytes(region.offset, region.size)
        arr = np.ctypeslib.as_array(raw).view(dt)[: region.size // dt.itemsize]
        return arr.reshape(shape) if shape is not None else arr

    def write(self, offset: int, data: bytes) -> None:
        ctypes.memmove(ctypes.addressof(self._bytes(offset, len(data))), data, len(data))

    def read(self, offset: int, size: int) -> bytes:
        return bytes(self._bytes(offset, size))

    def zero(self, start: int, end: int | None = None) -> None:
        """Clear [start, end) (end: the current size), so no later run can read what was there."""
        stop = self.size if end is None else min(end, self.size)
        if stop > start:
            ctypes.memset(ctypes.addressof(self._bytes(start, stop - start)), 0, stop - start)

    def recycle(self) -> bool:
        """End of a run (no instance may import the memory any more): clear it, or, when the run
        grew it past ``keep`` bytes, replace it with a fresh one of the initial size (zero too),
        which gives the pages back. True when it was replaced."""
        if self.size <= self.keep:
            self.zero(0)
            return False
        with self._lock:
            # views made earlier keep the old mapping until they are gone (see `_bytes`)
            self._shared = self._fresh()
        return True

    def close(self) -> None:
        """Drop the handle; views made earlier keep the mapping alive until they are gone."""
        self._shared = None


class NativeMemory:
    """The native baseline's stand-in for `EngineMemory`: one buffer of ``cap`` bytes.

    Offsets mean the same as in the WASM memory; the native library gets the base address.
    The buffer is allocated once at its full size (untouched pages cost no RAM), so views
    stay valid for the object's life.
    """

    def __init__(self, *, cap: int = 1 << 30) -> None:
        self.cap = cap
        self._buf: npt.NDArray[np.uint8] = np.zeros(cap + 64, np.uint8)
        self._base = int(self._buf.ctypes.data) + (-int(self._buf.ctypes.data)) % 64

    @property
    def run_base(self) -> int:
        return 4096

    @property
    def base_address(self) -> int:
        return self._base

    def ensure(self, size: int) -> None:
        if size > self.cap:
            raise ModelMemoryExceeded(f"run needs {size} bytes of memory; the cap is {self.cap} bytes")

    def view(self, region: Region, dtype: npt.DTypeLike, shape: tuple[int, ...] | None = None) -> Any:
        dt = np.dtype(dtype)
        raw = (ctypes.c_uint8 * region.size).from_address(self._base + region.offset)
        arr = np.ctypeslib.as_array(raw).view(dt)[: region.size // dt.itemsize]
        return arr.reshape(shape) if shape is not None else arr

    def write(self, offset: int, data: bytes) -> None:
        if offset + len(data) > self.cap:
            raise IndexError("write past the end of memory")
        ctypes.memmove(self._base + offset, data, len(data))
