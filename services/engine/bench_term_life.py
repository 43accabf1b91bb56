"""``livecalc bench engine``'s term_life section: the WASM host with 1…K threads beside the same C
built natively (`NATIVE_BUILDS`) and the numpy reference, on one set of inputs (synthetic model
points, lifelib's sample assumptions with dynamic lapse on, one set of esg scenarios shared by
all). The figure is policy·scenario·months per second, where months are the months actually
projected (Σ M over policies × N); each timing covers the whole term_life node (tables, scenario
tables, premiums, block partials), best of ``repeats`` after a warm-up (WASM: best of ``repeats``
rounds of ``runs_per_lease`` runs).

Every engine runs ABI v2 (docs/model-interface.md): the inputs are the shipped term_life
declaration's records and assets (`term_life_inputs`), run by `run_projection`. Beside the
WASM figures, the frozen ABI v1 build of the same model (`services.engine.bench_abi_v1`) runs
on the same pool and inputs: v1 and v2 alternate, one warm lease each per round (a lease holds
one binary: the two builds' static data overlap), so machine noise hits both alike; the report
gives ``wasm_v1_steps_per_s``, the ratio ``v2_vs_v1`` per thread count and whether v1's block
partials (and esg rates) have v2's bits.

The ``one_scenario`` section runs term_life on one scenario (a deterministic run: more policies,
the first of the same scenarios), on one thread, in the policy layout the shipped build picks
for fewer than 11 scenarios, beside the build from before that layout existed
(``bench_data/term_life_scenario_layout.wasm``, built at commit 565c739: one policy × 16
scenario lanes, 15 of them idle), alternating leases; its ratio ``one_scenario_vs_many``
divides its steps/s by the many-scenario figure of the same thread count.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from services.common.errors import FailedPrecondition
from services.engine.assumption_assets import shipped_assumptions
from services.engine.bench_abi_v1 import run_esg_v1, run_term_life_v1, v1_models
from services.engine.bench_timing import NATIVE_BUILDS, BenchSize, best_of, projection_once, ratio
from services.engine.layout import LayoutBuilder
from services.engine.model_points import synthetic_policies
from services.engine.native import NativePool
from services.engine.pipeline import RunInputs, reference_partials
from services.engine.reference_inputs import term_life_inputs
from services.engine.runtime import Runtime, RuntimeConfig
from services.engine.wasm_nodes import run_generator
from services.engine.workers import Executor, RunControl, RunLease, WasmPool
from services.valuation.arrays import F64
from services.valuation.assumptions import Assumptions
from services.valuation.blocks import same_bits
from services.valuation.policies import Policies
from services.valuation.reference_model import shipped_models
from services.valuation.scenarios import ScenarioParams

DYN_LAPSE_BETA = 25.0
SCENARIO_LAYOUT_WASM = "term_life_scenario_layout.wasm"
"""term_life as built before the policy layout (commit 565c739, unchanged since), in ``services/engine/bench_data``."""


def scenario_layout_wasm() -> bytes:
    """The frozen build of term_life from before the policy layout (every run in scenario lanes)."""
    return (resources.files("services.engine") / "bench_data" / SCENARIO_LAYOUT_WASM).read_bytes()


def term_life_once(ex: Executor, inputs: RunInputs, rates: F64) -> Callable[[], F64]:
    """One v2 term_life node: the scenario buffer written, then `run_projection`."""
    return projection_once(ex, "term_life", "rates", inputs, rates)


def _v1_once(ex: Executor, policies: Policies, assumptions: Assumptions, rates: F64) -> Callable[[], F64]:
    """One v1 term_life node (the frozen baseline): the rates written, then v1's call sequence."""
    n, months = rates.shape
    control = RunControl()

    def once() -> F64:
        alloc = LayoutBuilder(ex.memory.run_base)
        region = alloc.add_array("rates", rates.shape, np.float64)
        ex.memory.ensure(alloc.end)
        ex.memory.view(region, np.float64, rates.shape)[:] = rates
        return run_term_life_v1(
            ex, "term_life", alloc, policies, assumptions, rates=region, n_scen=n, rates_stride=months, control=control
        )

    return once


def _executor_run(ex: Executor, inputs: RunInputs, rates: F64, repeats: int) -> tuple[float, F64]:
    once = term_life_once(ex, inputs, rates)
    once()  # warm-up: instances, page faults
    return best_of(repeats, once)


def _scenarios(pool: WasmPool, scenarios: ScenarioParams, months: int) -> tuple[F64, bool]:
    """The v2 esg's rates f64 [N][months], and whether the v1 esg gives the same bits."""
    shape = (scenarios.count, months)
    with pool.lease() as lease:
        lease.load("esg", shipped_models()["esg"])
        buffers = run_generator(lease, "esg", LayoutBuilder(lease.memory.run_base), scenarios, months,
                                control=RunControl())  # fmt: skip
        rates: F64 = np.array(lease.memory.view(buffers["rates"].region, np.float64, shape))
    with pool.lease() as lease:
        lease.load("esg", v1_models()["esg"])
        region = run_esg_v1(lease, "esg", LayoutBuilder(lease.memory.run_base), scenarios, months, control=RunControl())
        rates_v1: F64 = np.array(lease.memory.view(region, np.float64, shape))
    return rates, bool(np.array_equal(rates.view(np.uint64), rates_v1.view(np.uint64)))


def _interleaved(
    pool: WasmPool, runs: dict[str, tuple[bytes, Callable[[RunLease], Callable[[], F64]]]], size: BenchSize
) -> dict[str, tuple[float, F64]]:
    """Best of ``repeats × runs_per_lease`` for each build, alternating: per round, one lease per
    build (a warm-up run, then ``runs_per_lease`` timed runs), in an order that swaps every round."""
    best: dict[str, tuple[float, F64]] = {}
    names = list(runs)
    for round_ in range(size.repeats):
        for name in names if round_ % 2 == 0 else names[::-1]:
            wasm, make = runs[name]
            with pool.lease() as lease:
                lease.load("term_life", wasm)
                once = make(lease)
                once()  # warm-up: instances, page faults
                t, out = best_of(size.runs_per_lease, once)
            if name not in best or t < best[name][0]:
                best[name] = (t, out)
    return best


def measure_term_life(threads: list[int], size: BenchSize, cache_dir: Path | None = None) -> dict[str, Any]:
    """term_life on every engine, same inputs: figures, ratios and input description."""
    assumptions = dataclasses.replace(shipped_assumptions(), dyn_lapse_beta=DYN_LAPSE_BETA)
    policies = synthetic_policies(size.policies, seed=1, in_force=0.2)
    scenarios = ScenarioParams(count=size.scenarios, seed=2024, sigma=0.015)
    inputs = term_life_inputs(policies, assumptions, scenarios)
    months = inputs.records.horizon_months
    projected = int((12 * policies.policy_term.astype(np.int64) - policies.duration_mth).sum())
    steps = projected * scenarios.count
    seconds: dict[str, Any] = {"wasm": {}, "wasm_v1": {}}
    wasm: dict[str, float] = {}
    wasm_v1: dict[str, float] = {}
    partials: dict[str, F64] = {}
    runtime = Runtime(RuntimeConfig(cache_dir=cache_dir))
    with WasmPool(runtime, threads=threads[0]) as pool:
        rates, esg_same = _scenarios(pool, scenarios, months)
    v2_wasm, v1_wasm = shipped_models()["term_life"], v1_models()["term_life"]
    for k in threads:
        with WasmPool(runtime, threads=k) as pool:
            best = _interleaved(pool, {
                "v2": (v2_wasm, lambda lease: term_life_once(lease, inputs, rates)),
                "v1": (v1_wasm, lambda lease: _v1_once(lease, policies, assumptions, rates)),
            }, size)  # fmt: skip
        (t, partials[f"wasm{k}"]), (t1, partials[f"wasm{k}_v1"]) = best["v2"], best["v1"]
        seconds["wasm"][str(k)], seconds["wasm_v1"][str(k)] = t, t1
        wasm[str(k)], wasm_v1[str(k)] = steps / t, steps / t1
    one = _one_scenario(runtime, threads[0], size, assumptions=assumptions, scenarios=scenarios, rates=rates[:1],
                        many=wasm[str(threads[0])])  # fmt: skip
    native: dict[str, float | None] = dict.fromkeys(NATIVE_BUILDS)
    try:
        for name, extra in NATIVE_BUILDS.items():
            with NativePool(threads=1, extra_flags=extra, cache_dir=cache_dir) as npool:
                t, partials[name] = _executor_run(npool, inputs, rates, size.repeats)
                seconds[name], native[name] = t, steps / t
    except (FailedPrecondition, OSError, subprocess.CalledProcessError) as exc:
        print(f"livecalc bench: native baseline unavailable: {exc}", file=sys.stderr)
    t, partials["numpy"] = best_of(1, lambda: reference_partials(inputs, rates))
    seconds["numpy"] = t
    numpy_rate = steps / t
    totals = {k: v[:, 4, :].sum(axis=0) for k, v in partials.items()}
    first = wasm[str(threads[0])]
    wasm_bits = partials[f"wasm{threads[0]}"]
    ratios: dict[str, Any] = {
        "wasm_vs_native": ratio(first, native["native"]),
        "wasm_vs_native_same_bits": ratio(first, native["native_same_bits"]),
        "wasm_vs_native_vw2_nofma": ratio(first, native["native_vw2_nofma"]),
        "wasm_vs_numpy": first / numpy_rate,
        "wasm_threads_speedup": {k: v / first for k, v in wasm.items()},
        "v2_vs_v1": {k: wasm[k] / wasm_v1[k] for k in wasm},
    }
    ref = totals["numpy"]
    agreement = {k: float(np.max(np.abs(v - ref) / np.abs(ref))) for k, v in totals.items() if k != "numpy"}
    return {
        "wasm_steps_per_s": wasm,
        "wasm_v1_steps_per_s": wasm_v1,
        "native_steps_per_s": native["native"],
        "native_same_bits_steps_per_s": native["native_same_bits"],
        "native_vw2_nofma_steps_per_s": native["native_vw2_nofma"],
        "bit_identical_to_wasm": {k: same_bits(v, wasm_bits) for k, v in partials.items() if k != f"wasm{threads[0]}"},
        "v1_v2_bit_identical": {
            "partials": all(same_bits(partials[f"wasm{k}_v1"], partials[f"wasm{k}"]) for k in threads),
            "esg_rates": esg_same,
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
            "wasm_runs": size.repeats * size.runs_per_lease,
        },
        "max_rel_diff_vs_numpy": agreement,
        "one_scenario": one,
    }


def _one_scenario(
    runtime: Runtime, threads: int, size: BenchSize, *, assumptions: Assumptions, scenarios: ScenarioParams,
    rates: F64, many: float,
) -> dict[str, Any]:  # fmt: skip
    """term_life on one scenario, ``size.one_scenario_policies`` policies: the shipped build (policy
    layout) and the frozen one from before it (scenario layout), alternating on ``threads`` threads."""
    policies = synthetic_policies(size.one_scenario_policies, seed=1, in_force=0.2)
    inputs = term_life_inputs(policies, assumptions, dataclasses.replace(scenarios, count=1))
    steps = int((12 * policies.policy_term.astype(np.int64) - policies.duration_mth).sum())
    if inputs.records.horizon_months > rates.shape[1]:
        raise FailedPrecondition("the one-scenario policies project past the scenarios' months")
    with WasmPool(runtime, threads=threads) as pool:
        best = _interleaved(pool, {
            "policy_layout": (shipped_models()["term_life"], lambda lease: term_life_once(lease, inputs, rates)),
            "scenario_layout": (scenario_layout_wasm(), lambda lease: term_life_once(lease, inputs, rates)),
        }, size)  # fmt: skip
    after, before = steps / best["policy_layout"][0], steps / best["scenario_layout"][0]
    return {
        "threads": threads,
        "policies": size.one_scenario_policies,
        "steps": steps,
        "wasm_steps_per_s": {"policy_layout": after, "scenario_layout": before},
        "bit_identical": same_bits(best["policy_layout"][1], best["scenario_layout"][1]),
        "ratios": {
            "one_scenario_vs_many": after / many,
            "one_scenario_vs_many_before": before / many,
            "policy_vs_scenario_layout": after / before,
        },
    }
