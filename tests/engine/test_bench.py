"""`bench engine --json` prints one JSON object with the figures; native agrees with WASM, and
the frozen ABI v1 build gives ABI v2's bits; savings (lifelib CashValue_ME) beside term_life,
its timed WASM node giving a pipeline run's bits.

Tests check correctness only: the figures are printed, never compared with a speed.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pyarrow as pa
import pytest

from services.data.generate import savings_blocks
from services.engine.bench import bench_engine
from services.engine.bench_savings import savings_bench_inputs, savings_rows
from services.engine.bench_timing import QUICK
from services.engine.native import compiler
from services.engine.pipeline import PipelineRunner
from services.engine.runtime import Runtime
from services.engine.workers import WasmPool
from services.valuation.packages.reference import SAVINGS_PIPELINE


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
    # one scenario: the policy layout beside the frozen scenario-layout build, same bits
    one = report["one_scenario"]
    assert one["threads"] == 1 and one["policies"] == QUICK.one_scenario_policies and one["steps"] > 0
    assert all(v > 0 for v in one["wasm_steps_per_s"].values())
    assert set(one["wasm_steps_per_s"]) == {"policy_layout", "scenario_layout"}
    assert one["bit_identical"]
    assert one["ratios"]["one_scenario_vs_many"] > 0 and one["ratios"]["policy_vs_scenario_layout"] > 0
    # savings beside term_life, on the same machine in the same run
    assert report["models"] == ["term_life", "savings"]
    sv = report["savings"]
    assert set(sv["wasm_steps_per_s"]) == {"1", "2"} and all(v > 0 for v in sv["wasm_steps_per_s"].values())
    for figure in ("native_steps_per_s", "native_same_bits_steps_per_s", "native_vw2_nofma_steps_per_s"):
        assert sv[figure] > 0, figure
    assert sv["numpy_steps_per_s"] > 0
    ratios = sv["ratios"]
    assert ratios["wasm_vs_native_same_bits"] > 0 and ratios["wasm_vs_numpy"] > 0
    assert ratios["threads_speedup"]["1"] == 1.0 and ratios["threads_speedup"]["2"] > 0
    assert set(sv["vs_term_life"]["wasm"]) == {"1", "2"}
    inputs = savings_bench_inputs(QUICK.policies, QUICK.savings_scenarios)
    # steps: Σ row horizons × scenarios (policy·scenario·months)
    assert sv["steps"] == int(inputs.records.horizons.sum()) * QUICK.savings_scenarios > 0
    assert sv["inputs"]["policies"] == QUICK.policies and sv["inputs"]["scenarios"] == QUICK.savings_scenarios
    assert sv["bit_identical_to_wasm"]["wasm2"] and sv["bit_identical_to_wasm"]["pipeline"]
    assert sv["seconds_by_entry_point"]["wasm1"]["lc_run_blocks"] > 0
    for engine, rel in sv["max_rel_diff_vs_numpy"].items():
        assert rel < 1e-9, engine
    # the timed WASM node's block partials are, bit for bit, a normals → savings pipeline run's
    with WasmPool(Runtime(), threads=2) as pool:
        partials = PipelineRunner(pool).run(SAVINGS_PIPELINE, inputs).partials
    assert partials.shape == (QUICK.policies // 1024, 9, QUICK.savings_scenarios)
    assert hashlib.sha256(np.ascontiguousarray(partials).tobytes()).hexdigest() == sv["partials_sha256"]


def test_savings_rows_are_the_data_services_generated_policies() -> None:
    """The engine may not import the data service: its copy of the savings generator draws the same
    rows as `livecalc datasets generate --model savings` (across blocks of the PCG64 stream too)."""
    for rows, seed, block_rows in ((2500, 7, 1000), (70_000, 1, 65_536)):
        mine = savings_rows(rows, seed=seed, block_rows=block_rows)
        theirs = pa.Table.from_batches(list(savings_blocks(rows, seed, block_rows=block_rows))).drop(["spec_id"])
        assert mine.column_names == theirs.column_names
        for name in mine.column_names:
            assert mine.column(name).equals(theirs.column(name)), name


def test_bench_engine_text(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_engine([1], quick=True) == 0
    out = capsys.readouterr().out
    assert "wasm, 1 thread" in out and "numpy reference" in out and "ratios:" in out
    assert "wasm ABI v1, 1 thread" in out and "v1 bits = v2 bits: partials yes, esg rates yes" in out
    assert "one scenario (a deterministic run): 8192 policies" in out and "same bits: yes" in out
    assert "savings (lifelib CashValue_ME): 4096 policies × 16 scenarios" in out
    assert "numpy twin:" in out and "savings/term_life steps/s: wasm 1 thread" in out and "pipeline yes" in out


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
    assert report["savings"]["inputs"]["policies"] == 512


def test_cli_bench_engine_savings_alone() -> None:
    """`--models savings`: the savings section alone (no term_life figures, no v1 baseline)."""
    import subprocess

    from tests.support import VENV_BIN

    argv = [str(VENV_BIN / "livecalc"), "bench", "engine", "--quick", "--threads", "1", "--policies", "300"]
    result = subprocess.run(
        [*argv, "--models", "savings", "--json"], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["models"] == ["savings"] and "wasm_v1_steps_per_s" not in report
    assert "vs_term_life" not in report["savings"] and report["savings"]["bit_identical_to_wasm"]["pipeline"]
    bad = subprocess.run(
        [*argv, "--models", "term_life,annuity"], capture_output=True, text=True, timeout=60, check=False
    )
    assert bad.returncode == 2 and "expected some of term_life,savings" in bad.stderr


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
