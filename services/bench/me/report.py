"""What a ``livecalc bench me`` run found: the JSON document, its text, and whether it passed.

Steps are active policy-months (each row's projected months, one scenario); steps/s and
policies/s are per wall second of a whole run (in process: read the file, validate, run the
pipeline; mesh: SubmitJob to the result event). The published GPU figures are converted to the
same unit with the same points: lifelib's 10,000 ×10,000 = 100M model points project
10,000 × (their active months) steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from services.bench.me.lifelib_oracle import COMPONENTS, MODEL, LifelibME
from services.bench.me.measure import Measured
from services.bench.mesh.report import machine, median

RTOL: Final = 1e-12
"""Every portfolio total against K × lifelib's (the exactly rounded sum of its per-policy PVs)."""
PUBLISHED_POINTS: Final = 100_000_000


@dataclass(frozen=True)
class Published:
    """A published wall time for lifelib's BasicTerm_ME at `PUBLISHED_POINTS` model points."""

    name: str
    seconds: float


PUBLISHED: Final = (
    Published("JAX (float64) on one NVIDIA H100", 1.551),
    Published("JAX (float64) on one NVIDIA A100", 3.448),
)
"""The Actuarial Open Source benchmarks' JAX port of BasicTerm_ME (github.com/actuarialopensource/
benchmarks, containers/BasicTerm_ME_python, run at MULTIPLIER=10000: lifelib's points ×10,000)."""


def active_months(lifelib: LifelibME, points: int | None = None) -> int:
    """Σ over the first ``points`` model points of the months each is projected: 12·term −
    duration_mth (future new business from t = 0 too; 0 for a policy maturing at t = 0)."""
    term = lifelib.points["policy_term"][:points].astype(np.int64)
    duration = lifelib.points["duration_mth"][:points].astype(np.int64)
    return int(np.maximum(12 * term - duration, 0).sum())


def relative(ours: float, theirs: float) -> float:
    if theirs == 0.0:
        return 0.0 if ours == 0.0 else float("inf")
    return abs(ours - theirs) / abs(theirs)


def _rates(seconds: float, steps: int, rows: int) -> dict[str, Any]:
    return {"seconds": seconds, "steps_per_s": steps / seconds, "policies_per_s": rows / seconds}


def document(found: Measured) -> dict[str, Any]:
    cfg, lifelib, rows = found.cfg, found.lifelib, found.rows
    points = rows // cfg.multiplier
    steps = found.in_process[0].steps
    expected = {name: cfg.multiplier * lifelib.total(name, points) for name in COMPONENTS}
    ours = found.in_process[-1].totals
    difference = {name: relative(ours[name], expected[name]) for name in COMPONENTS}
    matches = all(d <= RTOL for d in difference.values())
    in_process = _rates(median([r.seconds for r in found.in_process]), steps, rows)
    in_process["runs_s"] = [r.seconds for r in found.in_process]
    mesh = []
    for n, runs in found.mesh.items():
        figures = _rates(median([r.seconds for r in runs]), steps, rows)
        mesh.append(
            {
                "engines": n,
                **figures,
                "runs_s": [r.seconds for r in runs],
                "chunks": runs[0].chunks,
                "first_progress_s": median([r.first_progress_s or 0.0 for r in runs]),
                "vs_in_process": figures["seconds"] / in_process["seconds"],
                "steps": runs[0].steps,
            }
        )
    published_steps = (PUBLISHED_POINTS // len(lifelib)) * active_months(lifelib)
    best = max([in_process["steps_per_s"], *(m["steps_per_s"] for m in mesh)])
    published = [
        {
            "name": p.name,
            "points": PUBLISHED_POINTS,
            "seconds": p.seconds,
            "steps_per_s": published_steps / p.seconds,
            "best_here_vs_published": best / (published_steps / p.seconds),
        }
        for p in PUBLISHED
    ]
    hashes_identical = len(set(found.hashes)) == 1
    steps_agree = all(m["steps"] == steps for m in mesh)
    return {
        "benchmark": f"lifelib basiclife {MODEL} ×{cfg.multiplier}, one base scenario",
        "machine": machine(),
        "threads": cfg.threads,
        "repeats": cfg.repeats,
        "multiplier": cfg.multiplier,
        "points_per_copy": points,
        "policies": rows,
        "steps": steps,
        "steps_at_published_points": published_steps,
        "dataset_write_s": found.write_seconds,
        "in_process": in_process,
        "mesh": mesh,
        "published": published,
        "lifelib": {
            "version": lifelib.lifelib_version,
            "numpy_power_is_libm": lifelib.pow_is_libm,
            "expected_totals": expected,
        },
        "totals": ours,
        "relative_difference": difference,
        "rtol": RTOL,
        "total_matches_lifelib": matches,
        "result_hash": found.hashes[0],
        "all_hashes_identical": hashes_identical,
        "mesh_steps_equal_in_process": steps_agree,
        "ok": matches and hashes_identical and steps_agree,
    }


def text(doc: dict[str, Any]) -> str:
    m = doc["machine"]
    lines = [
        f"{doc['benchmark']}: {doc['policies']:,} policies, {doc['steps']:,} active policy-months",
        f"machine: {m['cpu']}, {m['cores']} cores; {doc['threads']} threads per engine and in process; "
        f"median of {doc['repeats']}",
        "",
        f"{'run':<34}{'seconds':>10}{'steps/s':>12}{'policies/s':>13}",
    ]

    def row(name: str, seconds: float, steps: float, policies: float | None) -> None:
        per = f"{policies:>13.3g}" if policies is not None else f"{'':>13}"
        lines.append(f"{name:<34}{seconds:>10.3f}{steps:>12.3g}{per}")

    ip = doc["in_process"]
    row("in process", ip["seconds"], ip["steps_per_s"], ip["policies_per_s"])
    for r in doc["mesh"]:
        row(f"mesh, {r['engines']} engine(s)", r["seconds"], r["steps_per_s"], r["policies_per_s"])
    lines.append(f"published, {PUBLISHED_POINTS:,} points ({doc['steps_at_published_points']:,} active months):")
    for p in doc["published"]:
        row(f"  {p['name']}", p["seconds"], p["steps_per_s"], p["points"] / p["seconds"])
        lines.append(f"{'':<4}best steps/s here ÷ this: {p['best_here_vs_published']:.3g}")
    lines.append("")
    for name in COMPONENTS:
        theirs = doc["lifelib"]["expected_totals"][name]
        lines.append(
            f"pv_{name:<12} ours {doc['totals'][name]!r:>24}  {doc['multiplier']} × lifelib {theirs!r:>24}  "
            f"relative {doc['relative_difference'][name]:.1e}"
        )
    verdict = "equal" if doc["total_matches_lifelib"] else "NOT equal"
    lines.append(f"totals {verdict} to lifelib's ×{doc['multiplier']} within {doc['rtol']:g} relative")
    same = "identical" if doc["all_hashes_identical"] else "DIFFERENT"
    lines.append(f"result hashes (in process and every mesh job) {same}: {doc['result_hash']}")
    return "\n".join(lines)
