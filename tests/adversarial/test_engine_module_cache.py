"""A tampered compiled-module cache costs a recompilation, never a crash or foreign code
(issue 19, item 3).

Each run is a fresh engine process (a crash must not take pytest with it) that values the same
inputs with the reference pipeline over one cache directory. After bits are flipped in a cached
``.cwasm``, after one is truncated, after one is replaced by another module's valid artifact
(with its digest), or after a digest goes missing, the next process logs a warning, counts the
rejection, recompiles, replaces the artifact and gives the same result; the one after that
reuses the artifact as is. The key that signs the artifacts lives outside the cache directory.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from services.common.errors import InvalidArgument
from services.engine.runtime import Runtime, RuntimeConfig
from services.valuation.reference_model import shipped_models

SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from services.engine.pipeline import PipelineRunner
    from services.engine.runtime import Runtime, RuntimeConfig
    from services.engine.workers import WasmPool
    from services.valuation.packages.config import REFERENCE_PIPELINE
    from tests.engine.wasm_helpers import inputs

    rejected = []
    config = RuntimeConfig(cache_dir=Path(sys.argv[1]), key_file=Path(sys.argv[2]))
    with WasmPool(Runtime(config, on_cache_rejected=rejected.append), threads=1) as pool:
        result = PipelineRunner(pool).run(REFERENCE_PIPELINE, inputs(64, 8))
    print(result.result_hash, ",".join(sorted(rejected)) or "-")
    """
)


def engine_run(cache: Path, key: Path) -> tuple[str, str, str]:
    """(result hash, rejection reasons or '-', stderr) of one engine process."""
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(cache), str(key)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"engine process died ({done.returncode}): {done.stderr[-2000:]}"
    result_hash, reasons = done.stdout.split()
    return result_hash, reasons, done.stderr


def artifacts(cache: Path) -> dict[str, Path]:
    """Cached artifacts by model name (the cache key of each of the reference pipeline's models' bytes)."""
    runtime = Runtime(RuntimeConfig(cache_dir=cache))
    models = {name: wasm for name, wasm in shipped_models().items() if name in ("esg", "term_life")}
    return {name: cache / "modules" / f"{runtime.cache_key(wasm)}.cwasm" for name, wasm in models.items()}


def digest(path: Path) -> Path:
    return path.with_name(path.name + ".hmac")


def flip_bits(files: dict[str, Path]) -> None:
    path = files["term_life"]
    data = bytearray(path.read_bytes())
    for i in range(len(data) // 3, len(data) // 3 + 4096, 97):  # inside the code, past the header
        data[i] ^= 0xA5
    path.write_bytes(bytes(data))


def truncate(files: dict[str, Path]) -> None:
    path = files["esg"]
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def swap(files: dict[str, Path]) -> None:
    """esg's artifact and digest replaced by term_life's: both valid, for another module."""
    files["esg"].write_bytes(files["term_life"].read_bytes())
    digest(files["esg"]).write_bytes(digest(files["term_life"]).read_bytes())


def drop_digest(files: dict[str, Path]) -> None:
    digest(files["esg"]).unlink()


TAMPER: dict[str, tuple[Callable[[dict[str, Path]], None], str]] = {
    "bits-flipped": (flip_bits, "bad-digest"),
    "truncated": (truncate, "bad-digest"),
    "another-modules-artifact": (swap, "bad-digest"),
    "digest-missing": (drop_digest, "missing-digest"),
}


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> str:
    tmp = tmp_path_factory.mktemp("clean")
    result_hash, reasons, _ = engine_run(tmp / "cache", tmp / "state" / "key")
    assert reasons == "-"
    return result_hash


@pytest.mark.slow
@pytest.mark.parametrize("case", list(TAMPER), ids=list(TAMPER))
def test_a_tampered_artifact_is_recompiled_not_run(tmp_path: Path, baseline: str, case: str) -> None:
    cache, key = tmp_path / "cache", tmp_path / "state" / "module-cache.key"
    assert engine_run(cache, key)[:2] == (baseline, "-")
    files = artifacts(cache)
    assert all(p.exists() and digest(p).exists() for p in files.values())
    assert key.stat().st_mode & 0o077 == 0  # the key is the engine's alone
    tamper, reason = TAMPER[case]
    tamper(files)
    result_hash, reasons, stderr = engine_run(cache, key)
    assert (result_hash, reasons) == (baseline, reason)
    assert "failed verification" in stderr and reason in stderr
    # replaced: the next engine reuses it without complaint
    assert engine_run(cache, key)[:2] == (baseline, "-")


@pytest.mark.slow
def test_artifacts_signed_with_another_key_are_recompiled(tmp_path: Path, baseline: str) -> None:
    cache = tmp_path / "cache"
    assert engine_run(cache, tmp_path / "a" / "key")[:2] == (baseline, "-")
    assert engine_run(cache, tmp_path / "b" / "key")[:2] == (baseline, "bad-digest,bad-digest")


def test_the_key_may_not_live_in_the_cache(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="cache directory"):
        RuntimeConfig(cache_dir=tmp_path, key_file=tmp_path / "modules" / "key")
