"""The benchmark baseline: the same C models compiled natively (``cc -O3 -march=native``).

Built on demand from the sources shipped as package data (`shipped.model_sources`) into
``<cache>/native/<hash>/`` (hash of the source, the headers, flags and compiler version) and
loaded with ctypes; `NativePool` runs their ABI v2 entry points (`model_abi.SIGNATURES`: those a
library exports) over K threads (ctypes releases the GIL) with the same offsets as the WASM
host, in a `NativeMemory` buffer whose base address is passed as the first argument of every
entry point that takes arguments (``lc_abi_version`` takes none).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from services.common.errors import FailedPrecondition
from services.engine.memory import NativeMemory
from services.engine.runtime import usable_cache_dir
from services.engine.workers import DaemonThreads, RunControl, check_rc, map_threads
from services.valuation.model_abi import SIGNATURES
from services.valuation.reference_model import model_sources

NATIVE_FLAGS: Final = ("-O3", "-march=native", "-shared", "-fPIC")
SAME_BITS_FLAGS: Final = ("-ffp-contract=off",)
"""The WASM build's arithmetic at native width: no FMA contraction (the WASM build is compiled
with ``-ffp-contract=off`` and WASM has no fused multiply-add), full native vector width."""
NARROW_FLAGS: Final = ("-DLC_VW=2", "-ffp-contract=off")
"""Profiling variant: WASM's vector width (2 doubles) and no FMA contraction, native codegen."""


def compiler() -> str:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        raise FailedPrecondition("no C compiler (cc, gcc or clang) for the native baseline")
    return cc


def build_native(name: str, cache_dir: Path | None = None, extra_flags: Sequence[str] = ()) -> Path:
    """Compile models/<name>.c to a shared library (cached); returns its path."""
    flags = (*NATIVE_FLAGS, *extra_flags)
    cc = compiler()
    with model_sources() as src:
        source = src / f"{name}.c"
        include = src / "include"
        headers = [
            part
            for h in sorted(include.rglob("*.h"))
            for part in (str(h.relative_to(include)).encode(), h.read_bytes())
        ]
        version = subprocess.run([cc, "--version"], capture_output=True, text=True, check=True).stdout
        key = hashlib.sha256(
            b"\0".join([source.read_bytes(), *headers, " ".join(flags).encode(), version.encode()])
        ).hexdigest()[:16]
        out_dir = usable_cache_dir(cache_dir) / "native" / key
        lib = out_dir / f"lib{name}.so"
        if not lib.exists():
            out_dir.mkdir(parents=True, exist_ok=True)
            tmp = out_dir / f".lib{name}.{os.getpid()}.so"
            cmd = [cc, *flags, f"-I{include}", str(source), "-o", str(tmp), "-lm"]
            subprocess.run(cmd, check=True, capture_output=True)
            os.replace(tmp, lib)
    return lib


def native_models() -> tuple[str, ...]:
    """The shipped models with C sources (``esg``, ``term_life``)."""
    with model_sources() as src:
        return tuple(sorted(p.stem for p in src.glob("*.c")))


class NativePool:
    """`Executor` over the natively compiled models, K threads, one `NativeMemory`."""

    def __init__(
        self,
        *,
        threads: int,
        cache_dir: Path | None = None,
        memory_cap: int = 1 << 30,
        extra_flags: Sequence[str] = (),
    ) -> None:
        self.threads = threads
        self._memory = NativeMemory(cap=memory_cap)
        self._libs: dict[str, ctypes.CDLL] = {}
        self._functions: dict[str, dict[str, Any]] = {}
        for name in native_models():
            lib = ctypes.CDLL(str(build_native(name, cache_dir, extra_flags)))
            functions: dict[str, Any] = {}
            for fn, (params, _) in SIGNATURES.items():
                if not hasattr(lib, fn):
                    continue
                f = getattr(lib, fn)
                f.restype = ctypes.c_int32
                f.argtypes = [ctypes.c_void_p, *(ctypes.c_uint32,) * len(params)] if params else []
                functions[fn] = f
            self._libs[name] = lib
            self._functions[name] = functions
        self._pool = DaemonThreads(threads, "livecalc-native")
        self._lock = threading.Lock()

    @property
    def memory(self) -> NativeMemory:
        return self._memory

    def _invoke(self, model: str, function: str, args: Sequence[int]) -> int:
        f = self._functions[model][function]
        if not f.argtypes:
            return int(f())
        return int(f(self._memory.base_address, *args))

    def has_export(self, model: str, function: str) -> bool:
        return function in self._functions.get(model, {})

    def call(self, model: str, function: str, args: Sequence[int], control: RunControl) -> None:
        control.check(f"native {model} {function}")
        check_rc(model, function, self._invoke(model, function, args))

    def call_value(self, model: str, function: str, args: Sequence[int], control: RunControl) -> int:
        return self._invoke(model, function, args)

    def map(self, model: str, function: str, ctx: int, ranges: Sequence[tuple[int, int]], control: RunControl) -> None:
        def run_one(worker: int, item: tuple[int, int]) -> None:
            control.check(f"native {model} {function}")
            check_rc(model, function, self._invoke(model, function, (ctx, item[0], item[1])))

        with self._lock:
            map_threads(self.threads, ranges, run_one, self._pool)

    def close(self) -> None:
        self._pool.shutdown()

    def __enter__(self) -> NativePool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
