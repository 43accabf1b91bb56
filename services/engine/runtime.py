"""The engine's one wasmtime `Engine` and its compiled-module cache.

One long-lived Engine per process (compilation and code are shared by every Store); its
configuration enables what the model ABI needs (threads + shared memory, SIMD, bulk memory)
and epoch interruption for deadlines and cancellation. Compiled modules are cached in
memory and on disk: the on-disk key is the wasmtime version, the engine configuration and
the module's SHA-256, so `Module.deserialize` never sees code from another engine.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

import wasmtime

from services.engine.errors import ModelLoadError

PAGE = 65536
"""Bytes per WebAssembly page."""


@dataclass(frozen=True)
class RuntimeConfig:
    """wasmtime settings of the engine; part of the compiled-module cache key."""

    cranelift_opt_level: str = "speed"
    max_wasm_stack: int = 1 << 20
    cache_dir: Path | None = None
    """Where serialized modules are kept (None: no on-disk cache)."""

    def fingerprint(self) -> str:
        fields = asdict(self)
        fields.pop("cache_dir")
        return ";".join(f"{k}={v}" for k, v in sorted(fields.items())) + ";threads;shared;simd;epoch"


def wasmtime_version() -> str:
    try:
        return metadata.version("wasmtime")
    except metadata.PackageNotFoundError:  # pragma: no cover - wasmtime is a dependency
        return "unknown"


def usable_cache_dir(configured: Path | None = None) -> Path:
    """Where compiled modules and native builds go: ``configured`` (from the command's config),
    else ``~/.cache/livecalc``; when that cannot be written (a read-only root filesystem, no
    home) a fresh temporary directory, so the engine still works, only without reuse."""
    preferred = configured if configured is not None else Path.home() / ".cache" / "livecalc"
    try:
        preferred.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=preferred, prefix=".probe-"):
            pass
    except OSError:
        return Path(tempfile.mkdtemp(prefix="livecalc-cache-"))
    return preferred


class Runtime:
    """Owns the wasmtime Engine; compiles modules once (thread-safe) and caches them."""

    def __init__(self, config: RuntimeConfig | None = None) -> None:
        self.config = config or RuntimeConfig()
        cfg = wasmtime.Config()
        cfg.wasm_threads = True
        cfg.shared_memory = True
        cfg.wasm_simd = True
        cfg.wasm_bulk_memory = True
        cfg.epoch_interruption = True
        cfg.cranelift_opt_level = self.config.cranelift_opt_level
        cfg.max_wasm_stack = self.config.max_wasm_stack
        self.engine = wasmtime.Engine(cfg)
        self._modules: dict[str, wasmtime.Module] = {}
        self._lock = threading.Lock()

    def cache_key(self, wasm: bytes) -> str:
        """wasmtime version + engine configuration + module SHA-256, hashed."""
        digest = hashlib.sha256(wasm).hexdigest()
        key = f"wasmtime={wasmtime_version()};{self.config.fingerprint()};sha256={digest}"
        return hashlib.sha256(key.encode()).hexdigest()

    def module(self, wasm: bytes, name: str = "model") -> wasmtime.Module:
        """The compiled module for these bytes (from memory, disk cache, or compiled now)."""
        key = self.cache_key(wasm)
        with self._lock:
            cached = self._modules.get(key)
            if cached is not None:
                return cached
            module = self._load_serialized(key) or self._compile(wasm, name, key)
            self._modules[key] = module
            return module

    def _compile(self, wasm: bytes, name: str, key: str) -> wasmtime.Module:
        try:
            module = wasmtime.Module(self.engine, wasm)
        except wasmtime.WasmtimeError as exc:
            raise ModelLoadError(f"model {name!r} is not a valid WebAssembly module: {exc}") from exc
        if self.config.cache_dir is not None:
            self._store_serialized(key, module)
        return module

    def _cache_path(self, key: str) -> Path | None:
        return None if self.config.cache_dir is None else self.config.cache_dir / "modules" / f"{key}.cwasm"

    def _load_serialized(self, key: str) -> wasmtime.Module | None:
        path = self._cache_path(key)
        if path is None or not path.exists():
            return None
        try:
            return wasmtime.Module.deserialize(self.engine, path.read_bytes())
        except wasmtime.WasmtimeError:
            path.unlink(missing_ok=True)  # stale or corrupt: recompile
            return None

    def _store_serialized(self, key: str, module: wasmtime.Module) -> None:
        path = self._cache_path(key)
        assert path is not None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # write-then-rename so a concurrent reader never sees half a file
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
            with os.fdopen(fd, "wb") as fh:
                fh.write(module.serialize())
            os.replace(tmp, path)
        except OSError:
            return  # a read-only or full cache only costs recompiling next time

    def increment_epoch(self) -> None:
        self.engine.increment_epoch()
