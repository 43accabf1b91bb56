"""The text report of ``livecalc bench engine``: term_life's lines, then savings' section
(``--json`` prints the report dictionary itself instead)."""

from __future__ import annotations

from typing import Any


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
    if "one_scenario" in report:
        lines += _render_one_scenario(report["one_scenario"])
    return lines


def _render_one_scenario(one: dict[str, Any]) -> list[str]:
    rates, r = one["wasm_steps_per_s"], one["ratios"]
    return [
        f"one scenario (a deterministic run): {one['policies']} policies → {one['steps']:.3g} steps, "
        f"wasm, {_threads(str(one['threads']))}",
        f"  policy layout (now):           {_fmt(rates['policy_layout']):>9} steps/s  "
        f"(one_scenario_vs_many {r['one_scenario_vs_many']:.3f})",
        f"  scenario layout (before):      {_fmt(rates['scenario_layout']):>9} steps/s  "
        f"(one_scenario_vs_many {r['one_scenario_vs_many_before']:.3f})",
        f"  policy/scenario layout ×{r['policy_vs_scenario_layout']:.2f}; same bits: "
        f"{'yes' if one['bit_identical'] else 'NO'}",
    ]


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
