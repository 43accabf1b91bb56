"""The engine's one wasmtime `Engine` and its compiled-module cache.

One long-lived Engine per process (compilation and code are shared by every Store); its
configuration enables what the model ABI needs (threads + shared memory, SIMD, bulk memory)
and epoch interruption for deadlines and cancellation. Compiled modules are cached in
memory and on disk: the on-disk key is the wasmtime version, the engine configuration and
the module's SHA-256, so `Module.deserialize` never sees code from another engine.

A ``.cwasm`` file is native code that `Module.deserialize` maps and runs without checking it:
a corrupt one (a flipped bit, a truncated write) crashes the process on every chunk, and
whoever can write the cache directory could have the engine run code of their choosing.
So every cached artifact is verified before it is deserialised, against an HMAC-SHA256 kept
in a file of its own (``<key>.cwasm.hmac``) over the cache key and the artifact's bytes. The
HMAC key is a per-engine secret kept *outside* the cache directory (``RuntimeConfig.key_file``,
created 0600 in the engine's state directory; without one, a random key for this process
only). Threat model: someone who can write the cache but cannot read the key can delete,
corrupt, swap or replay artifacts (another module's valid ``.cwasm`` with its digest), and
each of those only fails verification, costing a warning, a metric and a recompilation; they
cannot get native code of their own run. Someone who can read the key, or write the engine's
code, is out of scope. Engines that share a cache directory should share the key, or each
recompiles what another wrote.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import tempfile
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

import wasmtime

from services.common.errors import InvalidArgument
from services.engine.errors import ModelLoadError

log = logging.getLogger(__name__)

PAGE = 65536
"""Bytes per WebAssembly page."""

KEY_BYTES = 32
"""Bytes of the module-cache HMAC key."""


@dataclass(frozen=True)
class RuntimeConfig:
    """wasmtime settings of the engine; part of the compiled-module cache key."""

    cranelift_opt_level: str = "speed"
    max_wasm_stack: int = 1 << 20
    cache_dir: Path | None = None
    """Where serialized modules are kept (None: no on-disk cache)."""
    key_file: Path | None = None
    """The secret that signs cached modules; must lie outside ``cache_dir`` (None: a key for
    this process only, so artifacts of earlier processes are recompiled)."""

    def __post_init__(self) -> None:
        if self.cache_dir is not None and self.key_file is not None:
            cache, key = self.cache_dir.resolve(), self.key_file.resolve()
            if key == cache or cache in key.parents:
                raise InvalidArgument(
                    f"the module cache key {self.key_file} lies in the cache directory {self.cache_dir}: "
                    "whoever can write the cache could then sign native code; keep it in the engine's state directory"
                )

    def fingerprint(self) -> str:
        fields = asdict(self)
        fields.pop("cache_dir")
        fields.pop("key_file")
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


def default_state_dir() -> Path:
    """Where the engine keeps its secrets when not configured: ``~/.local/state/livecalc``."""
    return Path.home() / ".local" / "state" / "livecalc"


def cache_key_file(state_dir: Path) -> Path:
    """The module-cache key's file in an engine's state directory."""
    return state_dir / "module-cache.key"


def load_or_create_key(path: Path) -> bytes:
    """The key in ``path``, created (random, mode 0600, in a 0700 directory) when missing.

    A file that exists but is not a key of `KEY_BYTES` bytes is refused rather than replaced:
    replacing it would silently re-sign whatever the cache holds."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = path.read_bytes()
        if len(key) != KEY_BYTES:
            raise InvalidArgument(f"module cache key {path} is {len(key)} bytes, not {KEY_BYTES}") from None
        return key
    key = secrets.token_bytes(KEY_BYTES)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
    return key


class Runtime:
    """Owns the wasmtime Engine; compiles modules once (thread-safe) and caches them.

    ``on_cache_rejected(reason)`` is called for each on-disk artifact that failed verification
    (reasons: ``missing-digest``, ``bad-digest``, ``undeserialisable``)."""

    def __init__(
        self, config: RuntimeConfig | None = None, *, on_cache_rejected: Callable[[str], None] | None = None
    ) -> None:
        self.config = config or RuntimeConfig()
        self._on_rejected = on_cache_rejected
        self._key = self._resolve_key()
        cfg = wasmtime.Config()
        cfg.wasm_threads = True
        cfg.shared_memory = True
        cfg.wasm_simd = True
        cfg.wasm_bulk_memory = True
        cfg.epoch_interruption = True
        cfg.cranelift_opt_level = self.config.cranelift_opt_level
        cfg.max_wasm_stack = self.config.max_wasm_stack
        # memory reservation and guard stay wasmtime's: with them Cranelift drops the bounds check of
        # every load from the shared memory (a zero guard cost term_life ~15 %); epoch interruption
        # costs a check per loop iteration (~13 % of term_life's month loop) and is what deadlines
        # and cancellation stand on
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

    def _resolve_key(self) -> bytes:
        if self.config.cache_dir is None:
            return b""
        if self.config.key_file is not None:
            try:
                return load_or_create_key(self.config.key_file)
            except OSError as exc:
                log.warning("module cache key %s unusable (%s): cached modules last this process only",
                            self.config.key_file, exc)  # fmt: skip
        return secrets.token_bytes(KEY_BYTES)

    def _digest(self, key: str, artifact: bytes) -> bytes:
        """HMAC-SHA256 of the cache key and the artifact: a file renamed to another key fails too."""
        return hmac.new(self._key, key.encode() + b"\0" + artifact, hashlib.sha256).digest()

    def _cache_path(self, key: str) -> Path | None:
        return None if self.config.cache_dir is None else self.config.cache_dir / "modules" / f"{key}.cwasm"

    def _reject(self, path: Path, reason: str) -> None:
        log.warning("cached module %s failed verification (%s): recompiling and replacing it", path.name, reason)
        if self._on_rejected is not None:
            self._on_rejected(reason)

    def _load_serialized(self, key: str) -> wasmtime.Module | None:
        path = self._cache_path(key)
        if path is None:
            return None
        try:
            artifact = path.read_bytes()
        except OSError:
            return None  # not cached (or unreadable): compile
        try:
            digest = path.with_name(path.name + ".hmac").read_bytes()
        except OSError:
            self._reject(path, "missing-digest")
            return None
        # only bytes this engine signed reach deserialize: it maps them as native code unchecked
        if not hmac.compare_digest(digest, self._digest(key, artifact)):
            self._reject(path, "bad-digest")
            return None
        try:
            return wasmtime.Module.deserialize(self.engine, artifact)
        except wasmtime.WasmtimeError:
            self._reject(path, "undeserialisable")  # signed by us, yet stale (e.g. a wasmtime build)
            return None

    def _store_serialized(self, key: str, module: wasmtime.Module) -> None:
        path = self._cache_path(key)
        assert path is not None
        artifact = bytes(module.serialize())
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # the artifact first, then its digest, each write-then-rename so a concurrent reader never
            # sees half a file (one that reads the new artifact with the old digest recompiles)
            _write_atomically(path, artifact)
            _write_atomically(path.with_name(path.name + ".hmac"), self._digest(key, artifact))
        except OSError:
            return  # a read-only or full cache only costs recompiling next time

    def increment_epoch(self) -> None:
        self.engine.increment_epoch()


def _write_atomically(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
