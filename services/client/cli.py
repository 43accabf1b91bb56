"""`livecalc submit` and `livecalc jobs list|get|watch|cancel|plot`: jobs from the command line.

Built on the Python client (`services.client.Client`). Client conventions (DESIGN.md):
`--address` (the gateway, default localhost:50051), `--json` (one JSON document on stdout and
nothing else; progress then goes to stderr as plain lines), `--out PATH` for files, one-line
errors and exit codes from `services.cli.main`. On a terminal a watched job shows a progress bar;
otherwise plain progress lines. Ctrl-C while watching detaches: the job keeps running, and
the command says how to re-attach or cancel it (exit code 130).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from livecalc.engine.v1 import engine_pb2
from livecalc.gateway.v1 import job_pb2
from services.client.aio import DEFAULT_GATEWAY, ResultAssembler, job_spec, package_archive
from services.client.report import (
    ProgressView,
    job_document,
    job_line,
    json_text,
    plot_title,
    primary_output,
    result_document,
    result_lines,
    scenarios_line,
    write_plot,
)
from services.client.sync import Client
from services.common.client import EXIT_INTERRUPTED, as_dict, emit_json, write_out
from services.common.errors import InvalidArgument, LivecalcError

STATES = {name.removeprefix("JOB_STATE_").lower(): value for name, value in job_pb2.JobState.items() if value}


def _client(args: argparse.Namespace) -> Client:
    return Client(args.address, timeout=args.timeout)


def _labels(items: list[str] | None) -> dict[str, str]:
    labels: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidArgument(f"--label must be KEY=VALUE, got {item!r}")
        labels[key] = value
    return labels


def _progress_stream(args: argparse.Namespace) -> tuple[bool, Any]:
    """(terminal?, stream) for progress: a bar on a terminal stdout, else plain lines
    (on stderr under --json, so stdout holds the one JSON document)."""
    if args.json:
        return False, sys.stderr
    return sys.stdout.isatty(), sys.stdout


def follow(
    lc: Client, events: Iterator[job_pb2.JobEvent], args: argparse.Namespace, label: str = "job"
) -> tuple[str, job_pb2.JobResult | None]:
    """Show a job's events until it ends; returns (job id, result). Ctrl-C detaches."""
    terminal, stream = _progress_stream(args)
    assembler = ResultAssembler()
    job_id = getattr(args, "job_id", "") or ""
    try:
        with ProgressView(label, terminal=terminal, stream=stream) as view:
            for event in events:
                job_id = event.job_id
                view.event(event)
                result = assembler.add(event)
                if result is not None:
                    return job_id, result
    except KeyboardInterrupt:
        print(
            f"\ndetached from job {job_id}; it keeps running. Re-attach: livecalc jobs watch {job_id}"
            f" --address {args.address}   Cancel: livecalc jobs cancel {job_id} --address {args.address}",
            file=sys.stderr,
            flush=True,
        )
        raise Detached from None
    return job_id, None


class Detached(Exception):
    """The user pressed Ctrl-C while watching; the job runs on."""


def _finish(lc: Client, job_id: str, result: job_pb2.JobResult, args: argparse.Namespace) -> None:
    job = lc.get_job(job_id)
    doc = result_document(result, job_id=job_id, dataset_id=job.spec.dataset_id)
    if getattr(args, "out", None):
        Path(args.out).write_text(json_text(doc))
    if args.json:
        emit_json(doc)
    else:
        write_out("\n".join(result_lines(result, title=f"job {job_id}")) + "\n")
        if getattr(args, "out", None):
            write_out(f"wrote {args.out}\n")


def _scenarios(
    lc: Client, package_hash: str, count: int | None, seed: int | None, scenario_dataset: str | None = None
) -> engine_pb2.ScenarioSpec | None:
    """The job's scenario set: None (the package's own) unless --scenarios, --seed or
    --scenario-dataset is given; then only those replace the package's configured ones (the
    gateway fills in the rest). A scenario dataset takes no seed; without --scenarios the job
    uses every scenario of the set."""
    if scenario_dataset is not None:
        if seed is not None:
            raise InvalidArgument("--seed has no effect with --scenario-dataset (the set's scenarios are data)")
        return job_spec(package_hash, "", scenarios=count, scenario_dataset=scenario_dataset).scenarios
    if count is None and seed is None:
        return None
    if count is None:
        count = int(lc.get_package(package_hash).default_scenario_count)
    return job_spec(package_hash, "", scenarios=count, seed=seed).scenarios


def cmd_submit(args: argparse.Namespace) -> int:
    with _client(args) as lc:
        target = Path(args.package)
        if target.exists():
            reply = lc.upload_package_bytes(package_archive(target))
            package_hash = reply.package.package_hash
            if not args.json:
                state = "already stored" if reply.already_existed else "uploaded"
                print(f"package {state}: {package_hash}", file=sys.stderr)
        else:
            package_hash = args.package
        spec = job_spec(
            package_hash,
            args.dataset,
            preview_rows=args.preview,
            preview_seed=args.sample_seed,
            chunk_blocks=args.chunk_blocks,
            labels=_labels(args.label),
        )
        scenarios = _scenarios(lc, package_hash, args.scenarios, args.seed, args.scenario_dataset)
        if scenarios is not None:
            spec.scenarios.CopyFrom(scenarios)
        events = lc.submit(spec)
        if args.detach:
            first = next(events)
            events.close()  # type: ignore[attr-defined]
            if args.json:
                emit_json(job_document(first.accepted.job))
            else:
                write_out(
                    f"{first.job_id}\nsubmitted; watch: livecalc jobs watch {first.job_id}   "
                    f"cancel: livecalc jobs cancel {first.job_id}\n"
                )
            return 0
        try:
            job_id, result = follow(lc, events, args, label="preview" if args.preview else "valuation")
        except Detached:
            return EXIT_INTERRUPTED
        if result is None:
            raise LivecalcError("the job's event stream ended without a result")
        _finish(lc, job_id, result, args)
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    with _client(args) as lc:
        try:
            job_id, result = follow(lc, lc.watch(args.job_id, after_sequence=args.after), args)
        except Detached:
            return EXIT_INTERRUPTED
        if result is None:
            raise LivecalcError(f"job {args.job_id}: the event stream ended without a result")
        _finish(lc, job_id, result, args)
    return 0


def _full_result(lc: Client, job: job_pb2.Job) -> job_pb2.JobResult:
    """The job's result with every output's values (from the event log when they were sent in parts)."""
    result = job.result
    if result.outputs_in_parts or len(primary_output(result).values) != result.statistics.scenario_count:
        return lc.wait(job.job_id)
    return result


def cmd_get(args: argparse.Namespace) -> int:
    with _client(args) as lc:
        job = lc.get_job(args.job_id)
        has_result = job.state == job_pb2.JOB_STATE_SUCCEEDED
        if args.out:
            if not has_result:
                raise InvalidArgument(f"job {args.job_id} has no result to write (it is {_state(job)})")
            result = _full_result(lc, job)
            Path(args.out).write_text(
                json_text(result_document(result, job_id=job.job_id, dataset_id=job.spec.dataset_id))
            )
        if args.json:
            emit_json(job_document(job))
            return 0
        p = job.progress
        lines = [
            f"job       {job.job_id}",
            f"state     {_state(job)}",
            f"package   {job.spec.package_hash}",
            f"dataset   {job.spec.dataset_id}",
            f"scenarios {scenarios_line(job)}",
            f"progress  {p.policies_done:,}/{p.policies_total:,} policies, {p.elapsed_seconds:.1f} s",
        ]
        if job.spec.labels:
            lines.append("labels    " + ", ".join(f"{k}={v}" for k, v in sorted(job.spec.labels.items())))
        if job.error.code:
            lines.append(f"error     {job.error.code}: {job.error.message}")
        if has_result:
            lines += ["", *result_lines(job.result, title=f"job {job.job_id}")]
        if args.out:
            lines.append(f"wrote {args.out}")
        write_out("\n".join(lines) + "\n")
    return 0


def _state(job: job_pb2.Job) -> str:
    return job_pb2.JobState.Name(job.state).removeprefix("JOB_STATE_").lower()


def cmd_list(args: argparse.Namespace) -> int:
    with _client(args) as lc:
        jobs = lc.list_jobs(state=STATES[args.state] if args.state else 0, limit=args.limit)  # type: ignore[arg-type]
    if args.json:
        emit_json({"jobs": [as_dict(j) for j in jobs]})
    else:
        write_out("".join(job_line(j) + "\n" for j in jobs))
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    with _client(args) as lc:
        job = lc.cancel_job(args.job_id, args.reason)
    if args.json:
        emit_json(job_document(job))
    else:
        write_out(f"{job.job_id}: {_state(job)}\n")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    with _client(args) as lc:
        job = lc.get_job(args.job_id)
        if job.state != job_pb2.JOB_STATE_SUCCEEDED:
            raise InvalidArgument(f"job {args.job_id} has no result to plot (it is {_state(job)})")
        result = _full_result(lc, job)
        name = job.spec.package_hash[:12]
        with contextlib.suppress(LivecalcError):  # the plot's title only
            name = lc.get_package(job.spec.package_hash).name
    write_plot(result, Path(args.out), title=plot_title(result, name, job.spec.dataset_id))
    if args.json:
        emit_json({"job_id": job.job_id, "out": args.out})
    else:
        write_out(f"wrote {args.out}\n")
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", default=DEFAULT_GATEWAY, help=f"gateway HOST:PORT (default {DEFAULT_GATEWAY})")
    p.add_argument("--json", action="store_true", help="print one JSON document and nothing else")
    p.add_argument("--timeout", type=float, default=30.0, help="deadline of each request in seconds (default 30)")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `submit` and the `jobs` command group to the top-level parser."""
    p = sub.add_parser("submit", help="submit a valuation job (a package FILE or directory is uploaded first)")
    _common(p)
    p.add_argument("--package", required=True, metavar="HASH|FILE", help="package hash, or a package file/directory")
    p.add_argument("--dataset", required=True, metavar="ID", help="dataset id")
    p.add_argument(
        "--scenarios",
        type=int,
        help="scenario count (default: the package's configured scenarios, or every scenario of --scenario-dataset)",
    )
    p.add_argument("--seed", type=int, help="scenario seed (with the package's count unless --scenarios)")
    p.add_argument(
        "--scenario-dataset",
        metavar="ID[@VERSION]",
        help="read the scenarios from this dataset (a scenario set) instead of the package's generator: columns "
        "scenario (0..S-1), month (0..M-1) and one float column per scenario input the model declares, named as "
        "the input (term_life: rates); rows ordered by scenario then month, S*M rows. The job uses the set's "
        "first --scenarios (default: all S); no --seed. @VERSION: refuse unless the set is at that version",
    )
    p.add_argument("--preview", type=int, metavar="N", help="preview: run a seeded sample of N policies")
    p.add_argument("--sample-seed", type=int, default=1, help="seed of the preview's sample (default 1)")
    p.add_argument("--chunk-blocks", type=int, default=0, metavar="K", help="blocks per chunk (0: the planner's)")
    p.add_argument("--label", action="append", metavar="KEY=VALUE", help="a label (repeatable)")
    p.add_argument("--out", help="write the results JSON here when the job ends")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--watch", action="store_true", help="follow the job until it ends (the default)")
    mode.add_argument("--detach", action="store_true", help="print the job id once accepted and exit")
    p.set_defaults(func=cmd_submit)

    jobs = sub.add_parser("jobs", help="jobs on the gateway: list, get, watch, cancel, plot")
    cmds = jobs.add_subparsers(dest="jobs_command", required=True, metavar="COMMAND")
    p = cmds.add_parser("list", help="jobs, newest first")
    _common(p)
    p.add_argument("--state", choices=sorted(STATES), help="only jobs in this state")
    p.add_argument("--limit", type=int, help="at most this many jobs")
    p.set_defaults(func=cmd_list)
    p = cmds.add_parser("get", help="a job's record and result (--out writes the results JSON)")
    _common(p)
    p.add_argument("job_id")
    p.add_argument("--out", help="write the results JSON (statistics and every output's values by scenario) here")
    p.set_defaults(func=cmd_get)
    p = cmds.add_parser("watch", help="follow a job's events until it ends (Ctrl-C detaches)")
    _common(p)
    p.add_argument("job_id")
    p.add_argument("--after", type=int, default=0, help="replay events after this sequence number (default 0)")
    p.add_argument("--out", help="write the results JSON here when the job ends")
    p.set_defaults(func=cmd_watch)
    p = cmds.add_parser("cancel", help="cancel a job (engines stop within a second)")
    _common(p)
    p.add_argument("job_id")
    p.add_argument("--reason", default="", help="recorded with the cancellation")
    p.set_defaults(func=cmd_cancel)
    p = cmds.add_parser("plot", help="write a histogram of the job's primary output by scenario (PNG)")
    _common(p)
    p.add_argument("job_id")
    p.add_argument("--out", required=True, help="PNG path to write")
    p.set_defaults(func=cmd_plot)
