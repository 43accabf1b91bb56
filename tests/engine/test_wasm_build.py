"""The shipped WASM models (package data) are what models/build.py builds (reproducible, not
stale), with a current copy of the C sources, and they cannot block a thread."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import wasmtime

from services.common.wasm_binary import read_module
from services.valuation.reference_model import shipped_models

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "services" / "valuation" / "reference_model" / "models"


def build_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("livecalc_models_build", ROOT / "models" / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_rebuild_matches_committed(tmp_path: Path) -> None:
    build = build_module()
    built = build.build(tmp_path)
    assert set(built) == {"esg", "term_life", "normals"} | {m.name for m in build.MODELS}
    assert set(built) == set(shipped_models())
    for name, path in built.items():
        committed = SHIPPED / f"{name}.wasm"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == hashlib.sha256(committed.read_bytes()).hexdigest(), (
            f"{committed} is stale: run `make wasm` and commit"
        )


def test_shipped_models_have_no_blocking_instructions_and_no_passive_data() -> None:
    """wasm-ld's shared-memory start function waits (memory.atomic.wait32); the sandbox refuses that."""
    for name, wasm in shipped_models().items():
        info = read_module(wasm)
        assert not info.blocking, name
        assert info.passive_segments == 0 and info.data, name


def test_models_import_only_shared_env_memory() -> None:
    engine = wasmtime.Engine(_config())
    for name in shipped_models():
        module = wasmtime.Module.from_file(engine, str(SHIPPED / f"{name}.wasm"))
        imports = [(i.module, i.name) for i in module.imports]
        assert imports == [("env", "memory")]
        memory = module.imports[0].type
        assert isinstance(memory, wasmtime.MemoryType) and memory.is_shared
        exports = {e.name for e in module.exports}
        assert {"__stack_pointer", "__heap_base", "__global_base", "lc_abi_version"} <= exports


def _config() -> wasmtime.Config:
    cfg = wasmtime.Config()
    cfg.wasm_threads = True
    cfg.shared_memory = True
    return cfg


def test_check_compares_a_fresh_build_and_never_writes_over_the_models(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``build.py --check`` builds elsewhere: a stale committed model is reported and left as it was
    (it used to build into the committed folder and compare each file with itself)."""
    build = build_module()
    models = tmp_path / "models"
    models.mkdir()
    for path in SHIPPED.glob("*.wasm"):
        (models / path.name).write_bytes(path.read_bytes())
    stale = models / "esg.wasm"
    stale.write_bytes(stale.read_bytes() + b"\0")
    before = stale.read_bytes()
    monkeypatch.setattr(build, "WASM_DIR", models)
    assert build.main(["--check"]) == 1
    assert stale.read_bytes() == before
