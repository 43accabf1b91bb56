"""`livecalc submit` and `livecalc jobs list|get|watch|wait|cancel|plot`: jobs from the command line
(`jobs compare` is cli_compare.py's, `jobs detail|cashflows` cli_detail.py's, the variant flags
cli_variants.py's; `submit --replay` is replay.py's, `--out` FILE.json|.csv|.parquet exports.py's).

Built on the Python client (`services.client.Client`). Client conventions:
`--address` (the gateway; else $LIVECALC_ADDRESS, the current context, 127.0.0.1:50051:
services.client.contexts), `--json` (one JSON document on stdout and nothing else; progress
then goes to stderr as plain lines), `--out PATH` for files, one-line errors and exit codes
from `services.cli.main`. A job id or package hash may be shortened to a unique prefix (or
``START…END``; services.client.ids). Every command that prints a job prints the same job
document (`report.job_document`); `submit --detach` prints the job id alone on stdout. On a
terminal a watched job shows a progress bar; otherwise plain progress lines. Ctrl-C while
watching detaches: the job keeps running, and the command says how to re-attach or cancel it
(exit code 130). `jobs wait` exits 0 for a succeeded job, 1 for a failed one and
`EXIT_CANCELLED` (3) for a cancelled one.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from livecalc.engine.v1 import engine_pb2
from livecalc.gateway.v1 import job_pb2
from services.client import cli_variants, replay
from services.client.aio import ResultAssembler, job_spec, package_archive
from services.client.cli_compare import register_jobs as register_compare
from services.client.cli_detail import register as register_detail
from services.client.contexts import ADDRESS_HELP
from services.client.errors import JobCancelled, JobFailed
from services.client.exports import check_suffix, write_results
from services.client.ids import HASH_LIKE, resolve_job_id, resolve_package_hash
from services.client.report import (
    JOB_HEADER,
    ProgressView,
    job_document,
    job_row,
    plot_title,
    provenance_lines,
    result_document,
    result_lines,
    scenarios_line,
    write_plot,
)
from services.client.results_files import full_result
from services.client.sync import Client
from services.common.client import EXIT_ERROR, EXIT_INTERRUPTED, emit_json, table, write_out
from services.common.errors import InvalidArgument, LivecalcError

STATES = {name.removeprefix("JOB_STATE_").lower(): value for name, value in job_pb2.JobState.items() if value}
#: `jobs wait`'s exit status for a cancelled job (0: succeeded, 1: failed or an error).
EXIT_CANCELLED: Final = 3


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
    if getattr(args, "out", None):
        write_results(args.out, result_document(result, job_id=job_id, dataset_id=job.spec.dataset_id, spec=job.spec))
    if args.json:
        emit_json(job_document(job, result))
    else:
        write_out("\n".join([*result_lines(result, title=f"job {job_id}"), *cli_variants.variant_lines(result)]) + "\n")
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
    if args.out:
        check_suffix(args.out)  # before the job runs, not after
    if args.replay:
        replay.check_options(args)
    elif not args.package or not args.dataset:
        raise InvalidArgument("submit needs --package and --dataset (or --replay RESULTS.json)")
    with _client(args) as lc:
        replaying = replay.prepare(lc, args.replay) if args.replay else None
        spec = replaying.spec if replaying is not None else _new_spec(lc, args)
        events = lc.submit(spec)
        if args.detach:
            first = next(events)
            events.close()  # type: ignore[attr-defined]
            if args.json:
                emit_json(job_document(first.accepted.job))
            else:
                # the id alone on stdout (J=$(livecalc submit … --detach)); the hints to stderr
                write_out(f"{first.job_id}\n")
                print(
                    f"submitted; watch: livecalc jobs watch {first.job_id}   "
                    f"wait: livecalc jobs wait {first.job_id}   cancel: livecalc jobs cancel {first.job_id}",
                    file=sys.stderr,
                )
            return 0
        try:
            job_id, result = follow(lc, events, args, label="preview" if args.preview else "valuation")
        except Detached:
            return EXIT_INTERRUPTED
        if result is None:
            raise LivecalcError("the job's event stream ended without a result")
        _finish(lc, job_id, result, args)
    if replaying is not None:
        same, line = replaying.verdict(result)
        print(line, file=sys.stderr if args.json else sys.stdout, flush=True)
        return 0 if same else EXIT_ERROR
    return 0


def _new_spec(lc: Client, args: argparse.Namespace) -> job_pb2.JobSpec:
    """The spec `submit`'s options describe (the package uploaded first when it is a path)."""
    variants = cli_variants.variants_of(args)  # a typo fails here, before any upload
    package_hash = _package_hash(lc, args.package, quiet=args.json)
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
    spec.variants.extend(variants)
    return spec


def _package_hash(lc: Client, package: str, *, quiet: bool) -> str:
    """``--package``: a package file or directory (uploaded first: its hash), else a package
    hash or a unique prefix of one (the caller's stored packages)."""
    target = Path(package)
    if target.exists():
        reply = lc.upload_package_bytes(package_archive(target))
        if not quiet:
            state = "already stored" if reply.already_existed else "uploaded"
            print(f"package {state}: {reply.package.package_hash}", file=sys.stderr)
        return reply.package.package_hash
    if not HASH_LIKE.fullmatch(package.lower()):
        raise InvalidArgument(f"--package {package}: no such file or directory, nor a package hash")
    return resolve_package_hash(lc, package)


def cmd_watch(args: argparse.Namespace) -> int:
    if args.out:
        check_suffix(args.out)
    with _client(args) as lc:
        args.job_id = resolve_job_id(lc, args.job_id)
        try:
            job_id, result = follow(lc, lc.watch(args.job_id, after_sequence=args.after), args)
        except Detached:
            return EXIT_INTERRUPTED
        if result is None:
            raise LivecalcError(f"job {args.job_id}: the event stream ended without a result")
        _finish(lc, job_id, result, args)
    return 0


def cmd_wait(args: argparse.Namespace) -> int:
    """Wait for a job to end (quietly: no progress); the exit status says how it ended."""
    with _client(args) as lc:
        job_id = resolve_job_id(lc, args.job_id)
        result: job_pb2.JobResult | None = None
        with contextlib.suppress(JobFailed, JobCancelled):  # the record says how it ended
            result = lc.wait(job_id)
        job = lc.get_job(job_id)
    if args.json:
        emit_json(job_document(job, result))
    else:
        write_out(_end_line(job) + "\n")
    if job.state == job_pb2.JOB_STATE_SUCCEEDED:
        return 0
    return EXIT_CANCELLED if job.state == job_pb2.JOB_STATE_CANCELLED else EXIT_ERROR


def _end_line(job: job_pb2.Job) -> str:
    """How a job ended, in one line."""
    line = f"{job.job_id}: {_state(job)}"
    if job.state == job_pb2.JOB_STATE_SUCCEEDED:
        return f"{line}, result hash {job.result.result_hash}"
    if job.error.code:
        return f"{line}: {job.error.code}: {job.error.message}"
    if job.cancel_reason:
        return f"{line}: {job.cancel_reason}"
    return line


def cmd_get(args: argparse.Namespace) -> int:
    if args.out:
        check_suffix(args.out)
    with _client(args) as lc:
        job = lc.get_job(resolve_job_id(lc, args.job_id))
        has_result = job.state == job_pb2.JOB_STATE_SUCCEEDED
        result = full_result(lc, job) if has_result and (args.out or args.json) else None
        if args.out:
            if result is None:
                raise InvalidArgument(f"job {job.job_id} has no result to write (it is {_state(job)})")
            write_results(
                args.out, result_document(result, job_id=job.job_id, dataset_id=job.spec.dataset_id, spec=job.spec)
            )
        if args.json:
            emit_json(job_document(job, result))
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
        if job.state == job_pb2.JOB_STATE_CANCELLED:
            lines.append(f"reason    {job.cancel_reason or '(none given)'}")
        if has_result:
            lines += ["", *result_lines(job.result, title=f"job {job.job_id}"), *cli_variants.variant_lines(job.result)]
            if job.result.HasField("provenance"):
                lines += ["", *provenance_lines(job.result.provenance)]
        if args.out:
            lines.append(f"wrote {args.out}")
        write_out("\n".join(lines) + "\n")
    return 0


def _state(job: job_pb2.Job) -> str:
    return job_pb2.JobState.Name(job.state).removeprefix("JOB_STATE_").lower()


def cmd_list(args: argparse.Namespace) -> int:
    state = STATES[args.state] if args.state else job_pb2.JOB_STATE_UNSPECIFIED
    with _client(args) as lc:
        jobs = lc.list_jobs(state=state, limit=args.limit, labels=_labels(args.label))
    if args.json:
        emit_json({"jobs": [job_document(j) for j in jobs]})
    else:
        write_out(table([JOB_HEADER, *(job_row(j) for j in jobs)]))
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    with _client(args) as lc:
        job = lc.cancel_job(resolve_job_id(lc, args.job_id), args.reason)
    if args.json:
        emit_json(job_document(job))
    else:
        write_out(f"{job.job_id}: {_state(job)}\n")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    with _client(args) as lc:
        job = lc.get_job(resolve_job_id(lc, args.job_id))
        if job.state != job_pb2.JOB_STATE_SUCCEEDED:
            raise InvalidArgument(f"job {job.job_id} has no result to plot (it is {_state(job)})")
        result = full_result(lc, job)
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
    p.add_argument("--address", help=ADDRESS_HELP)
    p.add_argument("--json", action="store_true", help="print one JSON document and nothing else")
    p.add_argument("--timeout", type=float, default=30.0, help="deadline of each request in seconds (default 30)")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `submit` and the `jobs` command group to the top-level parser."""
    p = sub.add_parser("submit", help="submit a valuation job (a package FILE or directory is uploaded first)")
    _common(p)
    p.add_argument(
        "--package",
        metavar="HASH|FILE|DIR",
        help="a package file or directory (uploaded first), or a stored package's hash or a unique prefix of it",
    )
    p.add_argument("--dataset", metavar="ID", help="dataset id")
    p.add_argument(
        "--replay",
        metavar="RESULTS.json",
        help="submit the job a results file records (its spec: package, dataset, scenarios, preview, labels, "
        "variants) and check the new result hash equals the recorded one (exit 1 if not); refused when the "
        "package is no longer stored or the dataset is no longer at the recorded version",
    )
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
    cli_variants.add_arguments(p)
    p.add_argument(
        "--out",
        help="write the results here when the job ends: .json (statistics, values, provenance, spec), "
        ".csv or .parquet (one row per scenario)",
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--watch", action="store_true", help="follow the job until it ends (the default)")
    mode.add_argument(
        "--detach", action="store_true", help="print the job id (alone, on stdout) once accepted and exit"
    )
    p.set_defaults(func=cmd_submit)

    jobs = sub.add_parser(
        "jobs",
        help="jobs on the gateway: list, get, watch, wait, cancel, plot, compare, detail, cashflows "
        "(JOB_ID: the id or a unique prefix)",
    )
    cmds = jobs.add_subparsers(dest="jobs_command", required=True, metavar="COMMAND")
    p = cmds.add_parser("list", help="jobs, newest first")
    _common(p)
    p.add_argument("--state", choices=sorted(STATES), help="only jobs in this state")
    p.add_argument("--label", action="append", metavar="KEY=VALUE", help="only jobs with this label (repeatable)")
    p.add_argument("--limit", type=int, help="at most this many jobs")
    p.set_defaults(func=cmd_list)
    p = cmds.add_parser("get", help="a job's record and result (--out writes the results JSON)")
    _common(p)
    p.add_argument("job_id")
    p.add_argument(
        "--out",
        help="write the results here: .json (statistics, every output's values by scenario, provenance, spec), "
        ".csv or .parquet (one row per scenario, provenance in the Parquet schema)",
    )
    p.set_defaults(func=cmd_get)
    p = cmds.add_parser("watch", help="follow a job's events until it ends (Ctrl-C detaches)")
    _common(p)
    p.add_argument("job_id")
    p.add_argument("--after", type=int, default=0, help="replay events after this sequence number (default 0)")
    p.add_argument(
        "--out",
        help="write the results here when the job ends: .json (statistics, values, provenance, spec), "
        ".csv or .parquet (one row per scenario)",
    )
    p.set_defaults(func=cmd_watch)
    p = cmds.add_parser(
        "wait",
        help="wait for a job to end; exit status 0 succeeded, 1 failed, 3 cancelled (--json: the job document)",
    )
    _common(p)
    p.add_argument("job_id")
    p.set_defaults(func=cmd_wait)
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
    register_compare(cmds, _common)
    register_detail(cmds, _common)
