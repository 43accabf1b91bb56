"""``livecalc bench engine``'s savings section: the second shipped model (lifelib CashValue_ME, an
account value per scenario carried month to month) on the same engines as term_life.

Generated savings policies (`savings_rows`), the savings package's normals drawn once by a
normals → savings pipeline run whose block partials the timed WASM node must equal bit for bit,
then WASM 1…K threads, the frozen 8-lane build on one thread (`LANES8_BUILD`), the native builds
(`NATIVE_BUILDS`) and the numpy twin on those draws; steps are Σ row horizons × scenarios, and each
engine's best run is split by entry point (`seconds_by_entry_point`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Final

import numpy as np
import pyarrow as pa

from services.common.errors import FailedPrecondition
from services.engine.bench_timing import NATIVE_BUILDS, BenchSize, best_of, projection_once, ratio, timed
from services.engine.memory import Arena
from services.engine.native import NativePool
from services.engine.pipeline import PipelineRunner, RunInputs
from services.engine.reference_savings import savings_inputs, savings_partials
from services.engine.runtime import Runtime, RuntimeConfig
from services.engine.workers import Executor, RunControl, WasmPool
from services.valuation.arrays import F64
from services.valuation.blocks import same_bits
from services.valuation.packages.reference import SAVINGS_PIPELINE, savings_config
from services.valuation.reference_model import shipped_models
from services.valuation.scenarios import ScenarioParams

SAVINGS_DATASET_SEED: Final = 1
LANES8_BUILD: Final = "savings_lanes8.wasm"
"""The savings build this one replaced (commit 2382130: 8 scenarios per group, its month's vector loop
not unrolled), frozen in ``bench_data`` so that a run times the old kernel beside the new on the
same inputs; its partials must equal the shipped build's bit for bit. Never rebuild it."""
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
    """One savings node (the draws written as its scenario buffer), timed by entry point."""
    clock = _EntryPointClock(ex)
    return projection_once(clock, "savings", "std_norm", inputs, std_norm), clock


def _best_profiled(runs: int, once: Callable[[], F64], clock: _EntryPointClock, best: _Timing | None) -> _Timing:
    """``once`` warmed up, then the best of ``best`` and ``runs`` timed runs, with its entry points."""
    once()  # warm-up: instances, page faults
    for _ in range(runs):
        clock.seconds.clear()
        t, out = timed(once)
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
    its block partials the bits the timed WASM node must give (the frozen 8-lane build's too, timed
    on the first thread count beside the shipped one: ``wasm_vs_lanes8``). Figures, ratios, bits,
    profile."""
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
    lanes8 = (resources.files("services.engine") / "bench_data" / LANES8_BUILD).read_bytes()
    for k in threads:
        # on the first thread count, the frozen build too, in alternate leases (same load for both)
        builds = {f"wasm{k}": binary} | ({"wasm_lanes8": lanes8} if k == threads[0] else {})
        best: dict[str, _Timing | None] = dict.fromkeys(builds)
        with WasmPool(runtime, threads=k) as pool:
            for _ in range(size.repeats):
                for name, build in builds.items():
                    with pool.lease() as lease:
                        lease.load("savings", build)
                        best[name] = _best_profiled(size.runs_per_lease, *_savings_once(lease, inputs, std_norm),
                                                    best[name])  # fmt: skip
        for name, timing in best.items():
            assert timing is not None
            timings[name] = timing
        wasm[str(k)] = steps / timings[f"wasm{k}"].seconds
    native: dict[str, float | None] = dict.fromkeys(NATIVE_BUILDS)
    try:
        for name, extra in NATIVE_BUILDS.items():
            with NativePool(threads=1, extra_flags=extra, cache_dir=cache_dir) as npool:
                timings[name] = _best_profiled(size.repeats, *_savings_once(npool, inputs, std_norm), None)
                native[name] = steps / timings[name].seconds
    except (FailedPrecondition, OSError, subprocess.CalledProcessError) as exc:
        print(f"livecalc bench: native baseline unavailable: {exc}", file=sys.stderr)
    twin_inputs = dataclasses.replace(inputs, scenario_data={"std_norm": std_norm})
    t, twin = best_of(1, lambda: savings_partials(twin_inputs, std_norm))
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
        "wasm_lanes8_steps_per_s": steps / timings["wasm_lanes8"].seconds,
        "native_steps_per_s": native["native"],
        "native_same_bits_steps_per_s": native["native_same_bits"],
        "native_vw2_nofma_steps_per_s": native["native_vw2_nofma"],
        "numpy_steps_per_s": numpy_rate,
        "ratios": {
            "wasm_vs_native": ratio(one, native["native"]),
            "wasm_vs_native_same_bits": ratio(one, native["native_same_bits"]),
            "wasm_vs_native_vw2_nofma": ratio(one, native["native_vw2_nofma"]),
            "wasm_vs_numpy": one / numpy_rate,
            "wasm_vs_lanes8": timings["wasm_lanes8"].seconds / timings[f"wasm{threads[0]}"].seconds,
            "threads_speedup": {k: v / one for k, v in wasm.items()},
        },
        "bit_identical_to_wasm": {k: same_bits(v, wasm_bits) for k, v in partials.items() if k != f"wasm{threads[0]}"},
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
