"""The engine works when installed, not only from a checkout: a wheel in a fresh virtual
environment outside the tree runs `livecalc bench engine --quick --json` and the reference
pipeline, finding its models and assets as package data; a read-only home does not stop it."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support import ROOT, VENV_BIN

PIPELINE_SCRIPT = textwrap.dedent(
    """
    import services.engine
    from services.engine.assumption_assets import shipped_assumptions
    from services.engine.model_points import synthetic_policies
    from services.engine.pipeline import PipelineRunner
    from services.engine.reference_inputs import term_life_inputs
    from services.valuation.packages.config import REFERENCE_PIPELINE
    from services.engine.runtime import Runtime
    from services.engine.workers import WasmPool
    from services.valuation.scenarios import ScenarioParams

    inputs = term_life_inputs(synthetic_policies(2000, 3), shipped_assumptions(), ScenarioParams(count=9, seed=5))
    with WasmPool(Runtime(), threads=2) as pool:
        print(services.engine.__file__)
        print(PipelineRunner(pool).run(REFERENCE_PIPELINE, inputs).result_hash)
    """
)


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, (cmd, result.stdout[-2000:], result.stderr[-4000:])
    return result


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_wheel_in_a_fresh_venv_runs_the_bench_and_a_pipeline(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["HOME"] = str(tmp_path / "home")
    env["PIP_CACHE_DIR"] = os.environ.get("PIP_CACHE_DIR", str(Path.home() / ".cache" / "pip"))
    # build from a copy of what the wheel is made of: setuptools writes build/ into the source
    # tree, and stale files there would end up in later wheels of the checkout
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in ("services", "gen", "clients/python/livecalc_client"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    wheels = tmp_path / "wheels"
    # --no-build-isolation: the build backend (setuptools) comes from the dev environment
    _run(
        [str(VENV_BIN / "python"), "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels),
         str(src)],
        tmp_path, env, 300,
    )  # fmt: skip
    (wheel,) = wheels.glob("livecalc_mesh-*.whl")
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], tmp_path, env, 120)
    _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)], tmp_path, env, 600)
    work = tmp_path / "elsewhere"
    work.mkdir()
    bench = _run([str(venv / "bin" / "livecalc"), "bench", "engine", "--quick", "--json"], work, env, 300)
    report = json.loads(bench.stdout)
    assert report["native_same_bits_steps_per_s"] is None or report["native_same_bits_steps_per_s"] > 0
    assert all(v < 1e-9 for v in report["max_rel_diff_vs_numpy"].values())
    out = _run([str(venv / "bin" / "python"), "-c", PIPELINE_SCRIPT], work, env, 300).stdout.split()
    assert out[0].startswith(str(venv))  # the installed copy ran, not the checkout
    assert len(out[1]) == 64


def test_bench_with_a_read_only_home(tmp_path: Path) -> None:
    """The cache dir falls back to a temporary one when the configured place cannot be written."""
    home = tmp_path / "home"
    home.mkdir()
    home.chmod(stat.S_IRUSR | stat.S_IXUSR)
    if os.access(home, os.W_OK):  # root ignores permissions
        pytest.skip("cannot make a read-only directory as this user")
    env = {**os.environ, "HOME": str(home)}
    result = subprocess.run(
        [str(VENV_BIN / "livecalc"), "bench", "engine", "--quick", "--threads", "1", "--json"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    home.chmod(stat.S_IRWXU)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["wasm_steps_per_s"]["1"] > 0


def test_cache_dir_falls_back_when_not_writable(tmp_path: Path) -> None:
    from services.engine.runtime import usable_cache_dir

    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    fallback = usable_cache_dir(blocker / "cache")  # mkdir under a file fails, as on a read-only root
    assert fallback.is_dir() and fallback != blocker / "cache"
    assert usable_cache_dir(tmp_path / "ok") == tmp_path / "ok"
