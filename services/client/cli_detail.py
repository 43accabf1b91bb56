"""`livecalc jobs detail` and `livecalc jobs cashflows`: a finished job's per-policy values and
its cash flows by month, recomputed on demand by the mesh (docs/results.md).

`jobs detail JOB --scenario 17 --out detail.parquet` streams every policy's value of every
declared output under the chosen scenarios into a Parquet (or CSV) file, batch by batch (memory
stays bounded for millions of policies): columns ``row``, the model's key column
(``policy_id``), then ``{output}_s{scenario}``. The file is written beside its final name and
renamed only once the stream has ended and the rows check out: the gateway checks that each
block's rows sum to the block's partial bit for bit and, for a whole job, that the blocks fold
to the job's values; this command folds the rows it wrote again (rows in row order within each
block of 1024 from +0.0, blocks in block order) and compares them with the job's per-scenario
values, bit for bit, and says so.

`jobs cashflows JOB [--scenario N …] [--mean] --out cf.csv|.parquet|.json [--plot cf.png]` writes
the portfolio's cash flows by month of every output the model declares monthly (one column per
output and scenario, ``net_cf_mean`` for the mean over scenarios) and plots them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from livecalc.gateway.v1 import job_pb2, job_service_pb2
from livecalc_client.detail import detail_columns, need
from services.client.ids import resolve_job_id
from services.client.sync import Client
from services.common.client import emit_json, write_out
from services.common.errors import InvalidArgument, LivecalcError
from services.valuation.arrays import F64
from services.valuation.blocks import BLOCK_SIZE, row_sums

DETAIL_SUFFIXES: Final = (".parquet", ".csv")
CASH_FLOW_SUFFIXES: Final = (".csv", ".parquet", ".json")
#: Seconds between two progress lines on stderr.
PROGRESS_SECONDS: Final = 2.0


def parse_blocks(text: str | None) -> slice | None:
    """``A:B`` → blocks A … B−1; ``A:`` from A through the last block; None: every block."""
    if text is None:
        return None
    first, sep, stop = text.partition(":")
    try:
        start = int(first) if first else 0
        end = int(stop) if stop else None
    except ValueError:
        raise InvalidArgument(f"--blocks must be A:B (blocks A to B-1), got {text!r}") from None
    if not sep or start < 0 or (end is not None and end <= start):
        raise InvalidArgument(f"--blocks must be A:B with 0 ≤ A < B (blocks A to B-1), got {text!r}")
    return slice(start, end)


class RowFold:
    """The rows of a detail folded as the job folds them: within each block of 1024 rows in row
    order from +0.0, blocks in block order from +0.0 (f64 [K][S] per output and scenario)."""

    def __init__(self, outputs: int, scenarios: int) -> None:
        self.total = np.zeros((outputs, scenarios))
        self._block = -1
        self._block_sum = np.zeros((outputs, scenarios))

    def add(self, rows: npt.NDArray[np.int64], values: F64) -> None:
        """Consecutive rows (dataset row numbers) and their values f64 [rows][K][S]."""
        blocks = rows // BLOCK_SIZE
        cuts = (np.flatnonzero(np.diff(blocks)) + 1).tolist()
        for start, stop in zip([0, *cuts], [*cuts, len(rows)], strict=True):
            if blocks[start] != self._block:
                self._close()
                self._block = int(blocks[start])
            # on from the block's sum so far (+0.0 at its first row): sequential, in row order
            self._block_sum = row_sums(np.concatenate([self._block_sum[None], values[start:stop]]))

    def _close(self) -> None:
        if self._block >= 0:
            self.total += self._block_sum
            self._block_sum = np.zeros_like(self._block_sum)

    def folded(self) -> F64:
        self._close()
        self._block = -1
        return self.total


def _job_values(lc: Client, job: job_pb2.Job) -> dict[str, F64]:
    """Each output's per-scenario values of a succeeded job (from its event log when they were sent in parts)."""
    result = job.result
    if result.outputs_in_parts or any(len(o.values) != result.statistics.scenario_count for o in result.outputs):
        result = lc.wait(job.job_id)
    return {o.name: np.asarray(o.values, dtype=np.float64) for o in result.outputs}


def _writer(path: Path, schema: Any, suffix: str) -> Any:
    """A pyarrow writer of ``suffix``'s format (.parquet or .csv) at ``path``, batch by batch."""
    pa_csv, pq = need("pyarrow.csv"), need("pyarrow.parquet")
    return pq.ParquetWriter(path, schema) if suffix == ".parquet" else pa_csv.CSVWriter(path, schema)


def cmd_detail(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.suffix not in DETAIL_SUFFIXES:
        raise InvalidArgument(f"--out must end in {' or '.join(DETAIL_SUFFIXES)}, got {out.name}")
    blocks = parse_blocks(args.blocks)
    partial = out.with_name(out.name + ".partial")
    with Client(args.address, timeout=args.timeout) as lc:
        job_id = resolve_job_id(lc, args.job_id)
        job = lc.get_job(job_id)
        started = last = time.monotonic()
        writer: Any = None
        fold: RowFold | None = None
        header: job_service_pb2.DetailHeader | None = None
        columns: list[str] = []
        rows = 0

        def progress(p: job_pb2.JobProgress) -> None:
            nonlocal last
            if not args.json and time.monotonic() - last >= PROGRESS_SECONDS:
                last = time.monotonic()
                print(f"detail: {p.policies_done:,}/{p.policies_total:,} policies", file=sys.stderr, flush=True)

        batches = lc.job_detail_batches(job_id, scenarios=args.scenario or (), blocks=blocks, on_progress=progress)
        try:
            for header, batch in batches:
                if writer is None:
                    writer = _writer(partial, batch.schema, out.suffix)
                    fold = RowFold(len(header.outputs), len(header.scenarios))
                    columns = detail_columns(header)[-fold.total.size :]
                writer.write_batch(batch)
                rows += batch.num_rows
                assert fold is not None
                values = np.stack([batch.column(c).to_numpy() for c in columns], axis=1)
                fold.add(batch.column("row").to_numpy(), values.reshape(batch.num_rows, *fold.total.shape))
        except BaseException:
            if writer is not None:
                writer.close()
            partial.unlink(missing_ok=True)
            raise
        if writer is None or header is None or fold is None:
            raise LivecalcError(f"job {job_id}: the detail stream carried no rows")
        writer.close()
        verdict = _verdict(lc, job, header, fold.folded())
        partial.replace(out)
    seconds = time.monotonic() - started
    document = {
        "job_id": job_id,
        "out": str(out),
        "rows": rows,
        "first_block": header.first_block,
        "block_count": header.block_count,
        "scenarios": list(header.scenarios),
        "outputs": list(header.outputs),
        "columns": detail_columns(header),
        "seconds": round(seconds, 3),
        "check": verdict,
    }
    if args.json:
        emit_json(document)
    else:
        write_out(
            f"wrote {rows:,} rows × {len(detail_columns(header))} columns of job {job_id} to {out} "
            f"in {seconds:.1f} s ({rows / max(seconds, 1e-9):,.0f} rows/s)\ncheck   {verdict}\n"
        )
    return 0


def _verdict(lc: Client, job: job_pb2.Job, header: job_service_pb2.DetailHeader, folded: F64) -> str:
    """The check of the written rows against the job: the fold of every block, bit for bit."""
    whole = header.first_block == 0 and header.row_count == job.result.policy_count
    if not whole:
        return (
            f"blocks {header.first_block}..{header.first_block + header.block_count - 1}: each block's rows sum to "
            "its partial bit for bit (checked by the gateway); a part of the job has no job value to fold to"
        )
    values = _job_values(lc, job)
    for k, name in enumerate(header.outputs):
        job_values = values[name][list(header.scenarios)]
        if not np.array_equal(folded[k].view(np.uint64), job_values.view(np.uint64)):
            raise LivecalcError(
                f"the detail's rows fold to {folded[k].tolist()} for {name}, the job's values are "
                f"{job_values.tolist()}: the detail does not reproduce the job (file not written)"
            )
    scenarios = ", ".join(str(s) for s in header.scenarios)
    return (
        f"the rows fold (per block of {BLOCK_SIZE} in row order, blocks in order) to the job's values of every "
        f"output under scenario(s) {scenarios}, bit for bit (result hash {job.result.result_hash[:16]}…)"
    )


def cmd_cashflows(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.suffix not in CASH_FLOW_SUFFIXES:
        raise InvalidArgument(f"--out must end in {', '.join(CASH_FLOW_SUFFIXES)}, got {out.name}")
    if not args.scenario and not args.mean:
        raise InvalidArgument("name a --scenario (repeatable) or ask for the --mean over scenarios")
    started = last = time.monotonic()

    def progress(p: job_pb2.JobProgress) -> None:
        nonlocal last
        if not args.json and time.monotonic() - last >= PROGRESS_SECONDS:
            last = time.monotonic()
            print(f"cash flows: {p.policies_done:,}/{p.policies_total:,} policies", file=sys.stderr, flush=True)

    with Client(args.address, timeout=args.timeout) as lc:
        job_id = resolve_job_id(lc, args.job_id)
        flows = lc.cash_flows(job_id, scenarios=args.scenario or (), mean=args.mean, on_progress=progress)
    write_cash_flows(flows, out)
    if args.plot:
        write_cash_flow_plot(flows, Path(args.plot))
    document = {
        "job_id": job_id,
        "out": str(out),
        "plot": args.plot,
        "months": flows.months,
        "outputs": list(flows.outputs),
        "profiles": len(flows.profiles),
        "seconds": round(time.monotonic() - started, 3),
    }
    if args.json:
        emit_json(document)
    else:
        lines = [
            f"wrote {out}: {len(flows.profiles)} profiles ({', '.join(flows.outputs)}) of {flows.months} months "
            f"of job {job_id} in {document['seconds']:.1f} s"
        ]
        if args.plot:
            lines.append(f"wrote {args.plot}")
        write_out("\n".join(lines) + "\n")
    return 0


def cash_flow_document(flows: job_service_pb2.CashFlows) -> dict[str, Any]:
    """The cash flows as JSON: months, outputs and one profile per output and scenario (-1: the mean)."""
    return {
        "job_id": flows.job_id,
        "months": flows.months,
        "scenario_count": flows.scenario_count,
        "outputs": list(flows.outputs),
        "profiles": [{"output": p.name, "scenario": p.scenario, "values": list(p.values)} for p in flows.profiles],
    }


def cash_flow_table(flows: job_service_pb2.CashFlows) -> Any:
    """A pyarrow table of the profiles: ``month``, then a column per output and profile
    (``net_cf_s17``; ``net_cf_mean`` for the mean), as `livecalc_client.detail.cash_flow_frame`."""
    pa = need("pyarrow")
    columns: dict[str, Any] = {"month": pa.array(np.arange(flows.months, dtype=np.int64))}
    for p in flows.profiles:
        label = "mean" if p.scenario < 0 else f"s{p.scenario}"
        columns[f"{p.name}_{label}"] = pa.array(np.asarray(p.values, dtype=np.float64))
    return pa.table(columns)


def write_cash_flows(flows: job_service_pb2.CashFlows, out: Path) -> None:
    """``out`` by its suffix: .json (the document), .csv or .parquet (a row per month)."""
    if out.suffix == ".json":
        out.write_text(json.dumps(cash_flow_document(flows), indent=1) + "\n")
    elif out.suffix == ".csv":
        need("pyarrow.csv").write_csv(cash_flow_table(flows), out)
    else:
        need("pyarrow.parquet").write_table(cash_flow_table(flows), out)


def write_cash_flow_plot(flows: job_service_pb2.CashFlows, path: Path) -> None:
    """One panel per monthly output: its profile by month under each scenario, and the mean (PNG)."""
    import matplotlib  # noqa: PLC0415 - matplotlib is heavy; only plots need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    outputs = list(flows.outputs)
    fig, axes = plt.subplots(len(outputs), 1, figsize=(9, 2.2 * len(outputs) + 0.6), sharex=True, squeeze=False)
    try:
        for ax, name in zip(axes[:, 0], outputs, strict=True):
            for p in (p for p in flows.profiles if p.name == name):
                label = "mean" if p.scenario < 0 else f"scenario {p.scenario}"
                ax.plot(np.arange(len(p.values)), p.values, label=label, linewidth=1.8 if p.scenario < 0 else 1.0)
            ax.set_ylabel(name)
            ax.grid(alpha=0.3)
            ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda y, _: f"{y:,.0f}"))
        axes[0, 0].legend(loc="upper right", fontsize=8)
        axes[0, 0].set_title(f"job {flows.job_id}: projected cash flows by month")
        axes[-1, 0].set_xlabel("month")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)


def register(cmds: argparse._SubParsersAction[argparse.ArgumentParser], common: Any) -> None:
    """Add `jobs detail` and `jobs cashflows` to the `jobs` group; ``common`` adds --address, --json, --timeout."""
    p = cmds.add_parser(
        "detail",
        help="recompute a finished job's per-policy values under chosen scenarios and write them to Parquet or CSV",
    )
    common(p)
    p.add_argument("job_id")
    p.add_argument(
        "--scenario", type=int, action="append", metavar="N", help="a scenario (repeatable; default 0, the base)"
    )
    p.add_argument("--blocks", metavar="A:B", help="only blocks A to B-1 of 1024 rows (A: from A to the last)")
    p.add_argument("--out", required=True, help="the file to write: .parquet or .csv")
    p.set_defaults(func=cmd_detail)
    p = cmds.add_parser(
        "cashflows", help="recompute a finished job's portfolio cash flows by month (monthly outputs) and plot them"
    )
    common(p)
    p.add_argument("job_id")
    p.add_argument("--scenario", type=int, action="append", metavar="N", help="a scenario's profile (repeatable)")
    p.add_argument("--mean", action="store_true", help="also the mean over all the job's scenarios")
    p.add_argument("--out", required=True, help="the file to write: .csv, .parquet or .json")
    p.add_argument("--plot", metavar="PNG", help="also plot the profiles here")
    p.set_defaults(func=cmd_cashflows)
