"""``livecalc bench engine``: projection speed of the term_life model, side by side.

One run on the same inputs (synthetic model points, lifelib's sample assumptions with
dynamic lapse on, one set of esg scenarios shared by all): the WASM host with 1…K threads,
the same C compiled natively (``cc -O3 -march=native``, which contracts into FMA and so
computes other bits; the same arithmetic as the WASM build, ``-ffp-contract=off`` at full
native width, whose ratio ``wasm_vs_native_same_bits`` is the fair one; and a profiling
variant with WASM's vector width), and the numpy reference. The figure is policy·scenario·
months per second, where months are the months actually projected (Σ M over policies × N);
each timing covers the whole term_life node (tables, scenario tables, premiums, block
partials), best of ``repeats``. Benchmarks are not tests: this prints numbers.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from services.common.errors import FailedPrecondition
from services.engine.assumption_assets import shipped_assumptions
from services.engine.layout import LayoutBuilder
from services.engine.model_points import synthetic_policies
from services.engine.native import NARROW_FLAGS, SAME_BITS_FLAGS, NativePool, compiler
from services.engine.pipeline import reference_partials
from services.engine.runtime import Runtime, RuntimeConfig, wasmtime_version
from services.engine.wasm_nodes import run_esg, run_term_life
from services.engine.workers import Executor, RunControl, WasmPool
from services.valuation.arrays import F64
from services.valuation.reference_model import shipped_models
from services.valuation.scenarios import ScenarioParams

DYN_LAPSE_BETA = 25.0
TARGETS = {
    "wasm_steps_per_s": 4e8,
    "wasm_vs_native": 0.4,
    "wasm_vs_native_same_bits": 0.5,
    "wasm_vs_numpy": 5.0,
    "two_threads_speedup": 1.8,
}


@dataclasses.dataclass(frozen=True)
class BenchSize:
    policies: int
    scenarios: int
    repeats: int


FULL = BenchSize(policies=4096, scenarios=256, repeats=5)
QUICK = BenchSize(policies=4096, scenarios=16, repeats=2)


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


def _best(repeats: int, run: Callable[[], F64]) -> tuple[float, F64]:
    best, out = float("inf"), np.zeros(0)
    for _ in range(repeats):
        start = time.perf_counter()
        out = run()
        best = min(best, time.perf_counter() - start)
    return best, out


def _executor_run(ex: Executor, inputs: dict[str, Any], rates: F64, repeats: int) -> tuple[float, F64]:
    policies, assumptions = inputs["policies"], inputs["assumptions"]
    n, months = rates.shape
    control = RunControl()

    def once() -> F64:
        alloc = LayoutBuilder(ex.memory.run_base)
        region = alloc.add_array("rates", rates.shape, np.float64)
        ex.memory.ensure(alloc.end)
        ex.memory.view(region, np.float64, rates.shape)[:] = rates
        result = run_term_life(
            ex, "term_life", alloc, policies, assumptions,
            rates=region, n_scen=n, rates_stride=months, control=control,
        )  # fmt: skip
        return result.partials

    once()  # warm-up: instances, page faults
    return _best(repeats, once)


def measure(threads: list[int], size: BenchSize, cache_dir: Path | None = None) -> dict[str, Any]:
    """Run every engine on the same inputs; figures, ratios, machine and input description."""
    assumptions = dataclasses.replace(shipped_assumptions(), dyn_lapse_beta=DYN_LAPSE_BETA)
    policies = synthetic_policies(size.policies, seed=1, in_force=0.2)
    scenarios = ScenarioParams(count=size.scenarios, seed=2024, sigma=0.015)
    months = policies.horizon_months
    projected = int((12 * policies.policy_term.astype(np.int64) - policies.duration_mth).sum())
    steps = projected * scenarios.count
    inputs = {"policies": policies, "assumptions": assumptions}
    seconds: dict[str, Any] = {"wasm": {}}
    wasm: dict[str, float] = {}
    partials: dict[str, F64] = {}
    runtime = Runtime(RuntimeConfig(cache_dir=cache_dir))
    rates: F64 = np.zeros(0)
    for k in threads:
        with WasmPool(runtime, threads=k) as pool, pool.lease() as lease:
            for name, wasm_bytes in shipped_models().items():
                lease.load(name, wasm_bytes)
            if not rates.size:
                alloc = LayoutBuilder(lease.memory.run_base)
                region = run_esg(lease, "esg", alloc, scenarios, months, control=RunControl())
                rates = np.array(lease.memory.view(region, np.float64, (scenarios.count, months)))
            t, partials[f"wasm{k}"] = _executor_run(lease, inputs, rates, size.repeats)
        seconds["wasm"][str(k)] = t
        wasm[str(k)] = steps / t
    native: dict[str, float | None] = {"native": None, "native_same_bits": None, "native_vw2_nofma": None}
    flags = {"native": (), "native_same_bits": SAME_BITS_FLAGS, "native_vw2_nofma": NARROW_FLAGS}
    try:
        for name, extra in flags.items():
            with NativePool(threads=1, extra_flags=extra, cache_dir=cache_dir) as npool:
                t, partials[name] = _executor_run(npool, inputs, rates, size.repeats)
                seconds[name], native[name] = t, steps / t
    except (FailedPrecondition, OSError, subprocess.CalledProcessError) as exc:
        print(f"livecalc bench: native baseline unavailable: {exc}", file=sys.stderr)
    t, partials["numpy"] = _best(1, lambda: reference_partials(policies, assumptions, rates))
    seconds["numpy"] = t
    numpy_rate = steps / t
    totals = {k: v[:, 4, :].sum(axis=0) for k, v in partials.items()}
    one = wasm[str(threads[0])]
    wasm_bits = partials[f"wasm{threads[0]}"]
    ratios: dict[str, Any] = {
        "wasm_vs_native": _ratio(one, native["native"]),
        "wasm_vs_native_same_bits": _ratio(one, native["native_same_bits"]),
        "wasm_vs_native_vw2_nofma": _ratio(one, native["native_vw2_nofma"]),
        "wasm_vs_numpy": one / numpy_rate,
        "wasm_threads_speedup": {k: v / one for k, v in wasm.items()},
    }
    ref = totals["numpy"]
    agreement = {k: float(np.max(np.abs(v - ref) / np.abs(ref))) for k, v in totals.items() if k != "numpy"}
    return {
        "wasm_steps_per_s": wasm,
        "native_steps_per_s": native["native"],
        "native_same_bits_steps_per_s": native["native_same_bits"],
        "native_vw2_nofma_steps_per_s": native["native_vw2_nofma"],
        "bit_identical_to_wasm": {
            k: bool(np.array_equal(v.view(np.uint64), wasm_bits.view(np.uint64)))
            for k, v in partials.items()
            if k != f"wasm{threads[0]}"
        },
        "numpy_steps_per_s": numpy_rate,
        "ratios": ratios,
        "seconds": seconds,
        "steps": steps,
        "inputs": {
            "policies": size.policies,
            "scenarios": size.scenarios,
            "months_projected": projected,
            "max_months": months,
            "dyn_lapse_beta": DYN_LAPSE_BETA,
            "repeats": size.repeats,
        },
        "max_rel_diff_vs_numpy": agreement,
        "targets": TARGETS,
        "machine": machine_info(),
    }


def _ratio(wasm: float, other: float | None) -> float | None:
    return wasm / other if other else None


def _fmt(rate: float | None) -> str:
    return "n/a" if rate is None else f"{rate:.3g}"


def render(report: dict[str, Any]) -> str:
    i, m, r = report["inputs"], report["machine"], report["ratios"]
    lines = [
        f"engine benchmark: term_life, {i['policies']} policies × {i['scenarios']} scenarios, "
        f"{i['months_projected']} policy·months → {report['steps']:.3g} policy·scenario·months "
        f"(dynamic lapse β={i['dyn_lapse_beta']}, best of {i['repeats']})",
        f"machine: {m['cpu']}, {m['cores']} cores, {m['platform']}, Python {m['python']}, "
        f"wasmtime {m['wasmtime']}, {m['cc']}",
    ]
    for k, rate in report["wasm_steps_per_s"].items():
        lines.append(f"  wasm, {k} thread{'s' if k != '1' else ''}: {_fmt(rate):>9} steps/s  "
                     f"(×{r['wasm_threads_speedup'][k]:.2f} of one thread)")  # fmt: skip
    lines += [
        f"  native -O3 -march=native:   {_fmt(report['native_steps_per_s']):>9} steps/s",
        f"  native, same arithmetic:    {_fmt(report['native_same_bits_steps_per_s']):>9} steps/s  "
        "(-ffp-contract=off, full width)",
        f"  native, 2-wide, no FMA:     {_fmt(report['native_vw2_nofma_steps_per_s']):>9} steps/s  (profiling)",
        f"  numpy reference:            {_fmt(report['numpy_steps_per_s']):>9} steps/s",
        f"ratios: wasm/native {_fmt(r['wasm_vs_native'])}, wasm/native-same-arithmetic "
        f"{_fmt(r['wasm_vs_native_same_bits'])}, wasm/native-2-wide-no-FMA "
        f"{_fmt(r['wasm_vs_native_vw2_nofma'])}, wasm/numpy {_fmt(r['wasm_vs_numpy'])}",
        "agreement with numpy (max relative difference of portfolio pv_net_cf): "
        + ", ".join(f"{k} {v:.1e}" for k, v in report["max_rel_diff_vs_numpy"].items()),
        "bit-identical to wasm (block partials): "
        + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in report["bit_identical_to_wasm"].items()),
    ]
    return "\n".join(lines)


def bench_engine(
    threads: list[int] | None = None,
    *,
    as_json: bool = False,
    quick: bool = False,
    cache_dir: Path | None = None,
    policies: int | None = None,
) -> int:
    """Measure and print (or print one JSON object); returns the exit code."""
    if threads is None:
        threads = list(range(1, (os.cpu_count() or 1) + 1))
    if not threads or any(k < 1 for k in threads):
        raise FailedPrecondition("threads must be a non-empty list of counts ≥ 1")
    size = QUICK if quick else FULL
    if policies is not None:
        size = dataclasses.replace(size, policies=policies)
    report = measure(sorted(set(threads)), size, cache_dir)
    print(json.dumps(report, indent=2) if as_json else render(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(bench_engine(as_json="--json" in sys.argv, quick="--quick" in sys.argv))
