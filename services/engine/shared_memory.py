"""Work-around for wasmtime-py's SharedMemory import bug (bytecodealliance/wasmtime-py#318).

wasmtime-py 49 and 50 wrap the shared-memory pointer once too often in `_as_extern` (so
`Instance(store, module, [shared_memory])` raises `TypeError: incompatible types,
LP_LP_wasmtime_sharedmemory`) and in `size()`. `FixedSharedMemory` passes the pointer as the
C API expects; the C API clones the handle, so ownership stays with this object.
`tests/engine/test_shared_memory_shim.py` fails once upstream fixes the bug, so the shim can
be dropped then.
"""

from __future__ import annotations

import ctypes
from typing import Any

import wasmtime
from wasmtime import _ffi as ffi


class FixedSharedMemory(wasmtime.SharedMemory):
    """`wasmtime.SharedMemory` whose import into an instance and `size()` work."""

    def _as_extern(self) -> Any:
        union = ffi.wasmtime_extern_union(sharedmemory=self.ptr())
        return ffi.wasmtime_extern_t(ffi.WASMTIME_EXTERN_SHAREDMEMORY, union)

    def size(self) -> int:
        """The current size in 64 KiB pages."""
        return int(ffi.wasmtime_sharedmemory_size(self.ptr()))

    def data_address(self) -> int:
        """The host address of byte 0 (shared memories never move)."""
        ptr = self.data_ptr()
        return int(ctypes.cast(ptr, ctypes.c_void_p).value or 0)
