"""Compiled modules are cached on disk by wasmtime version, engine config and SHA-256."""

from __future__ import annotations

from pathlib import Path

from services.engine.runtime import Runtime, RuntimeConfig, wasmtime_version
from services.valuation.reference_model import shipped_models


def test_serialized_module_is_reused(tmp_path: Path) -> None:
    wasm = shipped_models()["esg"]
    first = Runtime(RuntimeConfig(cache_dir=tmp_path))
    first.module(wasm, "esg")
    files = list((tmp_path / "modules").glob("*.cwasm"))
    assert len(files) == 1
    assert files[0].stem == first.cache_key(wasm)
    second = Runtime(RuntimeConfig(cache_dir=tmp_path))
    module = second.module(wasm, "esg")
    assert {e.name for e in module.exports} >= {"lc_abi_version", "lc_prepare_scenarios"}
    assert second.module(wasm, "esg") is module  # in-memory cache


def test_key_depends_on_config_and_bytes(tmp_path: Path) -> None:
    wasm = shipped_models()["esg"]
    speed = Runtime(RuntimeConfig(cache_dir=tmp_path))
    other = Runtime(RuntimeConfig(cache_dir=tmp_path, cranelift_opt_level="none"))
    assert speed.cache_key(wasm) != other.cache_key(wasm)
    assert speed.cache_key(wasm) != speed.cache_key(wasm + b"\0")
    assert wasmtime_version() != "unknown"


def test_corrupt_cache_file_is_recompiled(tmp_path: Path) -> None:
    wasm = shipped_models()["esg"]
    rt = Runtime(RuntimeConfig(cache_dir=tmp_path))
    path = tmp_path / "modules" / f"{rt.cache_key(wasm)}.cwasm"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a module")
    module = rt.module(wasm, "esg")
    assert {e.name for e in module.exports} >= {"lc_abi_version", "lc_prepare_scenarios"}
    assert path.read_bytes() != b"not a module"
