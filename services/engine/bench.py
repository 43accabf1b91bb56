"""``livecalc bench engine``: projection speed of the shipped models, side by side.

One invocation measures each model in ``--models`` on the same machine and pool: the WASM host
with 1…K threads, the same C compiled natively (``cc -O3 -march=native``, which contracts into
FMA and so computes other bits; the same arithmetic as the WASM build, ``-ffp-contract=off`` at
full native width, whose ratio ``wasm_vs_native_same_bits`` is the fair one; and a profiling
variant with WASM's vector width), and the numpy reference. term_life (`bench_term_life`, with
the frozen ABI v1 build beside v2) gives the report's top level; savings (`bench_savings`,
lifelib CashValue_ME) its ``savings`` section, with ratios to term_life when both ran.
`bench_report` renders the text. Benchmarks are not tests: this prints numbers.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np

from services.common.errors import FailedPrecondition
from services.engine.bench_report import render
from services.engine.bench_savings import measure_savings
from services.engine.bench_term_life import measure_term_life
from services.engine.bench_timing import FULL, QUICK, BenchSize, ratio_of
from services.engine.native import compiler
from services.engine.runtime import wasmtime_version

MODELS: Final = ("term_life", "savings")
"""``--models``: the sections of a run, in this order."""
TARGETS = {
    "wasm_steps_per_s": 4e8,
    "wasm_vs_native": 0.4,
    "wasm_vs_native_same_bits": 0.5,
    "one_scenario_vs_many": 0.5,
    "wasm_vs_numpy": 5.0,
    "two_threads_speedup": 1.8,
    "v2_vs_v1": 0.95,
}


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        cc = subprocess.run([compiler(), "--version"], capture_output=True, text=True, check=True).stdout.split("\n")[0]
    except (FailedPrecondition, OSError, subprocess.CalledProcessError):
        cc = "none"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "wasmtime": wasmtime_version(),
        "cc": cc,
    }


def measure(
    threads: list[int], size: BenchSize, cache_dir: Path | None = None, models: Sequence[str] = MODELS
) -> dict[str, Any]:
    """Run every engine on the same inputs, per model (term_life's figures at the top level, as
    before savings; savings' under ``savings``); figures, ratios, machine and input description."""
    unknown = sorted(set(models) - set(MODELS))
    if unknown or not models:
        raise FailedPrecondition(f"models must be some of {', '.join(MODELS)}, got {', '.join(models) or 'none'}")
    report: dict[str, Any] = {"models": [m for m in MODELS if m in models]}
    if "term_life" in models:
        report |= measure_term_life(threads, size, cache_dir)
    if "savings" in models:
        savings = measure_savings(threads, dataclasses.replace(size, scenarios=size.savings_scenarios), cache_dir)
        if "term_life" in models:
            savings["vs_term_life"] = {
                "wasm": {k: v / report["wasm_steps_per_s"][k] for k, v in savings["wasm_steps_per_s"].items()},
                "native_same_bits": ratio_of(savings["native_same_bits_steps_per_s"],
                                              report["native_same_bits_steps_per_s"]),
                "numpy": savings["numpy_steps_per_s"] / report["numpy_steps_per_s"],
            }  # fmt: skip
        report["savings"] = savings
    report["targets"] = TARGETS
    report["machine"] = machine_info()
    return report


def bench_engine(
    threads: list[int] | None = None,
    *,
    as_json: bool = False,
    quick: bool = False,
    cache_dir: Path | None = None,
    policies: int | None = None,
    models: Sequence[str] = MODELS,
) -> int:
    """Measure and print (or print one JSON object); returns the exit code."""
    if threads is None:
        threads = list(range(1, (os.cpu_count() or 1) + 1))
    if not threads or any(k < 1 for k in threads):
        raise FailedPrecondition("threads must be a non-empty list of counts ≥ 1")
    size = QUICK if quick else FULL
    if policies is not None:
        size = dataclasses.replace(size, policies=policies)
    report = measure(sorted(set(threads)), size, cache_dir, models)
    print(json.dumps(report, indent=2) if as_json else render(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(bench_engine(as_json="--json" in sys.argv, quick="--quick" in sys.argv))
