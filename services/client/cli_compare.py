"""`livecalc jobs compare A B [--out f.json|.csv|.parquet]`: two results side by side.

A and B are job ids (or unique prefixes) or results files (`--out f.json`); compare.py says what
is compared and warned about. The exit status is 0 whether or not the results differ: the table,
the hash verdict and the warnings are the answer (`--json` for scripts).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from services.client.compare import compare, comparison_lines
from services.client.exports import check_suffix, write_document
from services.client.results_files import load_results
from services.client.sync import Client
from services.common.client import emit_json, write_out


def cmd_compare(args: argparse.Namespace) -> int:
    out = check_suffix(args.out) if args.out else None
    with Client(args.address, timeout=args.timeout) as lc:
        comparison = compare(load_results(lc, args.a), load_results(lc, args.b))
    if out is not None:
        write_document(out, comparison.document(), comparison.columns(), comparison.metadata())
    if args.json:
        emit_json(comparison.document())
        return 0
    lines = comparison_lines(comparison)
    if out is not None:
        lines.append(f"wrote {out}")
    write_out("\n".join(lines) + "\n")
    return 0


def register_jobs(
    cmds: argparse._SubParsersAction[argparse.ArgumentParser], common: Callable[[argparse.ArgumentParser], None]
) -> None:
    """Add `jobs compare` to the `jobs` group (``common`` adds --address, --json, --timeout)."""
    p = cmds.add_parser(
        "compare",
        help="two results side by side (job ids or results files): statistics, differences, warnings on inputs",
    )
    common(p)
    p.add_argument("a", metavar="A", help="a job id (or unique prefix) or a results file (.json)")
    p.add_argument("b", metavar="B", help="the other, compared against A (differences are B − A)")
    p.add_argument(
        "--out",
        help="write the comparison here: .json (the whole document), .csv or .parquet "
        "(one row per output and statistic)",
    )
    p.set_defaults(func=cmd_compare)
