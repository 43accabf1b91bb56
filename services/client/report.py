"""What a finished or running job looks like to a person: the results table, the results
JSON document, the distribution plot, and the live progress view.

Results name the outputs the package's model declares (docs/model-interface.md "Outputs"):
the table and the plot show the primary output's distribution and every output's mean, the
JSON document every output's statistics and values. Nothing here knows a product.

The progress view draws a `rich` progress bar (policies done / total, percent, rate, ETA and
the running mean ± standard error) when its console is a terminal, and plain lines (at most
one a second) otherwise, so logs and pipes stay readable.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import IO, Any, Final

import numpy as np
from google.protobuf.timestamp_pb2 import Timestamp

from livecalc.gateway.v1 import job_pb2
from services.common.client import as_dict
from services.valuation.statistics import relative_difference

#: Plot size in inches and its resolution: a 1200 × 700 pixel PNG.
PLOT_INCHES: Final = (12.0, 7.0)
PLOT_DPI: Final = 100
PLOT_PERCENTILES: Final = (0.5, 5.0, 50.0, 95.0, 99.5)
PLOT_CTE: Final = 99.0


def money(value: float) -> str:
    """A present value in currency units with thousands separators."""
    return f"{value:,.0f}"


def primary_output(result: job_pb2.JobResult) -> job_pb2.OutputResult:
    """The result's primary output (an empty one, named "primary", for a result without outputs)."""
    return next((o for o in result.outputs if o.primary), job_pb2.OutputResult(name="primary", primary=True))


def output_means(result: job_pb2.JobResult) -> list[tuple[str, float]]:
    """(name, mean over scenarios) of every output, in declared order."""
    if result.statistics.output_means:
        return [(m.name, m.mean) for m in result.statistics.output_means]
    return [(o.name, o.statistics.mean) for o in result.outputs]


def statistics_document(s: job_pb2.Statistics) -> dict[str, Any]:
    """Statistics as JSON: levels as numbers, in the order of the contract; `output_means`
    (name → mean, declared order) where the statistics carry them."""
    doc: dict[str, Any] = {
        "scenario_count": int(s.scenario_count),
        "mean": s.mean,
        "std": s.std,
        "standard_error": s.standard_error,
        "min": s.min,
        "max": s.max,
        "percentiles": [{"level": p.level, "value": p.value} for p in s.percentiles],
        "ctes": [{"level": c.level, "value": c.value} for c in s.ctes],
    }
    if s.output_means:
        doc["output_means"] = {m.name: m.mean for m in s.output_means}
    return doc


def result_document(
    result: job_pb2.JobResult,
    *,
    job_id: str = "",
    dataset_id: str = "",
    preview: job_pb2.JobResult | None = None,
    spec: job_pb2.JobSpec | None = None,
) -> dict[str, Any]:
    """The results JSON written by `--out` and by `livecalc run`: identity, the primary output's
    name and statistics (with every output's mean), the throughput, the preview comparison when
    there was one, and every declared output (name, primary, statistics, values by scenario);
    then the result's provenance and the job's spec as recorded (``spec``: its scenarios
    resolved), which `livecalc submit --replay` submits again. README.md "Results" shows the
    shape."""
    doc: dict[str, Any] = {
        "job_id": job_id,
        "package_hash": result.package_hash,
        "dataset_id": dataset_id,
        "dataset_version": result.dataset_version,
        "policy_count": int(result.policy_count),
        **_scenario_dataset(result),
        "preview": result.preview,
        "result_hash": result.result_hash,
        "primary_output": primary_output(result).name,
        "statistics": statistics_document(result.statistics),
        "steps": int(result.steps),
        "elapsed_seconds": result.elapsed_seconds,
        "steps_per_second": result.steps / result.elapsed_seconds if result.elapsed_seconds > 0 else None,
    }
    if preview is not None:
        doc["preview_comparison"] = {
            "sample_policies": int(preview.policy_count),
            "preview_mean": preview.statistics.mean,
            "relative_difference": preview_difference(preview, result),
            "preview_elapsed_seconds": preview.elapsed_seconds,
        }
        if preview.HasField("preview_uncertainty"):
            u = preview.preview_uncertainty
            doc["preview_comparison"]["preview_uncertainty"] = uncertainty_document(u)
            doc["preview_comparison"]["full_run_within_sampling_interval"] = (
                abs(preview.statistics.mean - result.statistics.mean) <= u.sampling_half_width
            )
    doc["outputs"] = [
        {
            "name": o.name,
            "primary": o.primary,
            "statistics": statistics_document(o.statistics),
            "values": list(o.values),
        }
        for o in result.outputs
    ]
    if result.variants:
        doc["variants"] = [variant_document(v) for v in result.variants]
    if result.HasField("provenance"):
        doc["provenance"] = as_dict(result.provenance)
    if spec is not None:
        doc["spec"] = as_dict(spec)
    return doc


def variant_document(v: job_pb2.VariantResult) -> dict[str, Any]:
    """One sensitivity of a result (JobResult.variants) as JSON: its package and result hashes,
    the change of the primary output's mean against the base (relative: a number, or "inf" /
    "-inf" at a zero base), its statistics and every output's."""
    relative = v.relative_change
    return {
        "name": v.name,
        "package_hash": v.package_hash,
        "result_hash": v.result_hash,
        "mean_change": v.mean_change,
        "relative_change": relative if math.isfinite(relative) else str(relative),
        "statistics": statistics_document(v.statistics),
        "outputs": [
            {"name": o.name, "primary": o.primary, "statistics": statistics_document(o.statistics)} for o in v.outputs
        ],
    }


def _scenario_dataset(result: job_pb2.JobResult) -> dict[str, Any]:
    """The scenario set a result used, as a document field (none for the generator's scenarios)."""
    if not result.scenario_dataset_id:
        return {}
    return {"scenario_dataset": {"id": result.scenario_dataset_id, "version": result.scenario_dataset_version}}


def scenarios_line(job: job_pb2.Job) -> str:
    """Where a job's scenarios come from: the generator's parameters or a scenario set."""
    s = job.spec.scenarios
    if s.dataset_id:
        version = f" (version {s.dataset_version})" if s.dataset_version else ""
        count = f"first {s.count:,} of " if s.count else "every scenario of "
        return f"{count}scenario set {s.dataset_id}{version}"
    if not job.spec.HasField("scenarios"):
        return "the package's"
    return f"{s.count:,} generated (seed {s.seed})" if s.HasField("seed") else f"{s.count:,} generated"


def provenance_lines(p: job_pb2.Provenance) -> list[str]:
    """Where a result comes from, as the lines `jobs get` prints under the results table."""
    s = p.scenarios
    if s.dataset_id:
        scenarios = f"scenario set {s.dataset_id} version {s.dataset_version}, {s.count:,} scenarios"
    else:
        scenarios = (
            f"{s.count:,} generated: seed {s.seed}, a {s.mean_reversion:g}, σ {s.volatility:g}, "
            f"include_base {str(s.include_base).lower()}"
        )
    preview = f", sample of {p.preview.sample_rows:,} (seed {p.preview.seed})" if p.HasField("preview") else ""
    engines = ", ".join(p.engine_versions) or "-"
    return [
        "provenance",
        f"  package    {p.package_name} {p.package_version} ({p.package_hash})",
        f"  dataset    {p.dataset_id} version {p.dataset_version}{preview}",
        f"  scenarios  {scenarios}",
        f"  engines    {engines} (model ABI {p.model_abi_version}); gateway {p.gateway_version}",
        f"  submitted  {_utc(p.submit_time)}, finished {_utc(p.finish_time)}",
    ]


def _utc(stamp: Timestamp) -> str:
    return stamp.ToDatetime().strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def json_ready(value: Any) -> Any:
    """``value`` with every non-finite float (which JSON lacks) as None, in dicts and lists too."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_ready(v) for v in value]
    return value


def json_text(doc: Any) -> str:
    """A document as JSON text for a file (a non-finite number, which JSON lacks, as null)."""
    return json.dumps(json_ready(doc), indent=2, allow_nan=False) + "\n"


def preview_difference(preview: job_pb2.JobResult, full: job_pb2.JobResult) -> float:
    """(preview mean − full mean) / |full mean| (the preview comparison, docs/model.md "Aggregation")."""
    return relative_difference(preview.statistics.mean, full.statistics.mean)


def uncertainty_document(u: job_pb2.PreviewUncertainty) -> dict[str, Any]:
    """A preview's uncertainty as JSON (job.proto PreviewUncertainty says what each covers)."""
    return {
        "confidence_level": u.confidence_level,
        "half_width": u.half_width,
        "sampling_half_width": u.sampling_half_width,
        "standard_error": u.standard_error,
        "sampling_standard_error": u.sampling_standard_error,
        "scenario_standard_error": u.scenario_standard_error,
        "sample_groups": int(u.sample_groups),
        "degrees_of_freedom": u.degrees_of_freedom,
        "sampling_degrees_of_freedom": u.sampling_degrees_of_freedom,
    }


def preview_interval(result: job_pb2.JobResult) -> str:
    """A preview's mean with its interval and what the interval covers, e.g. "mean 188,171,216
    ± 5,093,215 (95 %: scenarios and policy sampling; a full run on these scenarios within
    ± 4,811,022)". A result without an uncertainty (a sample of one policy) shows the
    scenarios' standard error, saying so."""
    s = result.statistics
    if not result.HasField("preview_uncertainty"):
        return f"mean {money(s.mean)} ± {money(s.standard_error)} (one standard error, scenarios only)"
    u = result.preview_uncertainty
    return (
        f"mean {money(s.mean)} ± {money(u.half_width)} ({u.confidence_level:g} %: scenarios and policy "
        f"sampling; a full run on these scenarios within ± {money(u.sampling_half_width)})"
    )


def preview_comparison(preview: job_pb2.JobResult, full: job_pb2.JobResult) -> str:
    """One sentence on how far the preview's mean was from the full run's, and whether the
    preview's policy-sampling interval held it."""
    diff = preview_difference(preview, full)
    delta = preview.statistics.mean - full.statistics.mean
    within = f"within {abs(diff) * 100:.2f} %" if math.isfinite(diff) else "not within any ratio"
    side = f"{money(abs(delta))} {'below' if delta < 0 else 'above'}" if delta else "equal to"
    line = f"preview was {within} of the full run ({side} its mean {money(full.statistics.mean)}"
    if not preview.HasField("preview_uncertainty"):
        return line + ")"
    u = preview.preview_uncertainty
    where = "inside" if abs(delta) <= u.sampling_half_width else "outside"
    return (
        f"{line}; {where} the preview's {u.confidence_level:g} % policy-sampling interval, "
        f"± {money(u.sampling_half_width)})"
    )


def result_lines(result: job_pb2.JobResult, *, title: str = "Results") -> list[str]:
    """The results table as text lines (the same on a terminal and in a log)."""
    s = result.statistics
    rate = result.steps / result.elapsed_seconds if result.elapsed_seconds > 0 else 0.0
    kind = "preview (sample, scaled)" if result.preview else "full run"
    primary = primary_output(result).name
    rows: list[tuple[str, str]] = [
        ("policies", f"{result.policy_count:,}"),
        ("scenarios", f"{s.scenario_count:,}"),
        *(
            [("scenario set", f"{result.scenario_dataset_id} (version {result.scenario_dataset_version})")]
            if result.scenario_dataset_id
            else []
        ),
        (f"mean {primary}", money(s.mean)),
        ("std", money(s.std)),
        ("standard error", money(s.standard_error)),
        *_uncertainty_rows(result),
        ("min / max", f"{money(s.min)} / {money(s.max)}"),
    ]
    rows += [(f"percentile {p.level:g} %", money(p.value)) for p in s.percentiles]
    rows += [(f"CTE {c.level:g} %", money(c.value)) for c in s.ctes]
    rows += [(f"mean {name}", money(mean)) for name, mean in output_means(result) if name != primary]
    rows += [
        ("result hash", result.result_hash),
        ("steps", f"{result.steps:,}"),
        ("steps/s", f"{rate:,.3g}"),
        ("elapsed", f"{result.elapsed_seconds:.2f} s"),
    ]
    width = max(len(k) for k, _ in rows)
    lines = [f"{title} — {kind}", "-" * (width + 2 + max(len(v) for _, v in rows))]
    lines += [f"{k:<{width}}  {v:>20}" if k != "result hash" else f"{k:<{width}}  {v}" for k, v in rows]
    return lines


def _uncertainty_rows(result: job_pb2.JobResult) -> list[tuple[str, str]]:
    """A preview's interval rows of the results table (none for a full run)."""
    if not result.HasField("preview_uncertainty"):
        return []
    u = result.preview_uncertainty
    level = f"{u.confidence_level:g} %"
    return [
        ("sampling standard error", money(u.sampling_standard_error)),
        (f"± {level}, scenarios and sampling", money(u.half_width)),
        (f"± {level}, to a full run", money(u.sampling_half_width)),
    ]


def write_plot(result: job_pb2.JobResult, path: Path, *, title: str) -> None:
    """A histogram of the primary output by scenario with the mean, percentiles and CTE marked (PNG)."""
    import matplotlib  # noqa: PLC0415 - matplotlib is heavy; only plots need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    output = primary_output(result)
    values = np.asarray(output.values, dtype=np.float64)
    s = result.statistics
    fig, ax = plt.subplots(figsize=PLOT_INCHES, dpi=PLOT_DPI)
    try:
        ax.hist(values, bins=min(60, max(10, values.size // 15)), color="#8fb3d9", edgecolor="#4a6f99")
        pct = {p.level: p.value for p in s.percentiles}
        cte = {c.level: c.value for c in s.ctes}
        ax.axvline(s.mean, color="black", linewidth=2, label=f"mean {money(s.mean)}")
        styles = {0.5: ":", 5.0: "--", 50.0: "-", 95.0: "--", 99.5: ":"}
        for level in PLOT_PERCENTILES:
            if level in pct:
                ax.axvline(
                    pct[level],
                    color="#2f7d32",
                    linestyle=styles[level],
                    linewidth=1.3,
                    label=f"P{level:g} {money(pct[level])}",
                )
        if PLOT_CTE in cte:
            ax.axvline(cte[PLOT_CTE], color="#c62828", linewidth=2, label=f"CTE {PLOT_CTE:g} % {money(cte[PLOT_CTE])}")
        ax.set_xlabel(f"portfolio value of {output.name} (currency units)")
        ax.set_ylabel("number of scenarios")
        ax.set_title(title)
        ax.ticklabel_format(axis="x", style="plain")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:,.0f}"))
        ax.legend(loc="upper left", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        fig.savefig(path, dpi=PLOT_DPI)
    finally:
        plt.close(fig)


def plot_title(result: job_pb2.JobResult, package_name: str, dataset_id: str) -> str:
    s = result.statistics
    return (
        f"{primary_output(result).name} by scenario — package {package_name} ({result.package_hash[:12]}), "
        f"dataset {dataset_id} ({result.policy_count:,} policies), {s.scenario_count:,} scenarios"
    )


class ProgressView:
    """Shows a job's progress events: a rich bar on a terminal, else plain lines on ``stream``."""

    def __init__(self, label: str, *, terminal: bool, stream: IO[str]) -> None:
        self.label = label
        self.terminal = terminal
        self.stream = stream
        self.total = 0
        self.done = 0
        self.elapsed = 0.0
        self.stats = ""
        self._last_line = 0.0
        self._progress: Any = None
        self._task: Any = None

    def __enter__(self) -> ProgressView:
        if self.terminal:
            from rich.console import Console  # noqa: PLC0415 - only terminals need rich
            from rich.progress import (  # noqa: PLC0415
                BarColumn,
                Progress,
                TaskProgressColumn,
                TextColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TaskProgressColumn(),
                TextColumn("{task.fields[count]}"),
                TextColumn("{task.fields[rate]}"),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[stats]}"),
                console=Console(file=self.stream),
                refresh_per_second=8,
            )
            self._progress.start()
            self._task = self._progress.add_task(self.label, total=None, count="", rate="", stats="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def event(self, event: job_pb2.JobEvent) -> None:
        """Update the view with one event (others than progress/statistics/accepted are ignored)."""
        kind = event.WhichOneof("event")
        if kind == "accepted":
            self.total = int(event.accepted.job.progress.policies_total) or self.total
            self._emit(force=True, note=f"job {event.job_id} accepted: {event.accepted.chunks_total} chunks")
        elif kind == "progress":
            p = event.progress
            self.total, self.done, self.elapsed = int(p.policies_total), int(p.policies_done), p.elapsed_seconds
            if p.waiting_seconds > 0:
                # no engine takes the job's work (restarting, unreachable, busy): say so, not a frozen bar
                self._emit(note=f"waiting {p.waiting_seconds:.0f} s for an engine ({p.waiting_reason})")
                return
            self._emit(force=self.done >= self.total > 0)
        elif kind == "statistics":
            s = event.statistics.statistics
            self.stats = f"mean {money(s.mean)} ± {money(s.standard_error)}"
            self._emit()

    def _rate(self) -> float:
        return self.done / self.elapsed if self.elapsed > 0 else 0.0

    def _emit(self, *, force: bool = False, note: str = "") -> None:
        rate = self._rate()
        if self._progress is not None:
            if note:
                self._progress.console.print(f"{self.label}: {note}")
            self._progress.update(
                self._task,
                total=self.total or None,
                completed=self.done,
                count=f"{self.done:,}/{self.total:,} policies" if self.total else "",
                rate=f"{rate:,.0f} pol/s" if rate else "",
                stats=self.stats,
            )
            return
        now = time.monotonic()
        if not force and not note and now - self._last_line < 1.0:
            return
        self._last_line = now
        if note:
            self.stream.write(f"{self.label}: {note}\n")
        else:
            pct = 100.0 * self.done / self.total if self.total else 0.0
            eta = (self.total - self.done) / rate if rate > 0 else math.nan
            eta_text = f"ETA {eta:.0f} s" if math.isfinite(eta) else "ETA -"
            stats = f", {self.stats}" if self.stats else ""
            self.stream.write(
                f"{self.label}: {pct:5.1f} % ({self.done:,}/{self.total:,} policies), "
                f"{rate:,.0f} pol/s, {eta_text}{stats}\n"
            )
        self.stream.flush()


#: The header of `jobs list`'s table; `job_row` gives a job's row.
JOB_HEADER: Final = ("JOB", "STATE", "CREATED", "KIND", "DATASET", "POLICIES", "RESULT")


def job_row(job: job_pb2.Job) -> list[str]:
    """A job's row in `jobs list` (under JOB_HEADER): RESULT is the result hash's start, the
    error of a failed job, the reason of a cancelled one."""
    state = job_pb2.JobState.Name(job.state).removeprefix("JOB_STATE_").lower()
    created = job.create_time.ToDatetime().strftime("%Y-%m-%d %H:%M:%S")
    p = job.progress
    kind = "preview" if job.spec.HasField("preview") else "full"
    tail = f"hash {job.result.result_hash[:16]}" if job.result.result_hash else "-"
    if job.error.code:
        tail = f"{job.error.code}: {job.error.message}"
    elif job.cancel_reason:
        tail = f"reason: {job.cancel_reason}"
    policies = f"{p.policies_done:,}/{p.policies_total:,}"
    return [job.job_id, state, created, kind, job.spec.dataset_id or "-", policies, tail]


def job_document(job: job_pb2.Job, result: job_pb2.JobResult | None = None) -> dict[str, Any]:
    """A job as JSON, in one shape wherever a job is printed (`jobs get|list|wait|cancel`,
    `submit`, `jobs watch`): every field of the Job record in proto order under its proto name,
    null when unset, 64-bit integers as integers; ``result`` is null or the results document
    (`result_document`, the shape of results.json and `--out`) of ``result`` (default: the
    record's own, whose per-scenario values `jobs list` leaves out)."""
    doc = as_dict(job)
    out: dict[str, Any] = {field.name: doc.get(field.name) for field in job_pb2.Job.DESCRIPTOR.fields}
    if result is not None or job.HasField("result"):
        full = result if result is not None else job.result
        out["result"] = result_document(full, job_id=job.job_id, dataset_id=job.spec.dataset_id)
    return out
