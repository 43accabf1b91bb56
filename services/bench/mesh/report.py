"""What a ``livecalc bench mesh`` run found: per-size reports, the JSON document and its text."""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from services.bench.mesh.config import DYN_LAPSE_BETA, PIPELINES, SCALE_TARGETS, TARGETS, BenchConfig, Size
from services.bench.mesh.runs import DirectRun, JobRun
from services.common.process_cpu import cpu_seconds
from services.common.processes import ServiceProcess


@dataclass
class SizeReport:
    size: Size
    model: str = "term_life"
    steps: int = 0
    in_process_s: list[float] = field(default_factory=list)
    direct: list[DirectRun] = field(default_factory=list)
    mesh: dict[int, list[JobRun]] = field(default_factory=dict)
    mesh_equal: dict[int, list[JobRun]] = field(default_factory=dict)
    hashes: list[str] = field(default_factory=list)
    engine_chunk_seconds: dict[int, float] = field(default_factory=dict)
    engine_chunks: dict[int, float] = field(default_factory=dict)
    peak_rss: dict[str, int] = field(default_factory=dict)
    #: CPU seconds of each timed run, by way ("in_process", "engine_alone", "mesh_N"): every process
    #: the way runs in (the bench for in process; the engines, data service and gateway it uses).
    cpu: dict[str, list[float]] = field(default_factory=dict)

    @contextlib.contextmanager
    def cpu_of(self, way: str, services: Sequence[ServiceProcess]) -> Iterator[None]:
        """Add the CPU seconds the block's run used to ``way``'s: the services' (processes), or
        this process's when none are named (in process)."""

        def now() -> float | None:
            if not services:
                return time.process_time()
            used = [cpu_seconds(s.proc.pid) for s in services]
            return None if any(u is None for u in used) else sum(u or 0.0 for u in used)

        before = now()
        yield
        after = now()
        if before is not None and after is not None:
            self.cpu.setdefault(way, []).append(after - before)

    def cpu_figures(self, way: str) -> dict[str, float] | None:
        """The way's median CPU seconds and the median over rounds of its ratio to in process."""
        runs, base = self.cpu.get(way), self.cpu.get("in_process")
        if not runs:
            return None
        if not base or min(base) <= 0:
            return {"cpu_seconds": median(runs)}
        return {"cpu_seconds": median(runs), "cpu_ratio_to_in_process": paired_ratio(runs, base)}


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as fh:
        cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu)
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = -1.0
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average_1m_at_end": round(load, 2),
    }


def paired_ratio(way: list[float], in_process: list[float]) -> float:
    """The median over rounds of a way's time over the in-process time of the same round (the
    runs of a round follow each other, so a change in the machine's load between rounds cancels)."""
    return median([w / i for w, i in zip(way, in_process, strict=True)])


def document(cfg: BenchConfig, reports: list[SizeReport]) -> dict[str, Any]:
    sizes = []
    for r in reports:
        ip = median(r.in_process_s)
        mesh: dict[str, dict[str, Any]] = {}
        for n, runs in r.mesh.items():
            e2e = median([x.seconds for x in runs])
            firsts = [x.first_statistics_s for x in runs if x.first_statistics_s is not None]
            mesh[str(n)] = {
                "seconds": e2e,
                "seconds_all": [x.seconds for x in runs],
                "steps_per_s": r.steps / e2e,
                "policies_per_s": r.size.policies / e2e,
                "ratio_to_in_process": paired_ratio([x.seconds for x in runs], r.in_process_s),
                "gateway_elapsed_s": median([x.gateway_elapsed_s for x in runs]),
                "first_progress_s": median([x.first_progress_s or 0.0 for x in runs]),
                "first_block_progress_s": median([x.first_block_progress_s or 0.0 for x in runs]),
                "first_statistics_s": median(firsts) if firsts else None,
                "chunks": runs[0].chunks,
                "engine_chunk_seconds_sum": r.engine_chunk_seconds.get(n, 0.0),
                "steps_reported": runs[0].steps,
                **(r.cpu_figures(f"mesh_{n}") or {}),
            }
        if "1" in mesh:
            for m in mesh.values():
                m["speedup_vs_1_engine"] = mesh["1"]["seconds"] / m["seconds"]
        equal_chunks = {}
        for n, runs in r.mesh_equal.items():
            e2e = median([x.seconds for x in runs])
            equal_chunks[str(n)] = {
                "seconds": e2e,
                "seconds_all": [x.seconds for x in runs],
                "chunks": runs[0].chunks,
                "guided_speedup": e2e / mesh[str(n)]["seconds"],
            }
        engine_alone = None
        if r.direct:
            direct = median([d.seconds for d in r.direct])
            engine_alone = {
                "seconds": direct,
                "engine_elapsed_s": median([d.engine_elapsed_s for d in r.direct]),
                "read_wait_s": median([d.read_wait_s for d in r.direct]),
                "policies_per_s": r.size.policies / direct,
                "ratio_to_in_process": paired_ratio([d.seconds for d in r.direct], r.in_process_s),
                **(r.cpu_figures("engine_alone") or {}),
            }
        sizes.append(
            {
                "model": r.model,
                "policies": r.size.policies,
                "scenarios": r.size.scenarios,
                "steps": r.steps,
                "in_process": {
                    "seconds": ip,
                    "seconds_all": r.in_process_s,
                    "steps_per_s": r.steps / ip,
                    "policies_per_s": r.size.policies / ip,
                    **({"cpu_seconds": median(r.cpu["in_process"])} if r.cpu.get("in_process") else {}),
                },
                "engine_alone": engine_alone,
                "mesh": mesh,
                "mesh_equal_chunks": equal_chunks,
                "peak_rss_bytes": r.peak_rss,
                "hashes_identical": len(set(r.hashes)) == 1,
                "result_hash": r.hashes[0],
                "runs_hashed": len(r.hashes),
            }
        )
    doc: dict[str, Any] = {
        "benchmark": "mesh --scale" if cfg.scale else "mesh",
        "threads_per_engine": cfg.threads,
        "repeats": cfg.repeats,
        "statistic": "median",
        "ratio_statistic": "ratio_to_in_process: the median over rounds of each round's ratio",
        "warm_up": "one untimed run per configuration" if cfg.warm_up else "none",
        "models": list(cfg.models),
        "dynamic_lapse_beta": DYN_LAPSE_BETA if "term_life" in cfg.models else None,
        "sizes": sizes,
        # per dataset: the sizes are different datasets, so different results
        "all_hashes_identical": all(len(set(r.hashes)) == 1 for r in reports),
        "targets": TARGETS,
        "machine": machine(),
    }
    if cfg.scale:
        doc["scale_targets"] = {**SCALE_TARGETS, "met": scale_targets_met(reports)}
    return doc


def scale_targets_met(reports: list[SizeReport]) -> bool:
    mb = 1 << 20
    for r in reports:
        for label, peak in r.peak_rss.items():
            if label.startswith("gateway") and peak > SCALE_TARGETS["gateway_peak_rss_mb"] * mb:
                return False
            if label.startswith("engine") and peak > SCALE_TARGETS["engine_peak_rss_mb"] * mb:
                return False
    return True


def _policies_per_s(size: dict[str, Any]) -> str:
    """Policies valued per second end to end (rows read, checked, projected, folded), each way."""
    ways = [("in process", size["in_process"])]
    if size["engine_alone"] is not None:
        ways.append(("one engine alone", size["engine_alone"]))
    ways += [(f"mesh of {n}", m) for n, m in size["mesh"].items()]
    return "  policies/s: " + ", ".join(f"{label} {way['policies_per_s']:.3e}" for label, way in ways)


def _cpu(way: dict[str, Any]) -> str:
    """The CPU columns of a way: its CPU seconds and their ratio to in process (blank if unknown)."""
    if "cpu_seconds" not in way:
        return ""
    ratio = way.get("cpu_ratio_to_in_process")
    return f"{way['cpu_seconds']:>9.2f}" + (f"{ratio:>7.2f}" if ratio is not None else f"{1.0:>7.2f}")


def text(doc: dict[str, Any]) -> str:
    mb = 1 << 20
    models = doc.get("models", ["term_life"])
    packages = "; ".join(PIPELINES[m].format(beta=doc["dynamic_lapse_beta"]) for m in models)
    lines = [
        f"mesh benchmark: reference package{'s' if len(models) > 1 else ''} ({packages}), "
        f"{doc['threads_per_engine']} thread(s) per engine and in process; {doc['repeats']} round(s) of one "
        f"timed run of every way in turn, medians (× in-proc: of each round's ratio), warm-up: {doc['warm_up']}",
        "machine: {cpu}, {cores} cores, {platform}, Python {python}, load {load_average_1m_at_end}".format(
            **doc["machine"]
        ),
    ]
    for s in doc["sizes"]:
        lines.append("")
        model = "" if models == ["term_life"] else f"{s['model']}: "
        lines.append(f"{model}{s['policies']:,} policies × {s['scenarios']:,} scenarios: {s['steps']:.3e} steps")
        lines.append(_policies_per_s(s))
        ip = s["in_process"]
        head: list[tuple[str, int]] = [("seconds", 9), ("steps/s", 11), ("× in-proc", 11), ("1st prog", 10)]
        head += [("1st block", 10), ("1st stats", 10), ("chunks", 8), ("× 1 eng", 9), ("CPU s", 9), ("× CPU", 7)]
        lines.append(f"  {'':<14}" + "".join(f"{name:>{width}}" for name, width in head))
        lines.append(
            f"  {'in-process':<14}{ip['seconds']:>9.3f}{ip['steps_per_s']:>11.3e}{1.0:>11.2f}{'':>47}{_cpu(ip)}"
        )
        ea = s["engine_alone"]
        if ea is not None:
            steps_alone = s["steps"] / ea["seconds"]
            lines.append(
                f"  {'engine alone':<14}{ea['seconds']:>9.3f}{steps_alone:>11.3e}{ea['ratio_to_in_process']:>11.2f}"
                f"{'':>30}{1:>8}{'':>9}{_cpu(ea)}   (read wait {ea['read_wait_s']:.3f} s)"
            )
        for n, m in s["mesh"].items():
            stats = "-" if m["first_statistics_s"] is None else f"{m['first_statistics_s']:.3f}"
            lines.append(
                f"  {'mesh, ' + n + ' eng':<14}{m['seconds']:>9.3f}{m['steps_per_s']:>11.3e}"
                f"{m['ratio_to_in_process']:>11.2f}{m['first_progress_s']:>10.3f}{m['first_block_progress_s']:>10.3f}"
                f"{stats:>10}{m['chunks']:>8}"
                + (f"{m['speedup_vs_1_engine']:>9.2f}" if "speedup_vs_1_engine" in m else f"{'':>9}")
                + _cpu(m)
            )
            eq = s.get("mesh_equal_chunks", {}).get(n)
            if eq is not None:
                lines.append(
                    f"  {'  equal chunks':<14}{eq['seconds']:>9.3f}{s['steps'] / eq['seconds']:>11.3e}"
                    f"{eq['seconds'] / ip['seconds']:>11.2f}{'':>30}{eq['chunks']:>8}"
                    f"   (equal / guided time: {eq['guided_speedup']:.2f})"
                )
        rss = ", ".join(f"{k} {v / mb:.0f}" for k, v in s["peak_rss_bytes"].items())
        lines.append(f"  peak RSS (VmHWM, MB): {rss}")
        lines.append(f"  result hashes identical: {'yes' if s['hashes_identical'] else 'NO'} ({s['runs_hashed']} runs)")
    lines.append("")
    lines.append(
        "every result hash identical (per dataset: in process, engine counts, warm-ups): "
        + ("yes" if doc["all_hashes_identical"] else "NO")
    )
    if "scale_targets" in doc:
        t = doc["scale_targets"]
        lines.append(
            f"peak RSS within the seed's memory (gateway < {t['gateway_peak_rss_mb']} MB, "
            f"engine < {t['engine_peak_rss_mb']} MB): {'yes' if t['met'] else 'NO'}"
        )
    return "\n".join(lines)
