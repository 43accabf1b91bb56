"""``livecalc bench engine``: projection speed of the term_life model, side by side.

One run on the same inputs (synthetic model points, lifelib's sample assumptions with
dynamic lapse on, one set of esg scenarios shared by all): the WASM host with 1…K threads,
the same C compiled natively (``cc -O3 -march=native``, which contracts into FMA and so
computes other bits; the same arithmetic as the WASM build, ``-ffp-contract=off`` at full
native width, whose ratio ``wasm_vs_native_same_bits`` is the fair one; and a profiling
variant with WASM's vector width), and the numpy reference. The figure is policy·scenario·
months per second, where months are the months actually projected (Σ M over policies × N);
each timing covers the whole term_life node (tables, scenario tables, premiums, block
partials), best of ``repeats`` after a warm-up (WASM: best of ``repeats`` rounds of
``runs_per_lease`` runs, see below). Benchmarks are not tests: this prints numbers.

Every engine runs ABI v2 (docs/model-interface.md): the inputs are the shipped term_life
declaration's records and assets (`term_life_inputs`), run by `run_projection`. Beside the
WASM figures, the frozen ABI v1 build of the same model (`services.engine.bench_abi_v1`) runs
on the same pool and inputs: v1 and v2 alternate, one warm lease each per round (a lease holds
one binary: the two builds' static data overlap), so machine noise hits both alike; the report
gives ``wasm_v1_steps_per_s``, the ratio ``v2_vs_v1`` per thread count and whether v1's block
partials (and esg rates) have v2's bits.

The same invocation then measures the second shipped model, savings (lifelib CashValue_ME, an
account value per scenario carried month to month), under ``savings`` in the report
(`measure_savings`; ``models`` picks either or both): generated savings policies (`savings_rows`),
the savings package's normals drawn once by a normals → savings pipeline run whose block partials
the timed WASM node must equal bit for bit, then WASM 1…K threads, the three native builds and
the numpy twin on those draws; steps are Σ row horizons × scenarios, and each engine's best run is
split by entry point (`seconds_by_entry_point`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import pyarrow as pa

from services.common.errors import FailedPrecondition
from services.engine.assumption_assets import shipped_assumptions
from services.engine.bench_abi_v1 import run_esg_v1, run_term_life_v1, v1_models
from services.engine.layout import LayoutBuilder, scenario_buffer
from services.engine.memory import Arena
from services.engine.model_points import synthetic_policies
from services.engine.native import NARROW_FLAGS, SAME_BITS_FLAGS, NativePool, compiler
from services.engine.pipeline import PipelineRunner, RunInputs, reference_partials
from services.engine.reference_inputs import term_life_inputs
from services.engine.reference_savings import savings_inputs, savings_partials
from services.engine.runtime import Runtime, RuntimeConfig, wasmtime_version
from services.engine.wasm_nodes import ScenarioBuffer, run_generator, run_projection
from services.engine.workers import Executor, RunControl, RunLease, WasmPool
from services.valuation.arrays import F64
from services.valuation.assumptions import Assumptions
from services.valuation.packages.reference import SAVINGS_PIPELINE, savings_config
from services.valuation.policies import Policies
from services.valuation.reference_model import shipped_models
from services.valuation.scenarios import ScenarioParams

MODELS: Final = ("term_life", "savings")
"""``--models``: the sections of a run, in this order."""
DYN_LAPSE_BETA = 25.0
TARGETS = {
    "wasm_steps_per_s": 4e8,
    "wasm_vs_native": 0.4,
    "wasm_vs_native_same_bits": 0.5,
    "wasm_vs_numpy": 5.0,
    "two_threads_speedup": 1.8,
    "v2_vs_v1": 0.95,
}


SAVINGS_DATASET_SEED: Final = 1
_SAVINGS_PRODUCTS: Final = (  # spec_id A … D: premium_type, has_surr_charge, surr_charge_id, load_prem_rate, is_wl
    ("SINGLE", "false", "none", 0.10, "false"),
    ("SINGLE", "true", "type_1", 0.00, "false"),
    ("LEVEL", "false", "none", 0.10, "true"),
    ("LEVEL", "true", "type_3", 0.05, "true"),
)
_WHOLE_LIFE_TERM: Final = 9999


def savings_rows(n: int, seed: int = SAVINGS_DATASET_SEED, block_rows: int = 65_536) -> pa.Table:
    """``n`` savings model points, the rows ``livecalc datasets generate --model savings --seed SEED``
    writes (lifelib CashValue_ME's four products, entry ages 20..59, ~30 % in force; the data
    service's generator, which the engine may not import, re-drawn here draw for draw from the same
    PCG64 stream: tests/engine/test_bench.py holds the two equal), in the declaration's columns."""
    rng = np.random.Generator(np.random.PCG64(seed))
    spec = [np.array(column) for column in zip(*_SAVINGS_PRODUCTS, strict=True)]
    blocks = []
    for start in range(0, n, block_rows):
        m = min(block_rows, n - start)
        product = rng.integers(0, len(_SAVINGS_PRODUCTS), m)
        premium_type, has_sc, sc_id, load_rate, is_wl = (column[product] for column in spec)
        whole_life, level, load = is_wl == "true", premium_type == "LEVEL", load_rate.astype(np.float64)
        age = rng.integers(20, 60, m)
        term = rng.integers(0, 3, m) * 5 + 10
        sum_assured = rng.integers(10, 1001, m).astype(np.float64) * 1000.0
        policy_count = rng.integers(1, 101, m).astype(np.float64)
        premium = np.where(level, np.ceil(sum_assured / (80 - age) / 12 / 100) * 100, sum_assured)
        in_force = rng.random(m) < 0.3
        years_in_force = np.where(whole_life, 20, term)
        duration = np.where(in_force, (rng.random(m) * 12 * years_in_force).astype(np.int64) + 1, 0)
        duration = np.minimum(duration, 12 * years_in_force - 1)
        paid = np.where(level, premium * duration * (1.02 ** (duration / 24)), premium * 1.02 ** (duration / 12))
        blocks.append({
            "policy_id": np.arange(start + 1, start + m + 1, dtype=np.int64),
            "age_at_entry": age,
            "policy_term": np.where(whole_life, _WHOLE_LIFE_TERM, term),
            "policy_count": policy_count,
            "sum_assured": sum_assured,
            "duration_mth": duration,
            "premium_pp": premium,
            "av_pp_init": np.where(in_force, np.round(paid * (1 - load), 2), 0.0),
            "premium_type": premium_type,
            "has_surr_charge": has_sc,
            "surr_charge_id": sc_id,
            "load_prem_rate": load,
            "is_wl": is_wl,
        })  # fmt: skip
    names = blocks[0].keys() if blocks else ()
    return pa.table({name: np.concatenate([b[name] for b in blocks]) for name in names})


@dataclasses.dataclass(frozen=True)
class BenchSize:
    policies: int
    scenarios: int
    repeats: int
    """Timed runs of the native builds (after a warm-up); rounds of the WASM builds."""
    runs_per_lease: int = 1
    """Timed runs per WASM lease (after a warm-up): the WASM figures are best of repeats × this."""
    savings_scenarios: int = 16
    """Scenarios of the savings section (whole-life rows project ~3× term_life's months)."""


FULL = BenchSize(policies=4096, scenarios=256, repeats=5, runs_per_lease=3, savings_scenarios=64)
"""savings: the same policy count under 64 scenarios, about as many steps as term_life's 256."""
QUICK = BenchSize(policies=4096, scenarios=16, repeats=2, savings_scenarios=16)


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


def _timed(run: Callable[[], F64]) -> tuple[float, F64]:
    start = time.perf_counter()
    out = run()
    return time.perf_counter() - start, out


def _best(repeats: int, run: Callable[[], F64]) -> tuple[float, F64]:
    best, out = float("inf"), np.zeros(0)
    for _ in range(repeats):
        t, out = _timed(run)
        best = min(best, t)
    return best, out


def _v2_once(ex: Executor, inputs: RunInputs, rates: F64) -> Callable[[], F64]:
    """One v2 term_life node: the scenario buffer written, then `run_projection`."""
    n, months = rates.shape
    control = RunControl()

    def once() -> F64:
        alloc = LayoutBuilder(ex.memory.run_base)
        region = scenario_buffer(alloc, "rates", n, months)
        ex.memory.ensure(alloc.end)
        ex.memory.view(region, np.float64, rates.shape)[:] = rates
        result = run_projection(
            ex, "term_life", alloc, inputs.interface, records=inputs.records, assets=inputs.assets,
            scenarios={"rates": ScenarioBuffer(region, n, months)}, n_scen=n, control=control,
        )  # fmt: skip
        return result.partials

    return once


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
    once = _v2_once(ex, inputs, rates)
    once()  # warm-up: instances, page faults
    return _best(repeats, once)


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
                t, out = _best(size.runs_per_lease, once)
            if name not in best or t < best[name][0]:
                best[name] = (t, out)
    return best


def _bits_equal(a: F64, b: F64) -> bool:
    return a.shape == b.shape and bool(np.array_equal(a.view(np.uint64), b.view(np.uint64)))


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
                "v2": (v2_wasm, lambda lease: _v2_once(lease, inputs, rates)),
                "v1": (v1_wasm, lambda lease: _v1_once(lease, policies, assumptions, rates)),
            }, size)  # fmt: skip
        (t, partials[f"wasm{k}"]), (t1, partials[f"wasm{k}_v1"]) = best["v2"], best["v1"]
        seconds["wasm"][str(k)], seconds["wasm_v1"][str(k)] = t, t1
        wasm[str(k)], wasm_v1[str(k)] = steps / t, steps / t1
    native: dict[str, float | None] = {"native": None, "native_same_bits": None, "native_vw2_nofma": None}
    flags = {"native": (), "native_same_bits": SAME_BITS_FLAGS, "native_vw2_nofma": NARROW_FLAGS}
    try:
        for name, extra in flags.items():
            with NativePool(threads=1, extra_flags=extra, cache_dir=cache_dir) as npool:
                t, partials[name] = _executor_run(npool, inputs, rates, size.repeats)
                seconds[name], native[name] = t, steps / t
    except (FailedPrecondition, OSError, subprocess.CalledProcessError) as exc:
        print(f"livecalc bench: native baseline unavailable: {exc}", file=sys.stderr)
    t, partials["numpy"] = _best(1, lambda: reference_partials(inputs, rates))
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
        "bit_identical_to_wasm": {
            k: _bits_equal(v, wasm_bits) for k, v in partials.items() if k != f"wasm{threads[0]}"
        },
        "v1_v2_bit_identical": {
            "partials": all(_bits_equal(partials[f"wasm{k}_v1"], partials[f"wasm{k}"]) for k in threads),
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
    }


# ---------------------------------------------------------------------------
# savings (lifelib CashValue_ME): the path-dependent model beside term_life


class _EntryPointClock:
    """An `Executor` forwarding to ``ex`` that adds up the seconds spent in each entry point
    (``seconds``, cleared by the caller per run): where a run's time goes, host excluded."""

    def __init__(self, ex: Executor) -> None:
        self._ex = ex
        self.threads = ex.threads
        self.seconds: dict[str, float] = {}

    @property
    def memory(self) -> Arena:
        return self._ex.memory

    def _add(self, function: str, started: float) -> None:
        self.seconds[function] = self.seconds.get(function, 0.0) + time.perf_counter() - started

    def call(self, model: str, function: str, args: Sequence[int], control: RunControl) -> None:
        started = time.perf_counter()
        self._ex.call(model, function, args, control)
        self._add(function, started)

    def call_value(self, model: str, function: str, args: Sequence[int], control: RunControl) -> int:
        started = time.perf_counter()
        value = self._ex.call_value(model, function, args, control)
        self._add(function, started)
        return value

    def has_export(self, model: str, function: str) -> bool:
        return self._ex.has_export(model, function)

    def map(self, model: str, function: str, ctx: int, ranges: Sequence[tuple[int, int]], control: RunControl) -> None:
        started = time.perf_counter()
        self._ex.map(model, function, ctx, ranges, control)
        self._add(function, started)


@dataclasses.dataclass(frozen=True)
class _Timing:
    seconds: float
    partials: F64
    entry_points: dict[str, float]
    """The best run's seconds by entry point, and ``host`` (the rest: inputs written, partials copied)."""


def savings_bench_inputs(policies: int, scenarios: int) -> RunInputs:
    """The savings section's inputs: ``policies`` generated savings rows (`savings_rows`, seed
    `SAVINGS_DATASET_SEED`, as ``livecalc datasets generate --model savings``) under the savings
    package's scenario set (normals, seed and base scenario of `savings_config`) with ``scenarios``
    scenarios; no scenario data: the normals node draws them."""
    rows = savings_rows(policies)
    given = savings_inputs(rows, np.zeros((scenarios, 1)))
    sc = savings_config()["scenarios"]
    params = ScenarioParams(count=scenarios, seed=int(sc["seed"]), include_base=bool(sc["include_base"]))
    return dataclasses.replace(given, scenarios=params, scenario_data={})


def _savings_once(ex: Executor, inputs: RunInputs, std_norm: F64) -> tuple[Callable[[], F64], _EntryPointClock]:
    """One savings node: the draws written as its scenario buffer, then `run_projection`."""
    n, months = std_norm.shape
    control = RunControl()
    clock = _EntryPointClock(ex)

    def once() -> F64:
        alloc = LayoutBuilder(ex.memory.run_base)
        region = scenario_buffer(alloc, "std_norm", n, months)
        ex.memory.ensure(alloc.end)
        ex.memory.view(region, np.float64, std_norm.shape)[:] = std_norm
        result = run_projection(
            clock, "savings", alloc, inputs.interface, records=inputs.records, assets=inputs.assets,
            scenarios={"std_norm": ScenarioBuffer(region, n, months)}, n_scen=n, control=control,
        )  # fmt: skip
        return result.partials

    return once, clock


def _best_profiled(runs: int, once: Callable[[], F64], clock: _EntryPointClock, best: _Timing | None) -> _Timing:
    """``once`` warmed up, then the best of ``best`` and ``runs`` timed runs, with its entry points."""
    once()  # warm-up: instances, page faults
    for _ in range(runs):
        clock.seconds.clear()
        t, out = _timed(once)
        if best is None or t < best.seconds:
            host = t - sum(clock.seconds.values())
            best = _Timing(t, out, {**clock.seconds, "host": host})
    assert best is not None
    return best


def measure_savings(
    threads: list[int], size: BenchSize, cache_dir: Path | None = None, inputs: RunInputs | None = None
) -> dict[str, Any]:
    """savings on every engine, same inputs (``inputs``: `savings_bench_inputs` of ``size``): the
    normals → savings pipeline runs once (untimed): its draws are every engine's scenario data and
    its block partials the bits the timed WASM node must give. Figures, ratios, bits, profile."""
    inputs = inputs or savings_bench_inputs(size.policies, size.scenarios)
    n = inputs.scenarios.count
    runtime = Runtime(RuntimeConfig(cache_dir=cache_dir))
    with WasmPool(runtime, threads=threads[0]) as pool:
        pipeline = PipelineRunner(pool).run(SAVINGS_PIPELINE, inputs)
    std_norm = pipeline.buffers["std_norm"]
    horizons = inputs.records.horizons.astype(np.int64)
    projected = int(horizons.sum())
    steps = projected * n
    timings: dict[str, _Timing] = {}
    wasm: dict[str, float] = {}
    binary = shipped_models()["savings"]
    for k in threads:
        best: _Timing | None = None
        with WasmPool(runtime, threads=k) as pool:
            for _ in range(size.repeats):
                with pool.lease() as lease:
                    lease.load("savings", binary)
                    best = _best_profiled(size.runs_per_lease, *_savings_once(lease, inputs, std_norm), best)
        assert best is not None
        timings[f"wasm{k}"] = best
        wasm[str(k)] = steps / best.seconds
    native: dict[str, float | None] = {"native": None, "native_same_bits": None, "native_vw2_nofma": None}
    flags = {"native": (), "native_same_bits": SAME_BITS_FLAGS, "native_vw2_nofma": NARROW_FLAGS}
    try:
        for name, extra in flags.items():
            with NativePool(threads=1, extra_flags=extra, cache_dir=cache_dir) as npool:
                timings[name] = _best_profiled(size.repeats, *_savings_once(npool, inputs, std_norm), None)
                native[name] = steps / timings[name].seconds
    except (FailedPrecondition, OSError, subprocess.CalledProcessError) as exc:
        print(f"livecalc bench: native baseline unavailable: {exc}", file=sys.stderr)
    twin_inputs = dataclasses.replace(inputs, scenario_data={"std_norm": std_norm})
    t, twin = _best(1, lambda: savings_partials(twin_inputs, std_norm))
    numpy_rate = steps / t
    partials = {name: timing.partials for name, timing in timings.items()}
    partials |= {"numpy": twin, "pipeline": pipeline.partials}
    one = wasm[str(threads[0])]
    wasm_bits = partials[f"wasm{threads[0]}"]
    primary = inputs.interface.output_list.primary
    ref = twin[:, primary, :].sum(axis=0)
    agreement = {
        k: float(np.max(np.abs(v[:, primary, :].sum(axis=0) - ref) / np.abs(ref)))
        for k, v in partials.items()
        if k not in ("numpy", "pipeline")
    }
    return {
        "model": "savings",
        "wasm_steps_per_s": wasm,
        "native_steps_per_s": native["native"],
        "native_same_bits_steps_per_s": native["native_same_bits"],
        "native_vw2_nofma_steps_per_s": native["native_vw2_nofma"],
        "numpy_steps_per_s": numpy_rate,
        "ratios": {
            "wasm_vs_native": _ratio(one, native["native"]),
            "wasm_vs_native_same_bits": _ratio(one, native["native_same_bits"]),
            "wasm_vs_native_vw2_nofma": _ratio(one, native["native_vw2_nofma"]),
            "wasm_vs_numpy": one / numpy_rate,
            "threads_speedup": {k: v / one for k, v in wasm.items()},
        },
        "bit_identical_to_wasm": {
            k: _bits_equal(v, wasm_bits) for k, v in partials.items() if k != f"wasm{threads[0]}"
        },
        "partials_sha256": hashlib.sha256(np.ascontiguousarray(wasm_bits).tobytes()).hexdigest(),
        "seconds": {k: v.seconds for k, v in timings.items()} | {"numpy": t},
        "seconds_by_entry_point": {k: v.entry_points for k, v in timings.items()},
        "steps": steps,
        "inputs": {
            "policies": inputs.records.n_rows,
            "scenarios": n,
            "months_projected": projected,
            "mean_months": projected / max(1, inputs.records.n_rows),
            "max_months": inputs.records.horizon_months,
            "dataset_seed": SAVINGS_DATASET_SEED,
            "scenario_seed": inputs.scenarios.seed,
            "repeats": size.repeats,
            "wasm_runs": size.repeats * size.runs_per_lease,
        },
        "max_rel_diff_vs_numpy": agreement,
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
                "native_same_bits": _ratio_of(savings["native_same_bits_steps_per_s"],
                                              report["native_same_bits_steps_per_s"]),
                "numpy": savings["numpy_steps_per_s"] / report["numpy_steps_per_s"],
            }  # fmt: skip
        report["savings"] = savings
    report["targets"] = TARGETS
    report["machine"] = machine_info()
    return report


def _ratio(wasm: float, other: float | None) -> float | None:
    return wasm / other if other else None


def _ratio_of(rate: float | None, other: float | None) -> float | None:
    return rate / other if rate and other else None


def _fmt(rate: float | None) -> str:
    return "n/a" if rate is None else f"{rate:.3g}"


def _threads(k: str) -> str:
    return f"{k} thread{'s' if k != '1' else ''}"


def _machine_line(m: dict[str, Any]) -> str:
    return (
        f"machine: {m['cpu']}, {m['cores']} cores, {m['platform']}, Python {m['python']}, "
        f"wasmtime {m['wasmtime']}, {m['cc']}"
    )


def render(report: dict[str, Any]) -> str:
    """The text report: term_life's lines (as before savings), then savings' section."""
    models = report.get("models", ["term_life"])
    lines = _render_term_life(report) if "term_life" in models else [_machine_line(report["machine"])]
    if "savings" in report:
        lines += _render_savings(report["savings"])
    return "\n".join(lines)


def _render_term_life(report: dict[str, Any]) -> list[str]:
    i, m, r = report["inputs"], report["machine"], report["ratios"]
    same = report["v1_v2_bit_identical"]
    lines = [
        f"engine benchmark: term_life, {i['policies']} policies × {i['scenarios']} scenarios, "
        f"{i['months_projected']} policy·months → {report['steps']:.3g} policy·scenario·months "
        f"(dynamic lapse β={i['dyn_lapse_beta']}, best of {i['wasm_runs']} wasm, {i['repeats']} native)",
        _machine_line(m),
    ]
    for k, rate in report["wasm_steps_per_s"].items():
        lines.append(f"  wasm, {_threads(k)}: {_fmt(rate):>9} steps/s  "
                     f"(×{r['wasm_threads_speedup'][k]:.2f} of one thread)")  # fmt: skip
    for k, rate in report["wasm_v1_steps_per_s"].items():
        lines.append(f"  wasm ABI v1, {_threads(k)}: {_fmt(rate):>9} steps/s  (v2/v1 {r['v2_vs_v1'][k]:.3f})")
    lines += [
        f"  native -O3 -march=native:   {_fmt(report['native_steps_per_s']):>9} steps/s",
        f"  native, same arithmetic:    {_fmt(report['native_same_bits_steps_per_s']):>9} steps/s  "
        "(-ffp-contract=off, full width)",
        f"  native, 2-wide, no FMA:     {_fmt(report['native_vw2_nofma_steps_per_s']):>9} steps/s  (profiling)",
        f"  numpy reference:            {_fmt(report['numpy_steps_per_s']):>9} steps/s",
        f"ratios: wasm/native {_fmt(r['wasm_vs_native'])}, wasm/native-same-arithmetic "
        f"{_fmt(r['wasm_vs_native_same_bits'])}, wasm/native-2-wide-no-FMA "
        f"{_fmt(r['wasm_vs_native_vw2_nofma'])}, wasm/numpy {_fmt(r['wasm_vs_numpy'])}",
        "ABI v2 vs v1 (same run, alternating leases): "
        + ", ".join(f"{_threads(k)} {v:.3f}" for k, v in r["v2_vs_v1"].items())
        + f"; v1 bits = v2 bits: partials {'yes' if same['partials'] else 'NO'}, "
        f"esg rates {'yes' if same['esg_rates'] else 'NO'}",
        "agreement with numpy (max relative difference of portfolio pv_net_cf): "
        + ", ".join(f"{k} {v:.1e}" for k, v in report["max_rel_diff_vs_numpy"].items()),
        "bit-identical to wasm (block partials): "
        + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in report["bit_identical_to_wasm"].items()),
    ]
    return lines


def _render_savings(sv: dict[str, Any]) -> list[str]:
    i, r = sv["inputs"], sv["ratios"]
    lines = [
        f"savings (lifelib CashValue_ME): {i['policies']} policies × {i['scenarios']} scenarios, "
        f"{i['months_projected']} policy·months (mean {i['mean_months']:.0f}, up to {i['max_months']}) → "
        f"{sv['steps']:.3g} policy·scenario·months (normals seed {i['scenario_seed']}, "
        f"best of {i['wasm_runs']} wasm, {i['repeats']} native)",
    ]
    for k, rate in sv["wasm_steps_per_s"].items():
        lines.append(f"  wasm, {_threads(k)}: {_fmt(rate):>9} steps/s  (×{r['threads_speedup'][k]:.2f} of one thread)")
    lines += [
        f"  native -O3 -march=native:   {_fmt(sv['native_steps_per_s']):>9} steps/s",
        f"  native, same arithmetic:    {_fmt(sv['native_same_bits_steps_per_s']):>9} steps/s  "
        "(-ffp-contract=off, full width)",
        f"  native, 2-wide, no FMA:     {_fmt(sv['native_vw2_nofma_steps_per_s']):>9} steps/s  (profiling)",
        f"  numpy twin:                 {_fmt(sv['numpy_steps_per_s']):>9} steps/s  (python://savings)",
        f"ratios: wasm/native {_fmt(r['wasm_vs_native'])}, wasm/native-same-arithmetic "
        f"{_fmt(r['wasm_vs_native_same_bits'])}, wasm/native-2-wide-no-FMA "
        f"{_fmt(r['wasm_vs_native_vw2_nofma'])}, wasm/numpy {_fmt(r['wasm_vs_numpy'])}",
    ]
    vs = sv.get("vs_term_life")
    if vs is not None:
        lines.append(
            "savings/term_life steps/s: "
            + ", ".join(f"wasm {_threads(k)} {v:.3f}" for k, v in vs["wasm"].items())
            + f", native same arithmetic {_fmt(vs['native_same_bits'])}, numpy {_fmt(vs['numpy'])}"
        )
    lines.append("where the time goes (the best run, ms by entry point; host: inputs written, partials copied):")
    for engine, parts in sv["seconds_by_entry_point"].items():
        by_time = sorted(parts.items(), key=lambda kv: -kv[1])
        lines.append(f"  {engine}: " + ", ".join(f"{fn} {1e3 * t:.1f}" for fn, t in by_time))
    lines += [
        "agreement with numpy (max relative difference of portfolio net_cf): "
        + ", ".join(f"{k} {v:.1e}" for k, v in sv["max_rel_diff_vs_numpy"].items()),
        "bit-identical to wasm (block partials; pipeline: normals → savings as a job runs it): "
        + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in sv["bit_identical_to_wasm"].items()),
    ]
    return lines


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
