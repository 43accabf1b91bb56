"""`bench engine --json` prints one JSON object with the figures; native agrees with WASM, and
the frozen ABI v1 build gives ABI v2's bits.

Tests check correctness only: the figures are printed, never compared with a speed.
"""

from __future__ import annotations

import json

import pytest

from services.engine.bench import bench_engine
from services.engine.native import compiler


def test_bench_engine_quick_json(capsys: pytest.CaptureFixture[str]) -> None:
    try:
        compiler()
    except Exception:  # noqa: BLE001 - no C compiler: the native figure is absent, the rest must work
        pytest.skip("no C compiler")
    assert bench_engine([1, 2], as_json=True, quick=True) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["wasm_steps_per_s"]) == {"1", "2"}
    assert all(v > 0 for v in report["wasm_steps_per_s"].values())
    assert report["native_steps_per_s"] > 0
    assert report["native_same_bits_steps_per_s"] > 0
    assert report["numpy_steps_per_s"] > 0
    assert report["ratios"]["wasm_vs_native_same_bits"] > 0
    assert report["bit_identical_to_wasm"]["wasm2"]  # threads never change the bits
    # the frozen ABI v1 build ran beside v2 on the same inputs: v2 kept v1's arithmetic
    assert set(report["wasm_v1_steps_per_s"]) == {"1", "2"}
    assert all(v > 0 for v in report["wasm_v1_steps_per_s"].values())
    assert all(v > 0 for v in report["ratios"]["v2_vs_v1"].values())
    assert report["v1_v2_bit_identical"] == {"partials": True, "esg_rates": True}
    assert report["bit_identical_to_wasm"]["wasm1_v1"] and report["bit_identical_to_wasm"]["wasm2_v1"]
    assert report["machine"]["cores"] >= 1
    for engine, rel in report["max_rel_diff_vs_numpy"].items():
        assert rel < 1e-9, engine


def test_bench_engine_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_engine([1], quick=True) == 0
    out = capsys.readouterr().out
    assert "wasm, 1 thread" in out and "numpy reference" in out and "ratios:" in out
    assert "wasm ABI v1, 1 thread" in out and "v1 bits = v2 bits: partials yes, esg rates yes" in out


def test_cli_bench_engine_json_is_one_document() -> None:
    import subprocess

    from tests.support import VENV_BIN

    result = subprocess.run(
        [str(VENV_BIN / "livecalc"), "bench", "engine", "--quick", "--threads", "1", "--policies", "512", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)  # the whole stdout parses: nothing else was printed
    assert set(report["wasm_steps_per_s"]) == {"1"}
    assert report["inputs"]["policies"] == 512  # --policies sizes the problem


def test_cli_bench_engine_rejects_bad_threads() -> None:
    import subprocess

    from tests.support import VENV_BIN

    result = subprocess.run(
        [str(VENV_BIN / "livecalc"), "bench", "engine", "--threads", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "thread counts must be ≥ 1" in result.stderr
